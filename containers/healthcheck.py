"""The image's HEALTHCHECK: what "healthy" means depends on what the container runs (its PID 1's command).

- ``aitasks api``: ``GET /healthz`` on AITASKS_PORT answers 200;
- ``aitasks worker``: a worker of this host (the container's hostname) has a live heartbeat in Redis (the
  key the API's ``/readyz`` counts: it expires 3 heartbeats after the worker stops beating);
- ``celery flower``: its port answers HTTP at all (401 without the password is alive).
Exit 0 healthy, 1 not; one line on stdout says why (podman/docker inspect keeps it).
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request


def command() -> list[str]:
    with open("/proc/1/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def option(argv: list[str], name: str, default: str) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return default


def check_worker() -> str | None:
    import orjson

    from aitasks.jobs import keys
    from aitasks.settings import get_settings
    import redis

    client = redis.Redis.from_url(get_settings().resolved_redis_url(), socket_timeout=5)
    names = [n.decode() for n in client.zrange(keys.WORKERS, 0, -1)]
    values = client.mget([keys.worker(n) for n in names]) if names else []
    host = socket.gethostname()
    if any(v and orjson.loads(v).get("host") == host for v in values):
        return None
    return f"no live worker heartbeat from {host} in Redis"


def main() -> int:
    argv = command()
    try:
        if "worker" in argv:
            problem = check_worker()
        elif "flower" in argv:
            port = option(argv, "--port", "5555")
            status = http_status(f"http://127.0.0.1:{port}/healthcheck")
            problem = None if status in (200, 401) else f"flower answered {status}"
        else:
            port = option(argv, "--port", os.environ.get("AITASKS_PORT", "8000"))
            status = http_status(f"http://127.0.0.1:{port}/healthz")
            problem = None if status == 200 else f"/healthz answered {status}"
    except Exception as exc:  # unreachable, refused, timed out: unhealthy, with the reason
        problem = f"{type(exc).__name__}: {exc}"
    print(problem or "healthy")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
