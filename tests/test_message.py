"""The Celery message the API builds by hand is exactly the one Celery's own builder makes."""

from __future__ import annotations

import orjson

from aitasks.settings import Settings
from aitasks.worker.celery_app import create_celery
from aitasks.worker.message import celery_job_message, job_message


def without_tag(message: str) -> dict[str, object]:
    decoded = orjson.loads(message)
    assert decoded["properties"].pop("delivery_tag")
    return decoded  # type: ignore[no-any-return]


def test_hand_built_message_matches_celerys_as_task_v2():
    app = create_celery(Settings(redis_url="redis://127.0.0.1:1/0"))
    for job_id, queue, soft, hard in [("0b9e4c1e-5c1f-4a5e-9a7e-1f2d3c4b5a69", "cpu", 240.0, 300.0),
                                      ("x", "gpu", 900, 960)]:
        ours = without_tag(job_message(job_id, queue, soft, hard))
        celerys = without_tag(celery_job_message(app, job_id, queue, soft, hard))
        assert ours == celerys
        assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}
