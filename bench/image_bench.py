"""(c) Image jobs: each type's time through the API next to its bare processing, and jobs per minute.

Per case (a job type on a 512x512 picture from scikit-image, nothing downloaded):

- Bare: in this process, the job type's own function runs on the same PNG bytes with a minimal context
  (inputs read from memory, the result PNG kept in memory, progress a no-op): decode -> process ->
  encode, exactly the worker's code path minus the platform. Warmed first; median of n runs.
- Through the API: one cpu and one gpu worker (`aitasks worker --concurrency 1`, models preloaded and
  every type run once before measuring). One job at a time: base64 the PNG, `POST .../submit/` with
  `Prefer: wait=60` (answered 200 with the result once the job ends), read and parse the answer, decode
  the inlined result PNG. Median wall time. Bare and API samples alternate, so load from elsewhere
  hits both alike. Overhead ratio = API median / bare median (goal <= 1.1x).
  The job record's timestamps split the API time into submit (HTTP, base64, image check, validation),
  queue (input file stored, record and message written, picked up, until the worker starts it), run
  (in the worker) and answer (result read, inlined as base64, sent, parsed).
- Throughput: m jobs of the case submitted at once (4 connections), time from the first submit until
  the last one is finished, as jobs per minute; with 1 and with 2 pool processes on the type's queue.
  Next to it, the bare baseline: 1 and 2 processes of this module (spawned, warmed) running the bare
  job function m jobs in all, from a common start until the last one is done. During each API batch
  the CPU time of the API process, of Redis, and of the worker (main process and pool) is read from
  /proc, per job: what the platform spends beside the job function on the same cores.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from aitasks.jobs.keys import METRICS_JOBS
from bench.httpclient import Connection, build_request
from bench.procs import Cleanup
from bench.stacks import AitasksStack

SUBMIT_PATH = "/api/v1/tasks/submit/"
OUTCOMES = METRICS_JOBS  # hash "type|status" -> count, written with the terminal state
PRELOAD = {"cpu": "background_removal", "gpu": "face_swap"}  # the types with models, per queue


@dataclass
class Case:
    label: str
    task_type: str
    queue: str
    files: dict[str, str]  # input field -> picture name
    parameters: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("background_removal", "background_removal", "cpu", {"image": "astronaut"}, {"mode": "person"}),
    Case("face_swap", "face_swap", "gpu", {"source_image": "lfw_face", "target_image": "astronaut"}),
    Case("object_removal", "object_removal", "cpu", {"image": "astronaut"}, {"boxes": [[200, 200, 60, 60]]}),
    Case("style_transfer watercolor", "style_transfer", "cpu", {"image": "astronaut"}, {"style": "watercolor"}),
    Case("style_transfer cartoon", "style_transfer", "cpu", {"image": "astronaut"}, {"style": "cartoon"}),
]


# --- pictures ------------------------------------------------------------------------------------


def _png(array: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def pictures() -> dict[str, bytes]:
    """astronaut: 512x512 RGB with a face; lfw_face: LFW subset face 0, 25x25 grey upscaled to 256 RGB."""
    import numpy as np
    from PIL import Image
    from skimage import data as samples

    grey = (samples.lfw_subset()[0] * 255).astype(np.uint8)
    face = np.asarray(Image.fromarray(grey).resize((256, 256), Image.Resampling.BICUBIC).convert("RGB"))
    return {"astronaut": _png(np.asarray(samples.astronaut())), "lfw_face": _png(face)}


def payload(case: Case, pics: dict[str, bytes]) -> bytes:
    """The JSON submit body: files as base64 fields (the seeds' way)."""
    body: dict[str, Any] = {"task_type": case.task_type}
    for name, pic in case.files.items():
        body[name] = base64.b64encode(pics[pic]).decode()
    if case.parameters:
        body["parameters"] = case.parameters
    return orjson.dumps(body)


# --- bare: the job function in this process ------------------------------------------------------


class BareContext:
    """What a job function uses of JobContext, with no Redis and no disk: inputs from memory, the
    result kept in memory, progress and cancellation no-ops."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.saved: dict[str, bytes] = {}

    def progress(self, percent: float, message: str = "") -> None:
        pass

    def check_cancel(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def read_input(self, ref: Any) -> bytes:
        return self.files[ref.artifact]

    def save_artifact(self, name: str, data: bytes, media_type: str | None = None) -> None:
        self.saved[name] = data


class Bare:
    """The case's job function on the PNG bytes in this process; a call runs it once and returns its
    seconds. ``last_result`` holds the result PNG of the last run."""

    def __init__(self, case: Case, pics: dict[str, bytes]):
        from PIL import Image

        from aitasks.processors.registry import load_all

        jt = load_all().get(case.task_type)
        if jt is None or jt.queue != case.queue:
            raise RuntimeError(f"job type {case.task_type}: not registered, or not on the {case.queue} queue")
        self.case = case
        self.func = jt.func
        self.files: dict[str, bytes] = {}
        raw: dict[str, Any] = {}
        for name, pic in case.files.items():
            data = pics[pic]
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
            self.files[f"input-{name}.png"] = data
            raw[name] = {"artifact": f"input-{name}.png", "media_type": "image/png", "bytes": len(data),
                         "width": width, "height": height}
        if case.parameters:
            raw["parameters"] = case.parameters
        self.model = jt.input_model.model_validate(raw)  # as the worker does with the stored input
        self.last_result = b""

    def __call__(self) -> float:
        ctx = BareContext(self.files)
        t0 = time.perf_counter()
        result = self.func(self.model, ctx)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t0
        name = result.get("image_artifact")
        if name not in ctx.saved:
            raise RuntimeError(f"bare {self.case.label}: no result image")
        self.last_result = ctx.saved[name]
        return elapsed


def platform_costs(case: Case, pics: dict[str, bytes], result_png: bytes, repeat: int = 5) -> dict[str, float]:
    """Milliseconds of a few things the API path adds, timed alone in this process (median of
    ``repeat``): the client's base64 and JSON of the request, the API's base64 decode and image check
    (header, then a full decode, for each input), and the inlined result (base64, JSON, parse, decode)."""
    from aitasks.jobs.files import FileKind, check_file

    kind = FileKind("image")
    inputs = [pics[p] for p in case.files.values()]

    def med(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1000, 2)

    body = payload(case, pics)
    answer = orjson.dumps({"status": "SUCCESS", "result": {"image_data": base64.b64encode(result_png).decode()}})
    return {
        "request_base64_json": med(lambda: payload(case, pics)),
        "api_parse_base64_decode": med(lambda: [base64.b64decode(v) for k, v in orjson.loads(body).items()
                                                if k in case.files]),
        "api_image_check": med(lambda: [check_file("image", kind, d, 1 << 30, 1 << 30) for d in inputs]),
        "result_base64_json": med(lambda: orjson.dumps(
            {"result": {"image_data": base64.b64encode(result_png).decode()}})),
        "client_parse_result": med(lambda: base64.b64decode(orjson.loads(answer)["result"]["image_data"])),
    }


def _bare_worker(jobs: int, barrier: Any, done: Any) -> None:
    """A spawned process: every case warmed, then ``jobs`` runs of each, starting with the others."""
    pics = pictures()
    bares = [Bare(case, pics) for case in CASES]
    for bare in bares:
        bare()
    for bare in bares:
        barrier.wait()
        for _ in range(jobs):
            bare()
        done.put(bare.case.label)


def bare_throughput(processes: int, jobs: int, timeout_s: float = 300) -> dict[str, dict[str, Any]]:
    """Jobs per minute of the bare job functions with ``processes`` processes, ``jobs`` per case in all."""
    ctx = multiprocessing.get_context("spawn")  # a clean process, as a worker's pool process is
    barrier = ctx.Barrier(processes + 1, timeout=timeout_s)
    done = ctx.Queue()
    share = [jobs // processes + (i < jobs % processes) for i in range(processes)]
    procs = [ctx.Process(target=_bare_worker, args=(n, barrier, done), daemon=True) for n in share]
    for proc in procs:
        proc.start()
    out: dict[str, dict[str, Any]] = {}
    try:
        for case in CASES:
            barrier.wait()
            t0 = time.perf_counter()
            for _ in procs:
                label = done.get(timeout=timeout_s)
                if label != case.label:
                    raise RuntimeError(f"bare throughput: {label} finished during {case.label}")
            seconds = time.perf_counter() - t0
            out[case.label] = {"jobs": jobs, "seconds": round(seconds, 3),
                               "jobs_per_min": round(jobs / seconds * 60, 1)}
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    return out


# --- through the API -----------------------------------------------------------------------------


def _ts(value: str | None) -> float:
    if not value:
        return float("nan")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class WaitClient:
    """`POST submit` with `Prefer: wait=60` on one keep-alive connection; stdlib only."""

    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                        "Prefer": "wait=60"}

    def round_trip(self, case: Case, pics: dict[str, bytes]) -> dict[str, float]:
        """One job from PNG bytes to result PNG bytes; seconds in total and per segment."""
        wall0 = time.time()
        t0 = time.perf_counter()
        body = payload(case, pics)  # base64 of the inputs: part of a client's cost
        self.conn.request("POST", SUBMIT_PATH, body=body, headers=self.headers)
        r = self.conn.getresponse()
        raw = r.read()
        answer = orjson.loads(raw)
        png = base64.b64decode(answer["result"]["image_data"]) if r.status == 200 and "result" in answer else b""
        elapsed = time.perf_counter() - t0
        wall1 = time.time()
        if r.status != 200 or answer.get("status") != "SUCCESS" or not png.startswith(b"\x89PNG"):
            raise RuntimeError(f"{case.label}: submit answered {r.status}: {raw[:300]!r}")
        created, started, finished = (_ts(answer.get(k)) for k in ("created_at", "started_at", "finished_at"))
        timings = answer["result"].get("metadata", {}).get("timings_ms", {})
        return {
            "total": elapsed,
            "submit": created - wall0, "queue": started - created, "run": finished - started,
            "answer": wall1 - finished,
            "job_function": timings.get("total_ms", float("nan")) / 1000,
            "response_bytes": float(len(raw)),
        }

    def close(self) -> None:
        self.conn.close()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of one process so far; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _group_pids(pgid: int) -> list[int]:
    """The processes of a process group (a Proc's session: the worker and its pool processes)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[2]) == pgid:
                pids.append(int(entry))
    return pids


class CpuMeter:
    """CPU seconds spent by the API, Redis, the worker's main process and its pool, between two reads."""

    def __init__(self, stack: AitasksStack, queue: str):
        worker = next(w for w in stack.workers if w.name.startswith(f"{stack.name}-worker-{queue}"))
        assert stack.api is not None
        redis_pid = stack.redis_server.proc.pid if stack.redis_server.proc else -1
        self.parts = {"api": [stack.api.pid], "redis": [redis_pid],
                      "worker_main": [worker.pid],
                      "worker_pool": [p for p in _group_pids(worker.pid) if p != worker.pid]}
        self.start = self.read()

    def read(self) -> dict[str, float]:
        return {part: sum(_cpu_s(pid) for pid in pids) for part, pids in self.parts.items()}

    def per_job_ms(self, jobs: int) -> dict[str, float]:
        end = self.read()
        return {part: round((end[part] - self.start[part]) / jobs * 1000, 1) for part in end}


def _outcomes(stack: AitasksStack) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in stack.redis().hgetall(OUTCOMES).items()}


async def _submit_all(port: int, key: str, body: bytes, n: int, connections: int) -> int:
    request = build_request("POST", "127.0.0.1", port, SUBMIT_PATH, body,
                            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    left = n
    errors = 0

    async def one() -> None:
        nonlocal left, errors
        conn = await Connection("127.0.0.1", port).open()
        try:
            while left > 0:
                left -= 1
                status, _ = await conn.send(request)
                errors += status != 202
        finally:
            await conn.close()

    await asyncio.gather(*(one() for _ in range(min(connections, n))))
    return errors


def batch(stack: AitasksStack, key: str, case: Case, body: bytes, n: int, connections: int = 4,
          timeout_s: float = 300) -> dict[str, Any]:
    """Submit n jobs at once; seconds until all have finished."""
    before = _outcomes(stack)
    cpu = CpuMeter(stack, case.queue)
    t0 = time.perf_counter()
    errors = asyncio.run(_submit_all(stack.port, key, body, n, connections))
    t_submitted = time.perf_counter()
    if errors:
        raise RuntimeError(f"{case.label}: {errors} of {n} submits failed")
    r = stack.redis()
    done_before = sum(before.values())
    deadline = t0 + timeout_s
    while sum(int(v) for v in r.hvals(OUTCOMES)) - done_before < n:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{case.label}: not all {n} jobs finished in {timeout_s}s")
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    cpu_ms = cpu.per_job_ms(n)
    after = _outcomes(stack)
    bad = {k: v - before.get(k, 0) for k, v in after.items()
           if not k.endswith("|SUCCESS") and v - before.get(k, 0)}
    if bad:
        raise RuntimeError(f"{case.label}: jobs did not all succeed: {bad}")
    return {"jobs": n, "seconds": round(seconds, 3), "submit_seconds": round(t_submitted - t0, 3),
            "jobs_per_min": round(n / seconds * 60, 1), "cpu_ms_per_job": cpu_ms}


def start_workers(stack: AitasksStack, concurrency: int, env: dict[str, str] | None = None) -> None:
    for queue in ("cpu", "gpu"):
        stack.start_worker(concurrency, queue, env={"AITASKS_PRELOAD": PRELOAD[queue], **(env or {})},
                           label=f"-c{concurrency}")


def warm(stack: AitasksStack, key: str, bodies: dict[str, bytes], concurrency: int) -> None:
    """Every case `2 x concurrency` times at once, so each pool process has run each type."""
    for case in CASES:
        batch(stack, key, case, bodies[case.label], 2 * concurrency, connections=2 * concurrency)


# --- the run -------------------------------------------------------------------------------------


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def run(work: Path, logs: Path, cleanup: Cleanup, *, samples: int, warmup: int, jobs: int,
        concurrencies: tuple[int, ...] = (1, 2), worker_env: dict[str, str] | None = None) -> dict[str, Any]:
    """``worker_env``: extra environment of the workers (a setting to try, e.g. GLIBC_TUNABLES)."""
    pics = pictures()
    bodies = {case.label: payload(case, pics) for case in CASES}
    stack = AitasksStack("images", work / "images", logs, cleanup).start_api()
    key = stack.new_key()
    start_workers(stack, 1, worker_env)
    warm(stack, key, bodies, 1)
    client = WaitClient(stack.port, key)
    cleanup.push("wait client", client.close)

    results: dict[str, dict[str, Any]] = {}
    for case in CASES:
        bare = Bare(case, pics)
        for _ in range(warmup):
            bare()
            client.round_trip(case, pics)
        bare_s: list[float] = []
        api: list[dict[str, float]] = []
        for i in range(samples):
            if i % 2:  # alternate which goes first
                api.append(client.round_trip(case, pics))
                bare_s.append(bare())
            else:
                bare_s.append(bare())
                api.append(client.round_trip(case, pics))
        seg = {name: _ms([a[name] for a in api]) for name in ("submit", "queue", "run", "answer", "job_function")}
        row: dict[str, Any] = {
            "task_type": case.task_type, "queue": case.queue, "inputs": case.files, "parameters": case.parameters,
            "samples": samples,
            "bare_ms": _ms(bare_s), "api_ms": _ms([a["total"] for a in api]),
            "bare_min_ms": round(min(bare_s) * 1000, 1), "api_min_ms": round(min(a["total"] for a in api) * 1000, 1),
            "api_segments_ms": seg,
            "response_bytes": int(statistics.median(a["response_bytes"] for a in api)),
            "request_bytes": len(bodies[case.label]),
        }
        row["overhead_ratio"] = round(row["api_ms"] / row["bare_ms"], 3)
        row["overhead_ms"] = round(row["api_ms"] - row["bare_ms"], 1)
        row["bare_jobs_per_min_1proc"] = round(60_000 / row["bare_ms"], 1)
        row["result_png_bytes"] = len(bare.last_result)
        row["platform_costs_ms"] = platform_costs(case, pics, bare.last_result)
        results[case.label] = row
        print(f"  {case.label:<28} bare {row['bare_ms']:7.1f} ms | API {row['api_ms']:7.1f} ms "
              f"({row['overhead_ratio']:.2f}x; submit {seg['submit']:.1f}, queue {seg['queue']:.1f}, "
              f"run {seg['run']:.1f}, answer {seg['answer']:.1f} ms)", flush=True)
    client.close()

    for c in concurrencies:
        if c != 1:
            stack.stop_workers()
            start_workers(stack, c, worker_env)
            warm(stack, key, bodies, c)
        for case in CASES:
            b = batch(stack, key, case, bodies[case.label], jobs)
            results[case.label].setdefault("throughput", {})[str(c)] = b
            print(f"  {case.label:<28} {c} worker process{'es' if c > 1 else '  '}: "
                  f"{b['jobs_per_min']:7.1f} jobs/min ({jobs} jobs in {b['seconds']:.2f} s; CPU ms/job: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in b["cpu_ms_per_job"].items()) + ")", flush=True)
        # The baseline right after (the workers idle meanwhile): load from elsewhere moves both alike.
        for label, b in bare_throughput(c, jobs).items():
            results[label].setdefault("bare_throughput", {})[str(c)] = b
            print(f"  {label:<28} {c} bare process{'es' if c > 1 else '  '}:  "
                  f"{b['jobs_per_min']:7.1f} jobs/min ({jobs} jobs in {b['seconds']:.2f} s)", flush=True)
    stack.stop_workers()
    return {
        "image": "scikit-image astronaut 512x512 RGB PNG; face_swap source: LFW subset face 0 upscaled to 256x256",
        "worker_pool": "prefork", "preload": PRELOAD, "worker_env": worker_env or {}, "throughput_jobs": jobs,
        "concurrencies": list(concurrencies), "cases": results,
    }
