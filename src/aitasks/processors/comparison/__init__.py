"""The ``comparison`` job type: one input image through several image job types, as child jobs, into one grid."""
