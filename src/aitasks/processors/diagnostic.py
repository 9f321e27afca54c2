"""``diagnostic``: exercises the machinery (progress, retries, failures, crashes, limits, file inputs).

Seed 004's ``test_celery``, grown up. Tests and benchmarks use it; operators use it to check a
deployment end to end. It does no AI work and says so.

It can SIGKILL pool processes and hold the GPU worker for an hour, so it is off unless the deployment
sets ``AITASKS_ENABLE_DIAGNOSTIC=true`` (the test suite and the benchmarks do): otherwise a submit gets
403 and the catalog lists it as unavailable. When keys get scopes, an admin key will pass too.

``AITASKS_DIAGNOSTIC_LEDGER`` (a file path, in the worker's environment; not a setting of the service):
each run appends a ``start`` line when it begins, then ``done`` when its work ran to completion (or
``raised`` when it failed or was cancelled; a killed run writes nothing more), so the chaos run
(bench/chaos.py) can see a job that ran twice from a record outside Redis. It is read from the
environment, never from the job's input, so a client cannot make a worker write a file it names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aitasks.errors import JobError, TransientJobError
from aitasks.jobs.files import ImageFile
from aitasks.processors.registry import job_type
from aitasks.worker.context import JobContext

if TYPE_CHECKING:
    from aitasks.settings import Settings

DISABLED = ("diagnostic jobs can kill worker processes and hold the GPU worker; "
            "set AITASKS_ENABLE_DIAGNOSTIC=true to allow them")


def restricted(settings: Settings) -> str | None:
    return None if settings.enable_diagnostic else DISABLED


class DiagnosticParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration_s: float = Field(0, ge=0, le=3600, description="How long the job works, in seconds.")
    steps: int = Field(1, ge=1, le=10_000, description="Progress reports spread over the duration.")
    busy_s: float = Field(0, ge=0, le=600, description="CPU seconds spent computing first (a CPU-bound job).")
    fail_times: int = Field(0, ge=0, le=20, description="Transient failures (retried) before success.")
    fail: bool = Field(False, description="Fail permanently with a clear error (no retry).")
    raise_bug: bool = Field(False, description="Raise an unexpected exception, as a bug in a job would (FAILURE; "
                                               "logged with its traceback and reported to Sentry when set).")
    crash_times: int = Field(0, ge=0, le=20, description="Kill its own worker process this many times first.")
    ignore_soft_limit: bool = Field(False, description="Keep working past the soft time limit (tests the hard one).")
    ignore_cancel: bool = Field(False, description="Do not stop at progress reports (tests the forced cancel).")
    queue: Literal["cpu", "gpu"] = Field("cpu", description="Which worker pool runs it.")


class DiagnosticInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: DiagnosticParameters = Field(default_factory=DiagnosticParameters)
    image: ImageFile | None = Field(None, description="Optional image: its details are reported and a "
                                                      "thumbnail (at most 128 px) is made of it.")


def _burn(seconds: float, ctx: JobContext) -> float:
    """Compute for ``seconds`` of this thread's CPU time (a CPU-bound job: what the several-hosts benchmark
    runs), checking for a cancel every 50 ms; returns the CPU seconds spent."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        slice_end = time.monotonic() + 0.05
        while time.monotonic() < slice_end and time.thread_time() - start < seconds:
            sum(i * i for i in range(2000))
        ctx.check_cancel()
    return time.thread_time() - start


def _work(params: DiagnosticParameters, ctx: JobContext) -> None:
    per_step = params.duration_s / params.steps
    for step in range(1, params.steps + 1):
        deadline = time.monotonic() + per_step
        while (left := deadline - time.monotonic()) > 0:
            if params.ignore_soft_limit:
                try:
                    time.sleep(min(left, 0.05))
                except BaseException as exc:  # the soft limit arrives as an exception: ignore it
                    if type(exc).__name__ != "SoftTimeLimitExceeded":
                        raise
            else:
                time.sleep(min(left, 0.05))
            if not params.ignore_cancel:
                ctx.check_cancel()
        if not params.ignore_cancel:  # a job stuck in native code reports nothing
            ctx.progress(100 * step / params.steps, f"step {step}/{params.steps}")


LEDGER_ENV = "AITASKS_DIAGNOSTIC_LEDGER"


def _ledger(event: str, ctx: JobContext) -> None:
    """One JSON line per event; a single O_APPEND write, so lines of concurrent pool processes never mix."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    line = json.dumps({"event": event, "job": ctx.job_id, "attempt": ctx.attempt, "delivery": ctx.delivery,
                       "pid": os.getpid(), "t": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _thumbnail(data: bytes) -> tuple[bytes, dict[str, Any]]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        info: dict[str, Any] = {"format": img.format, "width": img.width, "height": img.height, "mode": img.mode}
        thumb = img.convert("RGBA") if img.mode in ("RGBA", "LA", "P") else img.convert("RGB")
        thumb.thumbnail((128, 128))
        out = io.BytesIO()
        thumb.save(out, "PNG")
        info["thumbnail"] = {"width": thumb.width, "height": thumb.height}
    return out.getvalue(), info


@job_type(
    "diagnostic",
    input=DiagnosticInput,
    queue="cpu",
    description="Exercises the job machinery: progress, retries, failures, crashes, limits and uploads.",
    route=lambda data: data.parameters.queue,
    retry_backoff_s=0.5,
    restricted=restricted,
    examples=({"task_type": "diagnostic", "parameters": {"duration_s": 2, "steps": 4}},),
)
def diagnostic(data: DiagnosticInput, ctx: JobContext) -> dict[str, Any]:
    _ledger("start", ctx)
    try:
        result = _run(data, ctx)
    except BaseException:  # a failure, a cancel, a limit: this run ended without completing
        _ledger("raised", ctx)
        raise
    _ledger("done", ctx)
    return result


def _run(data: DiagnosticInput, ctx: JobContext) -> dict[str, Any]:
    params = data.parameters
    started = time.monotonic()
    if ctx.delivery <= params.crash_times:
        os.kill(os.getpid(), signal.SIGKILL)  # as an out-of-memory kill would
    if params.fail:
        raise JobError("diagnostic failure requested (parameters.fail=true)")
    if params.raise_bug:
        raise ZeroDivisionError("diagnostic bug requested (parameters.raise_bug=true)")
    if ctx.attempt <= params.fail_times:
        raise TransientJobError(f"diagnostic transient failure {ctx.attempt} of {params.fail_times}")
    cpu_s = _burn(params.busy_s, ctx) if params.busy_s else 0.0
    _work(params, ctx)
    result: dict[str, Any] = {"parameters": params.model_dump(), "attempts": ctx.attempt,
                              "deliveries": ctx.delivery, "worker_pid": os.getpid(), "cpu_s": round(cpu_s, 3)}
    if data.image is not None:
        raw = ctx.read_input(data.image)
        thumb, info = _thumbnail(raw)
        info["bytes"] = len(raw)
        info["sha256"] = hashlib.sha256(raw).hexdigest()
        ctx.save_artifact("thumbnail.png", thumb, "image/png")
        result["image"] = info
        result["image_artifact"] = "thumbnail.png"
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result
