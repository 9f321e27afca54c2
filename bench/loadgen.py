"""HTTP load at a fixed concurrency for a fixed time: `wrk` when it is there (installed with apt-get when
we may), else an in-process asyncio generator. Both report requests/s and latency percentiles."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.httpclient import Connection, build_request
from bench.stats import percentile


@dataclass
class LoadResult:
    generator: str
    label: str
    connections: int
    duration_s: float
    requests: int
    errors: int  # socket errors, timeouts and non-2xx answers
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_wrk(allow_install: bool = True) -> str | None:
    """The path of wrk; installs Debian's package when missing and we are root (or have sudo -n)."""
    found = shutil.which("wrk")
    if found or not allow_install or not shutil.which("apt-get"):
        return found
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        prefix = ["sudo", "-n"]
    else:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("  wrk not found: installing it with apt-get", flush=True)
    install = [*prefix, "apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    m = re.search(r"wrk [^\s]+", out.stdout + out.stderr)
    return m.group(0) if m else "wrk"


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal for ASCII text


def write_wrk_script(path: Path, body: str, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    lines.append("""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
""")
    path.write_text("\n".join(lines))
    return path


def run_wrk(wrk: str, label: str, url: str, script: Path, connections: int, duration_s: float,
            threads: int = 2) -> LoadResult:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s",
            "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line.removeprefix("BENCHJSON "))
    secs = r["duration_us"] / 1e6
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return LoadResult(f"wrk -t{threads}", label, connections, round(secs, 2), r["requests"], errors,
                      round(r["requests"] / secs, 1), r["p50_us"] / 1000, r["p90_us"] / 1000,
                      r["p99_us"] / 1000, r["max_us"] / 1000)


async def _python_load(host: str, port: int, request: bytes, connections: int,
                       duration_s: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s

    async def one() -> None:
        nonlocal errors
        conn = await Connection(host, port).open()
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status, _ = await conn.send(request)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    await conn.close()
                    conn.writer = None
                    continue
                latencies.append(time.perf_counter() - t0)
                if not 200 <= status < 300:
                    errors += 1
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return latencies, errors, time.perf_counter() - start


def run_python(label: str, url: str, body: str, headers: dict[str, str], connections: int,
               duration_s: float) -> LoadResult:
    m = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    assert m, url
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    request = build_request("POST", host, port, path, body.encode(), headers)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    lat, errors, secs = runner(_python_load(host, port, request, connections, duration_s))
    ms = [x * 1000 for x in lat]
    return LoadResult("python-asyncio", label, connections, round(secs, 2), len(lat), errors,
                      round(len(lat) / secs, 1), round(percentile(ms, 50), 3), round(percentile(ms, 90), 3),
                      round(percentile(ms, 99), 3), round(max(ms, default=0), 3))
