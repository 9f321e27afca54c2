"""The Celery message the API builds by hand is exactly the one Celery's own builder makes."""

from __future__ import annotations

import subprocess
import sys

import orjson
from celery import Celery

from aitasks.jobs.messages import RUN_JOB_TASK, envelope, job_message
from aitasks.settings import Settings
from aitasks.worker.celery_app import create_celery


def celery_job_message(app: Celery, job_id: str, queue: str, soft_time_limit_s: float, time_limit_s: float) -> str:
    """The same message built by Celery's own ``as_task_v2``: the reference ``job_message`` is tested against."""
    task = app.amqp.as_task_v2(job_id, RUN_JOB_TASK, args=(job_id,), kwargs={},
                               time_limit=time_limit_s, soft_time_limit=soft_time_limit_s)
    return envelope(orjson.dumps(list(task.body)), dict(task.headers), job_id, queue)


def without_tag(message: str) -> dict[str, object]:
    decoded = orjson.loads(message)
    assert decoded["properties"].pop("delivery_tag")
    return decoded  # type: ignore[no-any-return]


def test_hand_built_message_matches_celerys_as_task_v2():
    app = create_celery(Settings(redis_url="redis://127.0.0.1:1/0"), longest_limit_s=960)
    for job_id, queue, soft, hard in [("0b9e4c1e-5c1f-4a5e-9a7e-1f2d3c4b5a69", "cpu", 240.0, 300.0),
                                      ("x", "gpu", 900, 960)]:
        ours = without_tag(job_message(job_id, queue, soft, hard))
        celerys = without_tag(celery_job_message(app, job_id, queue, soft, hard))
        assert ours == celerys
        assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}


def test_building_celery_needs_no_job_type():
    """The visibility timeout comes from the limit the caller passes (or the setting), not the registry."""
    app = create_celery(Settings(redis_url="redis://127.0.0.1:1/0"), longest_limit_s=900)
    assert app.conf.broker_transport_options["visibility_timeout"] == 960
    pinned = create_celery(Settings(redis_url="redis://127.0.0.1:1/0", visibility_timeout_s=5000), 900)
    assert pinned.conf.broker_transport_options["visibility_timeout"] == 5000


def test_the_message_module_imports_no_worker_code():
    code = ("import sys, aitasks.jobs.messages; "
            "print(sorted(m for m in sys.modules if m.startswith(('aitasks.worker', 'aitasks.processors'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
