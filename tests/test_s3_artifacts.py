"""The S3-compatible artifact store (``AITASKS_ARTIFACTS_URL=s3://bucket/prefix``, jobs/s3_artifacts.py).

The server: moto's S3 server (``python -m moto.server``, the ``moto[server]`` package), a real HTTP server
speaking the S3 API, started by these tests as its own process on a free loopback port. No MinIO binary is
on the registries; nothing here is mocked in-process: boto3 talks HTTP to it, as it would to MinIO or AWS.

First the store's operations, straight on the bucket; then (slow) a real stack whose API and worker have
different data folders, so every file a job reads or writes can only have gone through the bucket.
"""

from __future__ import annotations

import hashlib
import io
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import replicate
from pydantic import ValidationError

from aitasks.jobs.artifacts import ArtifactStore, ArtifactStream, open_artifacts
from aitasks.jobs.storage_quota import MeteredArtifacts
from aitasks.jobs.files import FileRef
from aitasks.jobs.models import Job
from aitasks.errors import ServiceUnavailable, TransientJobError
from aitasks.jobs.s3_artifacts import ArtifactStoreUnavailable, S3ArtifactStore
from aitasks.jobs.store import JobStore
from aitasks.service.logged_process import LoggedProcess
from aitasks.service.redis_server import free_port
from aitasks.settings import Settings
from aitasks.worker.context import JobContext
from pictures import b64, coffee, png
from stack import Stack, submit, wait_status

BUCKET = "aitasks-test"
CREDENTIALS = {"AITASKS_S3_ACCESS_KEY_ID": "testing", "AITASKS_S3_SECRET_ACCESS_KEY": "testing",
               "AITASKS_S3_REGION": "us-east-1"}


class S3Server:
    """moto's S3 server in its own process on a free loopback port."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.proc = LoggedProcess("moto-s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                              "-p", str(self.port)], {"PATH": "/usr/bin:/bin"}, root)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self.proc.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url, timeout=2)
                return self
            except httpx.HTTPError:
                assert self.proc.alive(), self.proc.tail()
                time.sleep(0.2)
        raise RuntimeError(f"moto's S3 server did not answer:\n{self.proc.tail()}")

    def env(self, prefix: str) -> dict[str, str]:
        return {"AITASKS_ARTIFACTS_URL": f"s3://{BUCKET}/{prefix}", "AITASKS_S3_ENDPOINT_URL": self.url,
                **CREDENTIALS}

    def settings(self, prefix: str) -> Settings:
        return Settings(**{k.removeprefix("AITASKS_").lower(): v for k, v in self.env(prefix).items()})


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    try:
        store = unmetered(open_artifacts(server.settings("setup")))
        assert isinstance(store, S3ArtifactStore)
        store.client.create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.proc.stop(signal.SIGTERM, 10)


@pytest.fixture
def store(s3: S3Server) -> S3ArtifactStore:
    """A store on a prefix of its own (tests share the bucket, never a prefix)."""
    opened = unmetered(open_artifacts(s3.settings(f"t/{uuid.uuid4().hex[:8]}")))
    assert isinstance(opened, S3ArtifactStore)
    return opened


def unmetered(store: Any) -> Any:
    """The backend under the storage meter open_artifacts wraps every store in (jobs/storage_quota.py)."""
    assert isinstance(store, MeteredArtifacts)
    return store.inner


def keys_under(store: S3ArtifactStore, prefix: str = "") -> list[str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.base + prefix)
    return sorted(o["Key"].removeprefix(store.base) for page in pages for o in page.get("Contents", []))


# --- settings ------------------------------------------------------------------------------------


def test_the_folder_stays_the_default_and_a_bad_url_names_the_setting(tmp_path: Path) -> None:
    default = unmetered(open_artifacts(Settings(data_dir=tmp_path)))
    assert isinstance(default, ArtifactStore) and default.root == (tmp_path / "artifacts").resolve()
    for bad in ("http://bucket/x", "s3://", "s3://UPPER/x", "/srv/artifacts"):
        with pytest.raises(ValidationError) as err:
            Settings(artifacts_url=bad)
        assert "artifacts_url" in str(err.value)


# --- the store's operations ------------------------------------------------------------------------


def test_put_get_overwrite_stream_and_delete(store: S3ArtifactStore) -> None:
    job = str(uuid.uuid4())
    first = store.save(job, "result.png", b"old bytes")
    assert (first.name, first.media_type, first.bytes) == ("result.png", "image/png", 9)
    again = store.save(job, "result.png", b"new bytes, longer")  # a run again overwrites its outputs
    assert again.bytes == 17 and store.read(job, "result.png") == b"new bytes, longer"
    assert store.save(job, "data.bin", b"x", "application/x-custom").media_type == "application/x-custom"
    assert keys_under(store) == [f"{job}/data.bin", f"{job}/result.png"]

    big = bytes(range(256)) * 4096 * 3  # 3 MiB: several chunks
    store.save(job, "big.bin", big)
    stream = store.download(job, "big.bin")
    assert isinstance(stream, ArtifactStream) and stream.size == len(big)
    chunks = list(stream.chunks)
    stream.close()
    assert len(chunks) > 1 and b"".join(chunks) == big

    assert store.download(job, "absent.png") is None
    with pytest.raises(FileNotFoundError):
        store.read(job, "absent.png")
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ValueError):
            store.save(job, bad, b"x")

    store.delete_job(job)
    assert keys_under(store) == [] and store.download(job, "result.png") is None


def test_local_copy_for_a_library_that_wants_a_path(store: S3ArtifactStore, tmp_path: Path) -> None:
    job = str(uuid.uuid4())
    store.save(job, "input-image.png", b"\x89PNG pretend")
    path = store.local_copy(job, "input-image.png", tmp_path / "scratch")
    assert path == tmp_path / "scratch" / "input-image.png" and path.read_bytes() == b"\x89PNG pretend"
    assert [p.name for p in (tmp_path / "scratch").iterdir()] == ["input-image.png"]  # no temporary left
    with pytest.raises(FileNotFoundError):
        store.local_copy(job, "missing.png", tmp_path / "scratch")


def test_a_job_context_gives_a_scratch_copy_and_removes_it(store: S3ArtifactStore, tmp_path: Path) -> None:
    job = Job(id=str(uuid.uuid4()), type="diagnostic", tenant="t", queue="cpu")
    store.save(job.id, "input-image.png", b"pixels")
    unused = redis.Redis(host="127.0.0.1", port=1)  # input_path never touches Redis
    ctx = JobContext(job, JobStore(unused), store, attempt=1, delivery=1)
    path = ctx.input_path(FileRef(artifact="input-image.png", media_type="image/png", bytes=6))
    assert path.read_bytes() == b"pixels" and path.parent == ctx.scratch
    ctx.close()
    assert not ctx.scratch.exists()

    local = ArtifactStore(tmp_path)  # the folder store hands out the stored file itself, and keeps it
    local.save(job.id, "input-image.png", b"pixels")
    ctx = JobContext(job, JobStore(unused), local, attempt=1, delivery=1)
    assert ctx.input_path(FileRef(artifact="input-image.png", media_type="image/png", bytes=6)) == \
        local.path(job.id, "input-image.png")
    ctx.close()
    assert local.read(job.id, "input-image.png") == b"pixels"


def test_uploaded_files_live_apart_per_tenant(store: S3ArtifactStore) -> None:
    store.save_file("acme", "f1", b"one")
    store.save_file("..", "f1", b"dots")  # a tenant name is never a key part: its digest is
    assert store.read_file("acme", "f1") == b"one" and store.read_file("..", "f1") == b"dots"
    assert all(k.startswith("files/") and ".." not in k for k in keys_under(store))
    store.delete_file("acme", "f1")
    with pytest.raises(FileNotFoundError):
        store.read_file("acme", "f1")
    assert store.read_file("..", "f1") == b"dots"


def test_job_files_list_every_job_s_files_with_their_sizes(store: S3ArtifactStore, tmp_path: Path) -> None:
    """What the storage recount reads (worker/storage_recount.py): the same answer from the bucket and the
    folder store, a job's files together, without the uploads' area or the touch markers."""
    a, b = sorted(str(uuid.uuid4()) for _ in range(2))
    folder = ArtifactStore(tmp_path / "artifacts")
    for backend in (store, folder):
        backend.save(a, "in.png", b"x" * 10)
        backend.save(a, "out.png", b"x" * 25)
        backend.save(b, "out.png", b"y" * 7)
        backend.touch_jobs([a, b])
        backend.save_file("acme", "f1", b"z" * 99)
    listed = list(store.job_files())
    assert [job for job, _, _ in listed] == [a, a, b]  # grouped by job (listed in key order)
    assert sorted(listed) == sorted(folder.job_files()) == [(a, "in.png", 10), (a, "out.png", 25), (b, "out.png", 7)]


def test_sweeps_remove_only_what_has_no_record_and_only_when_old(store: S3ArtifactStore) -> None:
    live, gone, touched = (str(uuid.uuid4()) for _ in range(3))
    for job in (live, gone, touched):
        store.save(job, "a.txt", b"a")
        store.save(job, "b.txt", b"b")
    store.save_file("acme", "kept", b"k")
    store.save_file("acme", "expired", b"e")
    asked: list[list[str]] = []

    def job_exists(ids: list[str]) -> list[bool]:
        asked.append(ids)
        return [i == live for i in ids]

    def file_exists(ids: list[str]) -> list[bool]:
        return [i == "kept" for i in ids]

    assert store.sweep(job_exists, min_age_s=3600) == 0 and asked == []  # all young: nobody is asked
    assert store.sweep_files(file_exists, min_age_s=3600) == 0
    time.sleep(4)
    store.touch_jobs([touched])  # an outboxed job's inputs, kept young while its record does not exist yet
    assert store.sweep(job_exists, min_age_s=2.5) == 1
    assert sorted(asked[0]) == sorted([live, gone])
    assert store.sweep_files(file_exists, min_age_s=2.5) == 1
    left = keys_under(store)
    assert f"{gone}/a.txt" not in left and f"{gone}/b.txt" not in left
    assert {f"{live}/a.txt", f"{live}/b.txt", f"{touched}/a.txt", f"{touched}/.touch"} <= set(left)
    assert store.read_file("acme", "kept") == b"k"
    with pytest.raises(FileNotFoundError):
        store.read_file("acme", "expired")


def test_a_server_that_does_not_answer_is_unavailable_not_missing(s3: S3Server) -> None:
    settings = s3.settings("down").model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    down = open_artifacts(settings)
    for call in (lambda: down.save("j", "a.txt", b"a"), lambda: down.read("j", "a.txt"),
                 lambda: down.download("j", "a.txt"), lambda: down.sweep(lambda ids: [False] * len(ids))):
        with pytest.raises(ArtifactStoreUnavailable) as err:
            call()
        # A 503 for a request (api/errors.py), a retried failure for a job (worker/runner.py).
        assert isinstance(err.value, ServiceUnavailable) and isinstance(err.value, TransientJobError)
        assert err.value.status == 503 and "unreachable" in err.value.message


# --- a real stack: the API and the worker share nothing but Redis and the bucket ----------------------


class SplitStack(Stack):
    """The API with one data folder, its workers with another: as if on two hosts."""

    def worker_data(self) -> Path:
        return self.root / "worker-data"

    def start_worker(self, queue: str, name: str | None = None) -> LoggedProcess:
        name = name or f"worker-{queue}"
        env = {**self.env(), "AITASKS_DATA_DIR": str(self.worker_data())}
        proc = LoggedProcess(name, [sys.executable, "-m", "aitasks.cli.main", "worker", "--queues", queue,
                                    "--concurrency", "1"], env, self.root).start()
        self.workers[name] = proc
        return proc


@pytest.fixture(scope="module")
def split(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SplitStack, S3ArtifactStore]]:
    prefix = "stack"
    env = {**s3.env(prefix), "AITASKS_SECRET_KEY": "one-secret-for-both-hosts",
           "AITASKS_PRELOAD": "document_ingestion"}
    s = SplitStack(tmp_path_factory.mktemp("split"), env=env, worker_queues=("cpu,gpu",))
    bucket = unmetered(open_artifacts(s3.settings(prefix)))
    assert isinstance(bucket, S3ArtifactStore)
    try:
        s.start()
        s.wait_workers(timeout_s=180)
        yield s, bucket
    finally:
        s.stop()
    # Nothing went through a folder on either side.
    assert not (s.root / "data" / "artifacts").exists() and not (s.worker_data() / "artifacts").exists()


def download(client: httpx.Client, url: str) -> httpx.Response:
    r = client.get(url)
    assert r.status_code == 200, r.text
    return r


@pytest.mark.slow
def test_a_job_reads_its_input_and_writes_its_output_through_the_bucket(
        split: tuple[SplitStack, S3ArtifactStore]) -> None:
    s, bucket = split
    picture = png(coffee())
    with s.client() as client:
        task_id = submit(client, "diagnostic", image=b64(picture))
        body = wait_status(client, task_id, timeout_s=120)
        assert body["status"] == "SUCCESS", body
        result = client.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
        assert result["image"]["sha256"] == hashlib.sha256(picture).hexdigest()  # the worker read the bytes
        [thumb] = [a for a in result["artifacts"] if a["name"] == "thumbnail.png"]

        r = download(client, thumb["url"].removeprefix(s.url))
        assert r.content == bucket.read(task_id, "thumbnail.png") and r.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(r.content) == thumb["bytes"] == int(r.headers["content-length"])
        assert r.headers["content-type"] == "image/png"
        assert r.headers["content-disposition"] == 'attachment; filename="thumbnail.png"'
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"

        inputs = [k for k in keys_under(bucket, f"{task_id}/") if "input-" in k]
        assert len(inputs) == 1  # saved by the API at submit, in the bucket
        name = inputs[0].rpartition("/")[2]
        assert download(client, f"/api/v1/tasks/{task_id}/artifacts/{name}").content == picture
        assert client.get(f"/api/v1/tasks/{task_id}/artifacts/absent.png").status_code == 404

    with s.client() as stranger:  # another tenant's key: the same 404 as an unknown file
        assert stranger.get(f"/api/v1/tasks/{task_id}/artifacts/thumbnail.png").status_code == 404


@pytest.mark.slow
def test_an_uploaded_file_feeds_a_prediction(split: tuple[SplitStack, S3ArtifactStore]) -> None:
    s, bucket = split
    picture = png(coffee())
    rc = replicate.Client(api_token=s.new_key(), base_url=s.url)
    try:
        f = rc.files.create(io.BytesIO(picture), filename="coffee.png")
        assert any(k.endswith(f"/{f.id}") for k in keys_under(bucket, "files/"))
        assert rc._client.get(f"/v1/files/{f.id}/download").content == picture
        out: Any = rc.run("aitasks/diagnostic", input={"image": f.urls["get"]})
        assert out["image"]["bytes"] == len(picture) and out["image"]["width"] == 300
        rc.files.delete(f.id)
        assert not any(k.endswith(f"/{f.id}") for k in keys_under(bucket, "files/"))
    finally:
        rc._client.close()


@pytest.mark.slow
def test_a_document_upload_is_ingested_by_the_worker_from_the_bucket(
        split: tuple[SplitStack, S3ArtifactStore]) -> None:
    s, bucket = split
    text = "Lighthouses guide ships along rocky coasts at night.\n" * 20
    with s.client(timeout=120) as client:
        r = client.post("/api/v1/documents/", files={"file": ("notes.txt", text.encode(), "text/plain")})
        assert r.status_code == 202, r.text
        doc = r.json()
        assert keys_under(bucket, f"{doc['task_id']}/")  # the upload is an input in the bucket
        deadline = time.monotonic() + 240
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = client.get(f"/api/v1/documents/{doc['document_id']}/status").json()
            if status["status"] != "processing":
                break
            time.sleep(0.2)
        assert status["status"] == "completed", status
