"""`aitasks run` (what `make run` calls) as a user meets it: one command starts a private Redis, the
workers and the API, prints the URL and a working key; Ctrl-C stops every process; the jobs it
accepted are still there when it starts again on the same data folder."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

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
                     "AITASKS_WORKER_HEARTBEAT_S": "0.5", "AITASKS_ENABLE_DIAGNOSTIC": "true",
                     "PYTHONUNBUFFERED": "1", **(env or {})})
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
        url, key = self.wait_banner_of_a_restart()
        assert key is not None, self.output
        return url, key

    def wait_banner_of_a_restart(self) -> tuple[str, str | None]:
        """The URL and the key made at this start (None when the tenant already had one)."""
        def banner() -> re.Match[str] | None:
            assert self.proc.poll() is None, self.output
            return re.search(r"aitasks is running at (http://\S+)", self.output)

        url = poll(banner, "the banner", timeout_s=120).group(1)
        key = re.search(r"API key \(tenant 'cli-test'\): (\S+)", self.output)
        return url, key.group(1) if key else None

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
        url, key2 = again.wait_banner_of_a_restart()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            # The first run's key and its finished job are still there: Redis kept its append-only file.
            body = c.get(f"/api/v1/tasks/{done}/result/").json()
            assert body["status"] == "SUCCESS" and body["result"]["parameters"]["steps"] == 2
        # docs/security.md, item 13: no second key; the banner says how to make one.
        assert key2 is None, again.output
        assert "already has an API key; it cannot be shown again" in again.output
        assert "keys create --tenant cli-test" in again.output
    finally:
        assert again.interrupt() == 0, again.output


def test_the_private_redis_is_locked_and_restarted_when_killed(tmp_path):
    """docs/security.md, item 8: a password only the URL file (0600) holds, CONFIG off, a memory cap;
    SIGKILLed, the supervisor starts it again and the API and workers go on with it."""
    data = tmp_path / "var"
    service = RunningService(data, env={"AITASKS_REDIS_MAXMEMORY_MB": "256"})
    try:
        url, key = service.wait_banner()
        url_file = data / "run" / "redis.url"
        assert stat.S_IMODE(url_file.stat().st_mode) == 0o600
        redis_url = url_file.read_text().strip()
        parts = urlsplit(redis_url)
        assert parts.password and parts.password not in service.output
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=parts.port).ping()
        r = redis.Redis.from_url(redis_url)
        with pytest.raises(redis.ResponseError, match="unknown command"):
            r.execute_command("CONFIG", "GET", "maxmemory")
        memory = r.info("memory")
        assert memory["maxmemory"] == 256 * 1024 * 1024 and memory["maxmemory_policy"] == "noeviction"
        for pid in service.tree():  # the password is on no command line (any local user reads those)
            try:
                assert parts.password not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
            except FileNotFoundError:
                pass

        killed = next(pid for pid, name in service.tree().items() if name == "redis-server")
        os.kill(killed, signal.SIGKILL)
        poll(lambda: "redis-server exited" in service.output, "the supervisor to see Redis die", timeout_s=30)
        poll(lambda: any(name == "redis-server" and pid != killed for pid, name in service.tree().items()),
             "a new redis-server", timeout_s=30)
        def answers() -> bool:
            try:
                return bool(redis.Redis.from_url(redis_url).ping())
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        poll(answers, "the same URL to work again", timeout_s=30)

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            def accepted() -> str | None:
                answer = c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic"})
                return str(answer.json()["task_id"]) if answer.status_code == 202 else None

            task_id = poll(accepted, "the API to accept a job again", timeout_s=60, interval_s=0.5)
            assert wait_status(c, task_id, timeout_s=90)["status"] == "SUCCESS"
        assert service.proc.poll() is None, service.output
    finally:
        assert service.interrupt() == 0, service.output


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
