"""Platform benchmarks for aitasks (``make bench`` = ``python -m bench.run_all``).

Every number is put next to a baseline measured in the same run on the same machine, and the
report gives the ratios: the API's submit endpoint against a bare FastAPI endpoint, and a no-op job
through the API (submit to ``SUCCESS`` seen on SSE) against a raw Celery ``delay().get()``.
Everything runs on private ports of 127.0.0.1 and is stopped at the end. See docs/benchmarks.md.
"""
