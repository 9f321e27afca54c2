"""The scripts that change a job's run with their bookkeeping: START and RUN_UPDATE, one round trip each,
and the recovery's REQUEUE.

Each wraps the UPDATE script (jobs/atomic_end.py, every fragment included) as a Lua function
``update(KEYS, ARGV)``, so a run's changes still go through the one UPDATE and its fragments, and adds
what the runner would otherwise fetch or write in round trips of its own:

- ``START`` (jobs/start.lua): the delivery's checks (known, not finished, a current generation, not
  cancelled), the delivery counted, the claim written and the record read back, in one EVALSHA;
- ``RUN_UPDATE`` (jobs/run_update.lua): a progress report, a retry or the end, with the delivery's end
  counted in the same step when it is the last write, answering the cancel flag;
- ``REQUEUE`` (worker/requeue.lua, worker/lease.py): the recovery takes a job back, fenced, and writes its
  state (RETRY, or PENDING kept) in the same step as it queues the message again, so no new run can
  claim the job before that state is written.
"""

from __future__ import annotations

from functools import cache

from aitasks.jobs import lua, scripts


def as_function(update: str) -> str:
    """The UPDATE script as a local Lua function; its ``return`` statements return from the function."""
    body = "\n".join("  " + line if line else "" for line in update.split("\n"))
    return f"local function update(KEYS, ARGV)\n{body}\nend\n"


@cache
def start_script(history: bool) -> str:
    return as_function(scripts.update_script(history)) + lua.load("aitasks.jobs", "start.lua")


@cache
def run_update_script(history: bool) -> str:
    return as_function(scripts.update_script(history)) + lua.load("aitasks.jobs", "run_update.lua")


@cache
def requeue_script(history: bool) -> str:
    return as_function(scripts.update_script(history)) + lua.load("aitasks.worker", "requeue.lua")
