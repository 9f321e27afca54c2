"""The API's CPU per request, by kind, around one finished image job: what a request costs the API by itself
next to what its payload adds (the image jobs' two client paths, bench/image_bench.py).

    .venv/bin/python -m bench.api_request_cost [--requests 1000]

Starts a private stack (API, one cpu worker), runs one `background_removal` job on the 512x512 astronaut,
then sends each kind of request ``--requests`` times one after the other on one keep-alive connection (the
SSE stream, of the finished job, and the submits: fewer; the last submit waits for its job, ``?inline=false``) and prints the API process's CPU per request
(its threads' scheduler time; user and system from /proc/<pid>/stat) and the wall time per request.
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
import time
from pathlib import Path

import orjson

from bench import image_bench as ib
from bench.procs import Cleanup
from bench.stacks import AitasksStack


def _user_sys_s(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text()
    parts = fields[fields.rindex(")") + 2:].split()
    return int(parts[11]) / 100, int(parts[12]) / 100  # clock ticks (USER_HZ 100 on Linux)


def _wait_ended(conn: http.client.HTTPConnection, auth: dict[str, str], task_id: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn.request("GET", f"/api/v1/tasks/{task_id}/status/", headers=auth)
        if orjson.loads(conn.getresponse().read())["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"job {task_id} did not end in {timeout_s:g} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api_request_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000, help="GETs of each kind (default 1000)")
    args = p.parse_args(argv)
    cleanup = Cleanup()
    try:
        root = Path(tempfile.mkdtemp(prefix="aitasks-request-cost-"))
        pics = ib.pictures()
        stack = AitasksStack("cost", root / "stack", root / "logs", cleanup).start_api()
        key = stack.new_key()
        ib.start_workers(stack, 1)
        assert stack.api is not None
        pid = stack.api.pid
        case = ib.CASES[0]
        ib.MultipartClient(stack.port, key).round_trip(case, pics)  # warm
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=120)
        auth = {"Authorization": f"Bearer {key}"}
        multipart = ib.multipart_body(case, pics)
        conn.request("POST", ib.SUBMIT_PATH, body=multipart, headers={**auth, "Content-Type": ib.MULTIPART_TYPE})
        task_id = orjson.loads(conn.getresponse().read())["task_id"]
        time.sleep(3)  # finished by then on any machine this runs on (the job takes well under a second)
        conn.request("GET", f"/api/v1/tasks/{task_id}/result/?inline=false", headers=auth)
        name = orjson.loads(conn.getresponse().read())["result"]["image_artifact"]
        n = args.requests
        kinds = [
            ("GET status", "GET", f"/api/v1/tasks/{task_id}/status/", None, {}, n),
            ("GET result ?inline=false", "GET", f"/api/v1/tasks/{task_id}/result/?inline=false", None, {}, n),
            ("GET result (PNG inlined)", "GET", f"/api/v1/tasks/{task_id}/result/", None, {}, n),
            ("GET artifacts/<result PNG>", "GET", f"/api/v1/tasks/{task_id}/artifacts/{name}", None, {}, n),
            ("GET events (job ended)", "GET", f"/api/v1/tasks/{task_id}/events", None,
             {"Accept": "text/event-stream"}, max(1, n // 3)),
            ("POST submit, multipart (202)", "POST", ib.SUBMIT_PATH, multipart,
             {"Content-Type": ib.MULTIPART_TYPE}, max(1, n // 50)),
            ("POST submit, JSON base64 (202)", "POST", ib.SUBMIT_PATH, ib.payload(case, pics),
             {"Content-Type": "application/json"}, max(1, n // 50)),
            # Waits for the job (~65 ms): the API's CPU while it waits (the job's events, the answer) included.
            ("POST submit, multipart, waits (200)", "POST", ib.SUBMIT_PATH + "?inline=false", multipart,
             {"Content-Type": ib.MULTIPART_TYPE, "Prefer": "wait=60"}, max(1, n // 50)),
        ]
        print(f"{'':<32}{'bytes':>9}{'API CPU ms':>12}{'user':>7}{'sys':>7}{'wall ms':>9}")
        last = b""
        for label, method, path, body, headers, count in kinds:
            if "Prefer" in headers:  # the submits above queued jobs: wait for the last, so none runs meanwhile
                _wait_ended(conn, auth, orjson.loads(last)["task_id"])
            u0, s0 = _user_sys_s(pid)
            c0, t0 = ib._thread_cpu_s(pid), time.perf_counter()
            size = 0
            for _ in range(count):
                conn.request(method, path, body=body, headers={**auth, **headers})
                last = conn.getresponse().read()
                size = len(last)
            c1, t1 = ib._thread_cpu_s(pid), time.perf_counter()
            u1, s1 = _user_sys_s(pid)
            print(f"{label:<32}{size:>9}{(c1 - c0) / count * 1000:>12.2f}{(u1 - u0) / count * 1000:>7.2f}"
                  f"{(s1 - s0) / count * 1000:>7.2f}{(t1 - t0) / count * 1000:>9.2f}", flush=True)
    finally:
        cleanup.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
