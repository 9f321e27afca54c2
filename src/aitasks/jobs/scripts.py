"""Lua scripts that make each change to a job atomic: one round trip, no half-written state.

``CREATE`` (jobs/create.lua) writes the record, indexes it for its tenant, claims the idempotency key
and pushes the Celery message in one step, so a job is either fully accepted or not at all. ``UPDATE``
(assembled by jobs/atomic_end.py from end_state.lua and its features' fragments) applies a change only
while the job is not finished (a late progress report cannot undo a cancel), bumps the record's
sequence number, counts a job that just finished for /metrics and usage, moves its parent's chord and
its document record, queues its webhook and publishes the new state on the job's channel: a client
that sees a terminal state also sees it counted. ``FAN_OUT`` (worker/fan_out.lua) creates and queues a
parent's children. Key names come from keys.py (jobs/lua.py substitutes them).
"""

from __future__ import annotations

from aitasks.jobs import atomic_end, lua

CREATE = lua.load("aitasks.jobs", "create.lua")
UPDATE = atomic_end.assemble()
# The same without the hand-off to the store of record (AITASKS_HISTORY_ENABLED=false).
UPDATE_WITHOUT_HISTORY = atomic_end.assemble(tuple(f for f in atomic_end.FRAGMENTS if f.name != "history"))


def update_script(history: bool) -> str:
    return UPDATE if history else UPDATE_WITHOUT_HISTORY
FAN_OUT = lua.load("aitasks.worker", "fan_out.lua")
