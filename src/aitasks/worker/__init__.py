"""Celery side: app configuration, the runner task, the job context, worker hooks."""
