"""The ratios against the targets, a table for people and JSON for machines."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

# (key, description, comparison, target, unit)
TARGETS = [
    ("submit_throughput_ratio", "submit req/s / bare endpoint req/s", ">=", 0.5, "x"),
    ("submit_p99_ratio", "submit p99 / bare endpoint p99 (same concurrency)", "<=", 1.5, "x"),
    ("e2e_p50_overhead_ms", "no-op job p50: API+SSE minus raw Celery", "<=", 5.0, "ms"),
    # Issue 22: raw Celery with aitasks' reliability settings (acks_late, reject_on_worker_lost, prefetch 1)
    # and a Redis result backend, the same worker processes (bench/raw_celery.py).
    ("sustained_ratio", "no-op jobs/s: API / raw Celery (same workers)", ">=", 1.0, "x"),
    ("redis_bytes_per_job", "Redis memory per finished job", "<", 4096, "B"),
    # (c') issue 22: open SSE streams held by one API process (bench/streams_bench.py).
    ("stream_bytes", "API RSS per open SSE stream", "<", 20_000, "B"),
    ("stream_submit_ratio", "submits/s with the streams open / without", ">=", 0.8, "x"),
    ("stream_finish_p99_ms", "job finished -> its SSE end read, p99", "<", 10.0, "ms"),
]
# (c) per image case (issue 22): API median / bare job function median, and the job's run in the worker
# (started_at -> finished_at: the function and the worker's bookkeeping around it) / bare; jobs/min through
# the API with N worker processes / N bare processes. Same run.
IMAGE_RATIO_TARGET = 1.05
IMAGE_RATIO_PREFIX = "image_overhead_ratio:"
IMAGE_RUN_PREFIX = "image_run_ratio:"
IMAGE_THROUGHPUT_TARGET = 0.9
IMAGE_THROUGHPUT_PREFIX = "image_throughput_ratio:"
# The same two bars for the multipart client path (files as parts, a waiting submit with ?inline=false, the
# result PNG from the artifacts route); the prefixes above are the JSON path's (base64 in, base64 inlined out).
IMAGE_MP_RATIO_PREFIX = "image_multipart_overhead_ratio:"
IMAGE_MP_THROUGHPUT_PREFIX = "image_multipart_throughput_ratio:"


def image_targets(values: dict[str, float | None]) -> list[tuple[str, str, str, float, str]]:
    out = []
    for k in values:
        if k.startswith(IMAGE_RATIO_PREFIX):
            out.append((k, f"{k.removeprefix(IMAGE_RATIO_PREFIX)}: API / bare", "<=", IMAGE_RATIO_TARGET, "x"))
        elif k.startswith(IMAGE_RUN_PREFIX):
            out.append((k, f"{k.removeprefix(IMAGE_RUN_PREFIX)}: run in worker / bare", "<=", IMAGE_RATIO_TARGET,
                        "x"))
        elif k.startswith(IMAGE_THROUGHPUT_PREFIX):
            label, _, n = k.removeprefix(IMAGE_THROUGHPUT_PREFIX).rpartition(":")
            out.append((k, f"{label}: jobs/min, {n} API procs / {n} bare", ">=", IMAGE_THROUGHPUT_TARGET, "x"))
        elif k.startswith(IMAGE_MP_RATIO_PREFIX):
            out.append((k, f"{k.removeprefix(IMAGE_MP_RATIO_PREFIX)}: multipart API / bare", "<=",
                        IMAGE_RATIO_TARGET, "x"))
        elif k.startswith(IMAGE_MP_THROUGHPUT_PREFIX):
            label, _, n = k.removeprefix(IMAGE_MP_THROUGHPUT_PREFIX).rpartition(":")
            out.append((k, f"{label}: multipart jobs/min, {n}p / {n} bare", ">=", IMAGE_THROUGHPUT_TARGET, "x"))
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except (OSError, IndexError):
        redis_version = "?"
    return {
        "host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
        "python": platform.python_version(), "redis": redis_version.removeprefix("v="),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {k: None for k, *_ in TARGETS}
    sub = result.get("submit")
    if sub:
        out["submit_throughput_ratio"] = round(sub["submit"]["rps"] / sub["bare"]["rps"], 3)
        out["submit_p99_ratio"] = round(sub["submit"]["p99_ms"] / sub["bare"]["p99_ms"], 3)
    e2e = result.get("e2e")
    if e2e:
        rt = e2e["round_trip"]
        out["e2e_p50_overhead_ms"] = round(rt["api_sse"]["p50_ms"] - rt["raw_celery"]["p50_ms"], 3)
        out["sustained_ratio"] = round(e2e["sustained"]["api"]["jobs_per_s"] / e2e["sustained"]["raw"]["jobs_per_s"], 3)
        out["redis_bytes_per_job"] = e2e["memory"]["bytes_per_finished_job"]
    streams = result.get("streams")
    if streams:
        out["stream_bytes"] = streams["bytes_per_stream"]
        out["stream_submit_ratio"] = streams["submit_ratio_with_streams"]
        out["stream_finish_p99_ms"] = streams["finish_to_client"]["p99_ms"]
    for label, case in (result.get("images") or {}).get("cases", {}).items():
        if "overhead_ratio" in case:  # the JSON path (absent when only multipart was measured)
            out[IMAGE_RATIO_PREFIX + label] = case["overhead_ratio"]
            out[IMAGE_RUN_PREFIX + label] = round(case["api_segments_ms"]["run"] / case["bare_ms"], 3)
        for n, api in case.get("throughput", {}).items():
            bare = case.get("bare_throughput", {}).get(n)
            if bare:
                out[f"{IMAGE_THROUGHPUT_PREFIX}{label}:{n}"] = round(api["jobs_per_min"] / bare["jobs_per_min"], 3)
        mp = case.get("multipart")
        if mp:
            out[IMAGE_MP_RATIO_PREFIX + label] = mp["overhead_ratio"]
            for n, api in mp.get("throughput", {}).items():
                bare = case.get("bare_throughput", {}).get(n)
                if bare:
                    out[f"{IMAGE_MP_THROUGHPUT_PREFIX}{label}:{n}"] = round(api["jobs_per_min"] / bare["jobs_per_min"],
                                                                            3)
    return out


def verdicts(values: dict[str, float | None]) -> dict[str, str]:
    out = {}
    for key, _, op, target, _ in TARGETS + image_targets(values):
        v = values.get(key)
        if v is None:
            out[key] = "n/a"
        else:
            ok = {">=": v >= target, "<=": v <= target, "<": v < target}[op]
            out[key] = "PASS" if ok else "MISS"
    return out


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    m = result["machine"]
    add("")
    add(f"aitasks platform benchmark  {result['started_at']}  ({'quick' if result['quick'] else 'full'} run, "
        f"{result['elapsed_s']:.0f} s)")
    add(f"machine: {m['cores']} cores, {m['cpu']}; Python {m['python']}, Redis {m['redis']}; "
        f"load average {result['load_before']} before, {result['load_after']} after")
    sub = result.get("submit")
    if sub:
        add("")
        add(f"(a) submit over HTTP: {sub['generator']}, {sub['connections']} connections, "
            f"best of {sub['rounds']} x {sub['duration_s']:g} s, one uvicorn process each")
        add(f"    {'':<34}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for label, name in (("bare", "bare FastAPI endpoint"), ("submit", "POST /api/v1/tasks/submit/")):
            r = sub[label]
            add(f"    {name:<34}{r['rps']:>9.0f}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}"
                f"{r['errors']:>8}")
    e2e = result.get("e2e")
    if e2e:
        rt, su, mem = e2e["round_trip"], e2e["sustained"], e2e["memory"]
        add("")
        add(f"(b) no-op job, worker {e2e['worker_pool']} x {e2e['worker_concurrency']}: round trip one at a "
            f"time (n={rt['api_sse']['n']}), sustained {su['api']['jobs']} jobs at once")
        add(f"    {'':<34}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'jobs/s':>9}")
        add(f"    {'raw Celery delay().get()':<34}{rt['raw_celery']['p50_ms']:>9.2f}{rt['raw_celery']['p90_ms']:>9.2f}"
            f"{rt['raw_celery']['p99_ms']:>9.2f}{su['raw']['jobs_per_s']:>9.0f}")
        add(f"    {'aitasks submit -> SUCCESS on SSE':<34}{rt['api_sse']['p50_ms']:>9.2f}{rt['api_sse']['p90_ms']:>9.2f}"
            f"{rt['api_sse']['p99_ms']:>9.2f}{su['api']['jobs_per_s']:>9.0f}")
        add(f"    Redis memory per finished job: {mem['bytes_per_finished_job']:.0f} bytes "
            f"(used_memory {mem['used_memory_before']} -> {mem['used_memory_after']} over {mem['jobs']} jobs; "
            f"one job record: {mem['job_record_bytes']} bytes; raw Celery result: "
            f"{mem['raw_celery_result_bytes_per_job']:.0f} bytes/job)")
    images = result.get("images")
    if images:
        add("")
        lines.extend(render_images(images))
    add("")
    add("ratios against the targets (information, not assertions)")
    values, marks = result["ratios"], result["verdicts"]
    for key, desc, op, target, unit in TARGETS + image_targets(values):
        v = values.get(key)
        shown = "n/a" if v is None else (f"{v:.2f}{unit}" if unit == "x" else f"{v:.1f} {unit}")
        add(f"    {desc:<52}{shown:>12}   target {op} {target:g}{unit if unit == 'x' else ' ' + unit}"
            f"   {marks[key]}")
    add("")
    return "\n".join(lines)


def render_images(images: dict[str, Any]) -> list[str]:
    """Part (c): per client path (JSON: base64 in, `Prefer: wait`, base64 inlined out; multipart: files as
    parts, the SSE stream until the end, the result PNG from the artifacts route), the bare call next to it."""
    lines: list[str] = []
    add = lines.append
    cases = images["cases"]
    cs = images["concurrencies"]
    paths = images.get("paths", ["json"])
    how = {"json": "JSON: base64 in, submit with `Prefer: wait`, the inlined base64 result decoded",
           "multipart": "multipart: files as parts, submit (202), the SSE stream to the end, the result PNG "
                        "from /artifacts/{name}"}

    def part(c: dict[str, Any], path: str) -> dict[str, Any]:
        return c if path == "json" else c[path]

    add(f"(c) image jobs, 512x512: one at a time (median of {next(iter(cases.values()))['samples']}), the bare "
        f"job function in this process vs through the API, PNG bytes in to PNG bytes out; API time split "
        f"by the job record's timestamps (ms); API CPU: the API process's CPU per round trip")
    for path in paths:
        add(f"    {how[path]}")
        add(f"    {'':<28}{'bare ms':>9}{'API ms':>9}{'ratio':>8}{'submit':>8}{'queue':>7}{'run':>8}{'answer':>8}"
            f"{'job fn':>8}{'API CPU':>9}")
        for label, c in cases.items():
            p = part(c, path)
            seg = p["api_segments_ms"]
            add(f"    {label:<28}{c['bare_ms']:>9.1f}{p['api_ms']:>9.1f}{p['overhead_ratio']:>7.2f}x"
                f"{seg['submit']:>8.1f}{seg['queue']:>7.1f}{seg['run']:>8.1f}{seg['answer']:>8.1f}"
                f"{seg['job_function']:>8.1f}{p.get('api_cpu_ms_per_job', float('nan')):>9.2f}")
    if "multipart" in paths:
        add("    the API's CPU per multipart job by request (median ms: submit / SSE stream / artifact fetch), and "
            "its CPU with no request open (ms per s, during the bare runs)")
        for label, c in cases.items():
            steps = c["multipart"].get("api_cpu_ms_by_request", {})
            add(f"    {label:<28}" + " / ".join(f"{v:.2f}" for v in steps.values())
                + f"   idle {c.get('api_idle_cpu_ms_per_s') or float('nan'):.2f} ms/s")
    rounds = images.get("throughput_rounds", 1)
    add(f"    jobs per minute, {images['throughput_jobs']} jobs at once (submitted, finished as Redis counts them): "
        f"through the API with N worker pool processes on the queue, and N bare processes"
        + (f"; best of {rounds} rounds" if rounds > 1 else ""))
    add(f"    {'':<38}" + "".join(f"{f'API {n}p':>9}{f'bare {n}p':>9}{'ratio':>7}" for n in cs))
    for label, c in cases.items():
        for path in paths:
            cells = []
            for n in cs:
                api = part(c, path)["throughput"][str(n)]["jobs_per_min"]
                bare = c["bare_throughput"][str(n)]["jobs_per_min"]
                cells.append(f"{api:>9.0f}{bare:>9.0f}{api / bare:>6.2f}x")
            add(f"    {label:<28}{path:<10}" + "".join(cells))
    add("    cores taken by other work on the machine during those batches (API batch / bare batch)")
    add(f"    {'':<38}" + "".join(f"{f'{n}p':>14}" for n in cs))
    for label, c in cases.items():
        for path in paths:
            cells = []
            for n in cs:
                api = part(c, path)["throughput"][str(n)].get("others_cores", float("nan"))
                bare = c["bare_throughput"][str(n)].get("others_cores", float("nan"))
                cells.append(f"{f'{api:.2f} / {bare:.2f}':>14}")
            add(f"    {label:<28}{path:<10}" + "".join(cells))
    add("    CPU ms per job in the API batches (1 worker process): API, Redis, worker main process, pool process")
    for label, c in cases.items():
        for path in paths:
            cpu = part(c, path)["throughput"][str(cs[0])]["cpu_ms_per_job"]
            add(f"    {label:<28}{path:<10}{cpu['api']:>9.1f}{cpu['redis']:>9.1f}{cpu['worker_main']:>9.1f}"
                f"{cpu['worker_pool']:>9.1f}")
    return lines


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
