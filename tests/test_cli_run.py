"""`aitasks run` (what `make run` calls) as a user meets it: one command starts a private Redis, the
workers and the API, prints the URL and a working key; Ctrl-C stops every process; the jobs it
accepted are still there when it starts again on the same data folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import redis

from aitasks.service.redis_server import RedisServer, free_port
from stack import poll, submit, wait_status

pytestmark = pytest.mark.slow  # starts the whole service (`aitasks run`) again and again


def descendants(root: int) -> dict[int, str]:
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if rest[0] != "Z":
            parents[int(entry.name)], names[int(entry.name)] = int(rest[1]), name
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = names[pid]
                frontier.append(pid)
    return found


class RunningService:
    """`aitasks run` in its own process group, with its output collected as it comes."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("AITASKS_")}
        full.update({"AITASKS_DATA_DIR": str(data_dir), "AITASKS_PORT": str(self.port),
                     "AITASKS_WORKER_HEARTBEAT_S": "0.5", "PYTHONUNBUFFERED": "1", **(env or {})})
        self.proc = subprocess.Popen([sys.executable, "-m", "aitasks.cli.main", "run", "--tenant", "cli-test",
                                      *extra_args],
                                     env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_banner(self) -> tuple[str, str]:
        def banner() -> re.Match[str] | None:
            assert self.proc.poll() is None, self.output
            return re.search(r"API key \(tenant 'cli-test'\): (\S+)", self.output)

        key = poll(banner, "the banner with the key", timeout_s=120).group(1)
        url = re.search(r"aitasks is running at (http://\S+)", self.output)
        assert url, self.output
        return url.group(1), key

    def tree(self) -> dict[int, str]:
        """Pid -> command name of every process started under `aitasks run` and still alive."""
        return descendants(self.proc.pid)

    def interrupt(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError("aitasks run did not stop within 60 s of Ctrl-C:\n" + self.output) from None
        finally:
            self._reader.join(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def test_run_starts_everything_ctrl_c_stops_it_and_jobs_survive_a_restart(tmp_path):
    data = tmp_path / "var"
    service = RunningService(data)
    try:
        url, key = service.wait_banner()
        assert url == f"http://127.0.0.1:{service.port}"
        assert "private Redis on redis://127.0.0.1:" in service.output
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            done = submit(c, parameters={"steps": 2})
            assert wait_status(c, done)["status"] == "SUCCESS"
            assert c.get("/readyz").json()["workers"] == {"cpu": 1, "gpu": 1}
        started = service.tree()
        assert "redis-server" in started.values(), started
        assert len(started) >= 6, started  # redis-server, two workers with a pool process each, the API
    finally:
        code = service.interrupt()
    assert code == 0, service.output
    assert "stopped." in service.output
    left = {pid for pid in started if Path(f"/proc/{pid}").exists()
            and (Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z")}
    assert not left, f"processes left behind after Ctrl-C: {left}"
    assert (data / "redis" / "appendonlydir").is_dir()

    again = RunningService(data)
    try:
        url, key2 = again.wait_banner()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            # The first run's key and its finished job are still there: Redis kept its append-only file.
            body = c.get(f"/api/v1/tasks/{done}/result/").json()
            assert body["status"] == "SUCCESS" and body["result"]["parameters"]["steps"] == 2
        assert key2 != key
    finally:
        assert again.interrupt() == 0, again.output


def test_run_with_redis_url_starts_no_redis(tmp_path):
    redis_server = RedisServer(tmp_path / "external").start()
    try:
        service = RunningService(tmp_path / "var", env={"AITASKS_REDIS_URL": redis_server.url})
        try:
            url, key = service.wait_banner()
            assert f"using Redis at {redis_server.url}" in service.output
            assert "private Redis" not in service.output
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
                assert wait_status(c, submit(c))["status"] == "SUCCESS"
            assert "redis-server" not in service.tree().values(), service.tree()
        finally:
            assert service.interrupt() == 0, service.output
        assert redis.Redis.from_url(redis_server.url).ping()  # the user's Redis is left running
    finally:
        redis_server.stop()


def test_run_refuses_a_busy_port(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AITASKS_")}
        env.update({"AITASKS_PORT": str(port), "AITASKS_DATA_DIR": str(tmp_path / "var")})
        r = subprocess.run([sys.executable, "-m", "aitasks.cli.main", "run"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert r.returncode == 2
    assert f"port {port}" in r.stdout + r.stderr and "AITASKS_PORT" in r.stdout + r.stderr


def test_run_with_flower_shows_the_workers_in_flower(tmp_path):
    flower_port = free_port()
    service = RunningService(tmp_path / "var", extra_args=("--flower", "--flower-port", str(flower_port)))
    try:
        url, key = service.wait_banner()
        assert f"Flower (Celery monitoring): http://127.0.0.1:{flower_port}" in service.output
        flower = f"http://127.0.0.1:{flower_port}"
        poll(lambda: httpx.get(f"{flower}/healthcheck", timeout=5).text == "OK", "Flower to answer", timeout_s=60)

        def workers() -> set[str]:
            page = httpx.get(f"{flower}/workers", timeout=10).text  # Flower's own page, as a user opens it
            return set(re.findall(r"\b(?:cpu|gpu)\.\d+@[\w.-]+", page))

        seen = poll(lambda: (w := workers()) and {h.split(".")[0] for h in w} >= {"cpu", "gpu"} and w,
                    "Flower to see both workers", timeout_s=60)
        assert any(h.startswith("cpu.") for h in seen) and any(h.startswith("gpu.") for h in seen)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            task_id = submit(c)
            assert wait_status(c, task_id)["status"] == "SUCCESS"
        # The job shows in Flower's task list (task events are on).
        datatable = (f"{flower}/tasks/datatable?draw=1&start=0&length=50&search[value]=&order[0][column]=0"
                     "&order[0][dir]=desc&columns[0][data]=name")
        poll(lambda: task_id in httpx.get(datatable, timeout=10).text, "Flower to list the job", timeout_s=60)
    finally:
        assert service.interrupt() == 0, service.output
