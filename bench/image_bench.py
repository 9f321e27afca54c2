"""(c) Image jobs: each type's time through the API next to its bare processing, and jobs per minute.

Per case (a job type on a 512x512 picture from scikit-image, nothing downloaded):

- Bare: in this process, the job type's own function runs on the same PNG bytes with a minimal context
  (inputs read from memory, the result PNG kept in memory, progress a no-op): decode -> process ->
  encode, exactly the worker's code path minus the platform. Warmed first; median of n runs.
- Through the API: one cpu and one gpu worker (`aitasks worker --concurrency 1`, models preloaded and
  every type run once before measuring). One job at a time, PNG bytes in to PNG bytes out, by two client
  paths (``--image-paths``; both by default):

  - json (the seeds' clients; unchanged since 2026-11-25, so earlier numbers compare): base64 the PNG,
    `POST .../submit/` with `Prefer: wait=60` (answered 200 with the result once the job ends), read and
    parse the answer, decode the inlined base64 result PNG.
  - multipart (the lean path to a result file): the pictures as multipart file parts with `task_type`
    and `parameters` (JSON text) as form fields, as aitasks' Python client sends them, `POST
    .../submit/?inline=false` with `Prefer: wait=60` (answered 200 once the job ends, the result naming its
    file without the base64 picture), then the result PNG's bytes from `GET .../{id}/artifacts/{name}`,
    checked as the json path checks its own. (Until 2026-12-07 21:40 UTC this path waited on the job's SSE
    stream instead: the waiting submit could not leave the base64 out then. Three requests, now two.)

  Median wall time of each. Bare and the paths' samples take turns (which goes first rotates), so load
  from elsewhere hits all alike. Overhead ratio = API median / bare median (issue 22: <= 1.05x).
  The job record's timestamps split the API time into submit (HTTP, base64 or multipart parse, image
  check, validation), queue (input file stored, record and message written, picked up, until the worker
  starts it), run (in the worker) and answer (json: result read, inlined as base64, sent, parsed;
  multipart: the end answered without the picture, then the file fetched). The API process's CPU (its threads'
  scheduler time, in ns) is read around each round trip: CPU per job per path; for multipart also per
  request (submit, fetch); and during the bare runs, what it spends with no request open.
- Throughput: m jobs of the case submitted at once (4 connections), time from the first submit until
  the last one is finished (as Redis counts them: results are not fetched), as jobs per minute; with 1
  and with 2 pool processes on the type's queue, each path's batch in turn (which goes first alternates
  case by case). Next to it, the bare baseline: 1 and 2 processes of this module (spawned, warmed)
  running the bare job function m jobs in all, from a common start until the last one is done. During
  each API batch the CPU time of the API process, of Redis, and of the worker (main process and pool) is
  read from /proc, per job: what the platform spends beside the job function on the same cores; during
  every batch, API or bare, the cores other work on the machine took (/proc/stat less the benchmark's own
  processes). ``rounds`` > 1 (``--image-rounds``) repeats the API batches and the bare baseline and keeps
  the best of each: a 1-5 s batch is hit or missed by load from elsewhere by chance.
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


MULTIPART_BOUNDARY = "aitasks-bench-7d3f0c9e1b2a4f56"
MULTIPART_TYPE = f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"


def multipart_body(case: Case, pics: dict[str, bytes]) -> bytes:
    """The multipart submit body, as the Python client sends it (client/protocol.py ``submit_request``):
    ``task_type`` and ``parameters`` (JSON text) as form fields, each picture as a file part of its field."""
    dash = f"--{MULTIPART_BOUNDARY}\r\n".encode()
    parts = [dash, b'Content-Disposition: form-data; name="task_type"\r\n\r\n', case.task_type.encode(), b"\r\n"]
    if case.parameters:
        parts += [dash, b'Content-Disposition: form-data; name="parameters"\r\n\r\n', orjson.dumps(case.parameters),
                  b"\r\n"]
    for name, pic in case.files.items():
        parts += [dash, f'Content-Disposition: form-data; name="{name}"; filename="{pic}.png"\r\n'.encode(),
                  b"Content-Type: image/png\r\n\r\n", pics[pic], b"\r\n"]
    parts.append(f"--{MULTIPART_BOUNDARY}--\r\n".encode())
    return b"".join(parts)


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
        "request_multipart": med(lambda: multipart_body(case, pics)),
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


def bare_throughput(processes: int, jobs: int, timeout_s: float = 300,
                    ours: list[int] | None = None) -> dict[str, dict[str, Any]]:
    """Jobs per minute of the bare job functions with ``processes`` processes, ``jobs`` per case in all.
    ``ours``: more processes of the benchmark (the idle stack), not counted in ``others_cores``."""
    ctx = multiprocessing.get_context("spawn")  # a clean process, as a worker's pool process is
    barrier = ctx.Barrier(processes + 1, timeout=timeout_s)
    done = ctx.Queue()
    share = [jobs // processes + (i < jobs % processes) for i in range(processes)]
    procs = [ctx.Process(target=_bare_worker, args=(n, barrier, done), daemon=True) for n in share]
    for proc in procs:
        proc.start()
    out: dict[str, dict[str, Any]] = {}
    try:
        mine = [os.getpid(), *(p.pid for p in procs if p.pid is not None), *(ours or [])]

        def others() -> float:
            return _machine_cpu_s() - sum(_cpu_s(pid) for pid in mine)

        for case in CASES:
            barrier.wait()
            t0 = time.perf_counter()
            o0 = others()
            for _ in procs:
                label = done.get(timeout=timeout_s)
                if label != case.label:
                    raise RuntimeError(f"bare throughput: {label} finished during {case.label}")
            seconds = time.perf_counter() - t0
            out[case.label] = {"jobs": jobs, "seconds": round(seconds, 3),
                               "jobs_per_min": round(jobs / seconds * 60, 1),
                               "others_cores": round((others() - o0) / seconds, 2)}
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


def _segments(doc: dict[str, Any], wall0: float, wall1: float, elapsed: float, response_bytes: int) -> dict[str, float]:
    """A round trip's seconds in total and per segment, split by the job's timestamps in ``doc`` (a status
    document with ``result``): submit, queue, run (in the worker), answer (until the client had the PNG)."""
    created, started, finished = (_ts(doc.get(k)) for k in ("created_at", "started_at", "finished_at"))
    timings = doc["result"].get("metadata", {}).get("timings_ms", {})
    return {
        "total": elapsed,
        "submit": created - wall0, "queue": started - created, "run": finished - started,
        "answer": wall1 - finished,
        "job_function": timings.get("total_ms", float("nan")) / 1000,
        "response_bytes": float(response_bytes),
    }


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
        return _segments(answer, wall0, wall1, elapsed, len(raw))

    def close(self) -> None:
        self.conn.close()


class MultipartClient:
    """The lean way to a result file: the pictures as multipart file parts (as the Python client sends
    them), `POST .../submit/?inline=false` with `Prefer: wait=60` (200 once the job ends, its result naming
    the file without the base64 picture), then the result PNG as a file from the artifacts route. stdlib
    only, keep-alive."""

    def __init__(self, port: int, key: str, api_pid: int | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.auth = {"Authorization": f"Bearer {key}"}
        self.api_pid = api_pid  # given: the API's CPU is read between the two requests (not timed)

    def _get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        self.conn.request("GET", path, headers={**self.auth, **(headers or {})})
        r = self.conn.getresponse()
        return r.status, r.read()

    def round_trip(self, case: Case, pics: dict[str, bytes]) -> dict[str, float]:
        """One job from PNG bytes to result PNG bytes; seconds in total and per segment."""
        cpu: list[float] = []
        untimed = 0.0

        def read_cpu() -> None:
            nonlocal untimed
            if self.api_pid is not None:
                r0 = time.perf_counter()
                cpu.append(_thread_cpu_s(self.api_pid))
                untimed += time.perf_counter() - r0

        wall0 = time.time()
        t0 = time.perf_counter()
        read_cpu()
        body = multipart_body(case, pics)  # the parts: part of a client's cost
        self.conn.request("POST", SUBMIT_PATH + "?inline=false", body=body,
                          headers={**self.auth, "Content-Type": MULTIPART_TYPE, "Prefer": "wait=60"})
        r = self.conn.getresponse()
        raw = r.read()
        final = orjson.loads(raw) if r.status == 200 else None
        if final is None or final.get("status") != "SUCCESS" or "image_data" in final.get("result", {}):
            raise RuntimeError(f"{case.label}: waiting multipart submit answered {r.status}: {raw[:300]!r}")
        task_id, name = final["task_id"], final["result"].get("image_artifact")
        read_cpu()
        status, png = self._get(f"/api/v1/tasks/{task_id}/artifacts/{name}")
        read_cpu()
        elapsed = time.perf_counter() - t0 - untimed
        wall1 = time.time() - untimed
        if status != 200 or not png.startswith(b"\x89PNG"):
            raise RuntimeError(f"{case.label}: artifact {name} answered {status}: {png[:100]!r}")
        out = _segments(final, wall0, wall1, elapsed, len(raw) + len(png))
        if cpu:
            out.update({f"api_cpu_{step}": cpu[i + 1] - cpu[i] for i, step in enumerate(("submit", "fetch"))})
        return out

    def close(self) -> None:
        self.conn.close()


def _thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process so far, from its threads' scheduler statistics (nanoseconds, where /proc's
    stat counts 10 ms ticks: fine enough to be read around one job)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0.0
    return total / 1e9


def _machine_cpu_s() -> float:
    """CPU seconds every process on the machine has spent so far: the busy time of all cores (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


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
        # Everything of the benchmark's own: the stack (the other queue's worker too) and this process.
        self.ours = [os.getpid(), stack.api.pid, redis_pid, *(p for w in stack.workers for p in _group_pids(w.pid))]
        self.start = self.read()
        self.start_others = self.others()

    def read(self) -> dict[str, float]:
        return {part: sum(_cpu_s(pid) for pid in pids) for part, pids in self.parts.items()}

    def others(self) -> float:
        """CPU seconds spent so far by the machine, less the benchmark's own processes."""
        return _machine_cpu_s() - sum(_cpu_s(pid) for pid in self.ours)

    def per_job_ms(self, jobs: int) -> dict[str, float]:
        end = self.read()
        return {part: round((end[part] - self.start[part]) / jobs * 1000, 1) for part in end}

    def others_cores(self, seconds: float) -> float:
        """The cores other work on the machine took meanwhile (CPU seconds per second of the batch)."""
        return round((self.others() - self.start_others) / seconds, 2)


def _outcomes(stack: AitasksStack) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in stack.redis().hgetall(OUTCOMES).items()}


async def _submit_all(port: int, key: str, body: bytes, n: int, connections: int,
                      content_type: str = "application/json") -> int:
    request = build_request("POST", "127.0.0.1", port, SUBMIT_PATH, body,
                            {"Authorization": f"Bearer {key}", "Content-Type": content_type})
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
          timeout_s: float = 300, content_type: str = "application/json") -> dict[str, Any]:
    """Submit n jobs at once (``body``: JSON, or multipart with its ``content_type``); seconds until all
    have finished."""
    before = _outcomes(stack)
    cpu = CpuMeter(stack, case.queue)
    t0 = time.perf_counter()
    errors = asyncio.run(_submit_all(stack.port, key, body, n, connections, content_type))
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
    others = cpu.others_cores(seconds)
    after = _outcomes(stack)
    bad = {k: v - before.get(k, 0) for k, v in after.items()
           if not k.endswith("|SUCCESS") and v - before.get(k, 0)}
    if bad:
        raise RuntimeError(f"{case.label}: jobs did not all succeed: {bad}")
    return {"jobs": n, "seconds": round(seconds, 3), "submit_seconds": round(t_submitted - t0, 3),
            "jobs_per_min": round(n / seconds * 60, 1), "cpu_ms_per_job": cpu_ms, "others_cores": others}


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


PATHS = ("json", "multipart")  # the client paths through the API; "json" keeps its keys at the case's top level
CONTENT_TYPES = {"json": "application/json", "multipart": MULTIPART_TYPE}


def _path_row(api: list[dict[str, float]], cpu_s: list[float], bare_ms: float, request_bytes: int) -> dict[str, Any]:
    """One client path's numbers for a case, from its round trips and the API's CPU seconds around each."""
    seg = {name: _ms([a[name] for a in api]) for name in ("submit", "queue", "run", "answer", "job_function")}
    row: dict[str, Any] = {
        "api_ms": _ms([a["total"] for a in api]), "api_min_ms": round(min(a["total"] for a in api) * 1000, 1),
        "api_segments_ms": seg,
        "response_bytes": int(statistics.median(a["response_bytes"] for a in api)),
        "request_bytes": request_bytes,
        "api_cpu_ms_per_job": round(sum(cpu_s) / len(cpu_s) * 1000, 2),
    }
    steps = {step: round(statistics.median(a[f"api_cpu_{step}"] for a in api) * 1000, 2)
             for step in ("submit", "fetch") if f"api_cpu_{step}" in api[0]}
    if steps:  # the multipart path: the API's CPU per request (median)
        row["api_cpu_ms_by_request"] = steps
    row["overhead_ratio"] = round(row["api_ms"] / bare_ms, 3)
    row["overhead_ms"] = round(row["api_ms"] - bare_ms, 1)
    return row


def _keep_best(table: dict[str, Any], c: int, b: dict[str, Any]) -> None:
    """``table[str(c)]``: the throughput round with the most jobs per minute, every round's listed beside it."""
    best = table.get(str(c))
    tried = [*(best or {}).get("rounds_jobs_per_min", []), b["jobs_per_min"]]
    if best is None or b["jobs_per_min"] > best["jobs_per_min"]:
        best = dict(b)
    best["rounds_jobs_per_min"] = tried
    table[str(c)] = best


def run(work: Path, logs: Path, cleanup: Cleanup, *, samples: int, warmup: int, jobs: int,
        concurrencies: tuple[int, ...] = (1, 2), worker_env: dict[str, str] | None = None,
        paths: tuple[str, ...] = PATHS, rounds: int = 1) -> dict[str, Any]:
    """``worker_env``: extra environment of the workers (a setting to try, e.g. GLIBC_TUNABLES).
    ``paths``: the client paths to measure (``json``, ``multipart``); each case's JSON numbers stay at the
    case's top level (as before the multipart path), the multipart ones go under ``multipart``.
    ``rounds``: throughput rounds per worker count (API batches of every case and path, then the bare
    baseline), the best of each kept (1: as before; more filter out load from elsewhere)."""
    unknown = set(paths) - set(PATHS)
    if unknown or not paths:
        raise ValueError(f"image paths must be among {PATHS}, not {sorted(unknown) or 'none'}")
    pics = pictures()
    bodies = {path: {case.label: (payload(case, pics) if path == "json" else multipart_body(case, pics))
                     for case in CASES} for path in PATHS}
    stack = AitasksStack("images", work / "images", logs, cleanup).start_api()
    key = stack.new_key()
    start_workers(stack, 1, worker_env)
    warm(stack, key, bodies["json"], 1)
    assert stack.api is not None
    api_pid = stack.api.pid
    clients: dict[str, WaitClient | MultipartClient] = {}
    for path in paths:
        clients[path] = WaitClient(stack.port, key) if path == "json" else MultipartClient(stack.port, key, api_pid)
        cleanup.push(f"{path} client", clients[path].close)

    results: dict[str, dict[str, Any]] = {}
    for case in CASES:
        bare = Bare(case, pics)
        bare_s: list[float] = []
        api: dict[str, list[dict[str, float]]] = {path: [] for path in paths}
        cpu: dict[str, list[float]] = {path: [] for path in paths}
        idle = [0.0, 0.0]  # the API's CPU seconds and the seconds elapsed during the bare runs (no request)

        def one(name: str, measured: bool) -> None:
            if name == "bare":
                c0, w0 = _thread_cpu_s(api_pid), time.perf_counter()
                t = bare()
                c1, w1 = _thread_cpu_s(api_pid), time.perf_counter()
                if measured:
                    bare_s.append(t)
                    idle[0] += c1 - c0
                    idle[1] += w1 - w0
                return
            c0 = _thread_cpu_s(api_pid)
            trip = clients[name].round_trip(case, pics)
            c1 = _thread_cpu_s(api_pid)
            if measured:
                api[name].append(trip)
                cpu[name].append(c1 - c0)

        order = ["bare", *paths]
        for _ in range(warmup):
            for name in order:
                one(name, False)
        for i in range(samples):
            k = i % len(order)  # rotate which goes first (bare, json: as before the multipart path)
            for name in order[k:] + order[:k]:
                one(name, True)
        bare_ms = _ms(bare_s)
        row: dict[str, Any] = {
            "task_type": case.task_type, "queue": case.queue, "inputs": case.files, "parameters": case.parameters,
            "samples": samples, "bare_ms": bare_ms, "bare_min_ms": round(min(bare_s) * 1000, 1),
            "bare_jobs_per_min_1proc": round(60_000 / bare_ms, 1), "paths": list(paths),
            # what the API spends with no request (heartbeats, the hub, the outbox): part of each round trip's CPU
            "api_idle_cpu_ms_per_s": round(idle[0] / idle[1] * 1000, 2) if idle[1] else None,
        }
        for path in paths:
            part = _path_row(api[path], cpu[path], bare_ms, len(bodies[path][case.label]))
            if path == "json":
                row.update(part)
            else:
                row[path] = part
        row["result_png_bytes"] = len(bare.last_result)
        row["platform_costs_ms"] = platform_costs(case, pics, bare.last_result)
        results[case.label] = row
        for path in paths:
            part = row if path == "json" else row[path]
            seg = part["api_segments_ms"]
            print(f"  {case.label:<28} bare {bare_ms:7.1f} ms | {path:<9} API {part['api_ms']:7.1f} ms "
                  f"({part['overhead_ratio']:.2f}x; submit {seg['submit']:.1f}, queue {seg['queue']:.1f}, "
                  f"run {seg['run']:.1f}, answer {seg['answer']:.1f} ms; API CPU {part['api_cpu_ms_per_job']:.2f} "
                  f"ms/job" + (", by request " + " / ".join(f"{k} {v:.2f}" for k, v in part["api_cpu_ms_by_request"].items())
                               if "api_cpu_ms_by_request" in part else "") + ")", flush=True)
    for client in clients.values():
        client.close()

    for c in concurrencies:
        if c != 1:
            stack.stop_workers()
            start_workers(stack, c, worker_env)
            warm(stack, key, bodies["json"], c)
        for r in range(rounds):
            for index, case in enumerate(CASES):
                # Alternate which path's batch goes first, case by case: load from elsewhere moves both alike.
                for path in (paths if (index + r) % 2 == 0 else paths[::-1]):
                    b = batch(stack, key, case, bodies[path][case.label], jobs, content_type=CONTENT_TYPES[path])
                    part = results[case.label] if path == "json" else results[case.label][path]
                    _keep_best(part.setdefault("throughput", {}), c, b)
                    print(f"  {case.label:<28} {path:<9} {c} worker process{'es' if c > 1 else '  '}: "
                          f"{b['jobs_per_min']:7.1f} jobs/min ({jobs} jobs in {b['seconds']:.2f} s; others "
                          f"{b['others_cores']:.2f} cores; CPU ms/job: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in b["cpu_ms_per_job"].items()) + ")", flush=True)
            # The baseline right after (the workers idle meanwhile): load from elsewhere moves both alike.
            ours = [stack.api.pid, *(p for w in stack.workers for p in _group_pids(w.pid))]
            if stack.redis_server.proc:
                ours.append(stack.redis_server.proc.pid)
            for label, b in bare_throughput(c, jobs, ours=ours).items():
                _keep_best(results[label].setdefault("bare_throughput", {}), c, b)
                print(f"  {label:<28} {'bare':<9} {c} process{'es' if c > 1 else '  '}:        "
                      f"{b['jobs_per_min']:7.1f} jobs/min ({jobs} jobs in {b['seconds']:.2f} s; others "
                      f"{b['others_cores']:.2f} cores)", flush=True)
    stack.stop_workers()
    return {
        "image": "scikit-image astronaut 512x512 RGB PNG; face_swap source: LFW subset face 0 upscaled to 256x256",
        "worker_pool": "prefork", "preload": PRELOAD, "worker_env": worker_env or {}, "throughput_jobs": jobs,
        "concurrencies": list(concurrencies), "paths": list(paths), "throughput_rounds": rounds, "cases": results,
    }
