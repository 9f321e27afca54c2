"""Loads the models of the job types named in AITASKS_PRELOAD in each pool process as it starts, so the
first job does not pay for the load. Without it, a model loads on its first job; either way once per
process (each type's loaders are cached per process). A worker preloads only the types of the queues it
serves: the cpu worker never holds the diffusion model."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals

from aitasks.processors.registry import load_all
from aitasks.settings import get_settings

log = logging.getLogger(__name__)
SERVED_QUEUES_ENV = "AITASKS_WORKER_QUEUES_SERVED"  # set by `aitasks worker` for its pool processes


def preload_models() -> dict[str, float]:
    """Run the preload hook of each type AITASKS_PRELOAD names; returns seconds per type."""
    registry = load_all()
    settings = get_settings()
    served = {q for q in os.environ.get(SERVED_QUEUES_ENV, "").split(",") if q}
    took: dict[str, float] = {}
    for name in settings.preload_types(registry.names()):
        jt = registry.get(name)
        if jt is None or jt.preload is None or jt.unavailable_reason(settings):
            continue
        if served and jt.queue not in served:
            continue
        started = time.perf_counter()
        try:
            jt.preload()
        except Exception as exc:  # a broken model must not stop the worker serving the other types
            log.error("preloading %s failed: %s", name, exc)
            continue
        took[name] = round(time.perf_counter() - started, 2)
    if took:
        log.info("models preloaded: %s", ", ".join(f"{name} ({secs:g} s)" for name, secs in took.items()))
    return took


@signals.worker_process_init.connect
def _preload(**_: Any) -> None:
    preload_models()
