"""The fair dispatcher's tick, run by one worker at a time from its monitor thread (issue 18).

Jobs wait in per-tenant lines and are handed to their Celery queue by the Lua steps in
jobs/dispatch_lib.lua: when a job is accepted (CREATE) and when one ends (the UPDATE script's dispatch
fragment), each in its own atomic step. What those cannot see changes here, every heartbeat: the slots
of each queue (the live workers' concurrency, read from their heartbeats, plus ``dispatch_buffer``), the
deployment's defaults of ``max_running`` and ``weight``, and slots still held by jobs that ended without
the UPDATE script (a record that expired). Then the free slots are filled (a worker that joined).

One worker holds the lock (``aitasks:dispatch:lock``, renewed by its holder every beat, good for three);
another takes over when it dies. The lock only saves work: TICK is atomic and correct when run twice, so
a dispatcher killed mid-step hands over nothing twice and loses nothing (tests/test_fair_dispatch.py).
"""

from __future__ import annotations

import logging

import orjson
import redis

from aitasks.jobs import keys, lua
from aitasks.settings import Settings
from aitasks.worker.sweep import TAKE_LOCK

log = logging.getLogger(__name__)
TICK = lua.load("aitasks.jobs", "dispatch_tick.lua")


def capacities(r: redis.Redis, now: float) -> dict[str, int]:
    """Worker slots per queue, from the live workers' heartbeats (worker/monitor.py ``beat``)."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in r.zrangebyscore(keys.WORKERS, now, "+inf")]
    slots = {queue: 0 for queue in keys.QUEUES}
    for raw in r.mget([keys.worker(n) for n in names]) if names else []:
        if not raw:
            continue
        info = orjson.loads(raw)
        for queue in info.get("queues") or []:
            slots[queue] = slots.get(queue, 0) + int(info.get("concurrency") or 1)
    return slots


class Dispatcher:
    def __init__(self, name: str, every_s: float):
        self.name = name
        self.every_s = every_s

    def tick(self, r: redis.Redis, settings: Settings, now: float) -> int:
        """Refresh capacities and fill free slots if this worker holds the lock; how many jobs were handed over."""
        if not settings.fair_dispatch or not r.eval(TAKE_LOCK, 1, keys.DISPATCHER, self.name,
                                                    int(3 * self.every_s * 1000)):
            return 0
        moved = 0
        for queue, slots in capacities(r, now).items():
            capacity = slots + settings.dispatch_buffer if slots else 0
            handed, freed = r.eval(TICK, 0, queue, capacity, settings.default_max_running,  # type: ignore[misc]
                                   repr(float(settings.default_weight)))
            if freed:
                log.warning("dispatcher: %d slots of %s were held by jobs that ended unseen; given back", freed, queue)
            moved += int(handed)
        return moved
