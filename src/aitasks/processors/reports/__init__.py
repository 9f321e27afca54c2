"""The report job types (seed 003): ``visualization``, ``export`` and ``cost_infographic``.

They build on the other job types: a visualization runs an image job type's function in-process, an
export reads the tenant's finished jobs and their files, a cost infographic reads the durable usage
counters. Plot and PDF libraries (matplotlib, reportlab) are imported inside the job functions, so
the API process, which imports every job type, never loads them.
"""
