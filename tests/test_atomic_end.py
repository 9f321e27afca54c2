"""The UPDATE script's frame and each of its fragments (jobs/atomic_end.py) against a real redis-server,
through the store's own call (``JobStore.update``); plus the contract of the ``.lua`` files: no key name
spelled in them, every placeholder substituted."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

import aitasks
from aitasks.jobs import atomic_end, keys, lua, scripts
from aitasks.jobs.metrics import DURATION_BUCKETS, TIMELINE_KEEP_S, bucket_label, cumulative_histogram
from aitasks.jobs.store import JobStore
from redis_events import drain, subscribed

PACKAGE = Path(aitasks.__file__).parent


@pytest.fixture
def store(r: redis.Redis) -> JobStore:
    return JobStore(r)


def record(r: redis.Redis, job_id: str, **fields: Any) -> None:
    """A job record as CREATE leaves it (PENDING), with ``fields`` on top."""
    base = {"id": job_id, "status": "PENDING", "type": "echo", "tenant": "acme", "queue": "cpu",
            "progress": "0", "message": "", "attempts": "0"}
    r.hset(keys.job(job_id), mapping={**base, **{k: str(v) for k, v in fields.items()}})


def deliveries(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(d) for d in reversed(r.lrange(keys.WEBHOOKS_PENDING, 0, -1))]


# --- the frame (jobs/end_state.lua) -------------------------------------------------------------------


def test_state_counts_changes_publishes_them_and_refuses_after_the_end(r: redis.Redis, store: JobStore) -> None:
    assert store.update("ghost", {"status": "PROCESSING"}) == 0
    assert not r.exists(keys.job("ghost"))
    record(r, "a", attempts=1)
    ps = subscribed(r, "a")
    assert store.update("a", {"status": "PROCESSING", "progress": 10, "message": "going"}) == 1
    assert store.update("a", {"status": "FAILURE", "error_type": "Boom", "error_message": "it broke"}, ttl_s=50) == 2
    assert 0 < r.ttl(keys.job("a")) <= 50
    assert store.update("a", {"status": "PROCESSING", "progress": 99}) == -1  # a late report
    job = r.hgetall(keys.job("a"))
    assert job["status"] == "FAILURE" and job["progress"] == "10" and job["seq"] == "2"
    assert drain(ps) == [
        {"task_id": "a", "seq": 1, "status": "PROCESSING", "progress": 10, "message": "going", "attempts": 1,
         "task_type": "echo"},
        {"task_id": "a", "seq": 2, "status": "FAILURE", "progress": 10, "message": "going", "attempts": 1,
         "task_type": "echo", "error_type": "Boom", "error": "it broke"},
    ]


def test_state_marks_a_requested_cancel_in_the_event(r: redis.Redis, store: JobStore) -> None:
    record(r, "c")
    ps = subscribed(r, "c")
    store.update("c", {"cancel_requested_at": 1.5})
    assert drain(ps)[0]["cancel_requested"] is True


# --- metrics (jobs/metrics_end.lua) -------------------------------------------------------------------


def test_metrics_count_outcomes_the_timeline_and_the_duration_histogram(r: redis.Redis, store: JobStore) -> None:
    record(r, "m1", started_at=1000.0)
    record(r, "m2", started_at=1000.0)
    record(r, "m3")
    store.update("m1", {"status": "PROCESSING"})
    assert not r.exists(keys.METRICS_JOBS)  # only a terminal change counts
    store.update("m1", {"status": "SUCCESS", "finished_at": 1000.3})
    store.update("m2", {"status": "FAILURE", "finished_at": 1007.0})
    store.update("m3", {"status": "REVOKED"})  # never started: counted, not timed
    assert r.hgetall(keys.METRICS_JOBS) == {"echo|SUCCESS": "1", "echo|FAILURE": "1", "echo|REVOKED": "1"}
    for kind in ("finished", "failure", "revoked"):
        timeline = r.hgetall(keys.metrics_timeline(kind))
        assert list(timeline.values()) == ["1"] and int(next(iter(timeline))) % 60 == 0
        assert 0 < r.ttl(keys.metrics_timeline(kind)) <= TIMELINE_KEEP_S
    # Each job once, in its own bucket (one write an end); /metrics makes them cumulative.
    record(r, "m4", started_at=1000.0)
    store.update("m4", {"status": "SUCCESS", "finished_at": 1000.0 + 700})  # over the largest bound
    hist = r.hgetall(keys.metrics_duration("echo"))
    assert float(hist["sum"]) == pytest.approx(707.3)
    assert {k: v for k, v in hist.items() if k != "sum"} == {bucket_label(0.5): "1", bucket_label(10.0): "1", "+Inf": "1"}
    buckets, count, seconds = cumulative_histogram(hist, {})
    assert buckets == [(b, int(0.3 <= b) + int(7.0 <= b)) for b in DURATION_BUCKETS]
    assert count == 3 and seconds == pytest.approx(707.3)
    # What an older release kept cumulative under the old key still counts, added bucket by bucket.
    legacy = {bucket_label(b): "2" for b in DURATION_BUCKETS if b >= 1.0} | {"+Inf": "2", "sum": "3.5"}
    buckets, count, seconds = cumulative_histogram(hist, legacy)
    assert buckets == [(b, int(0.3 <= b) + int(7.0 <= b) + 2 * int(b >= 1.0)) for b in DURATION_BUCKETS]
    assert count == 5 and seconds == pytest.approx(707.3 + 3.5)


# --- usage (jobs/usage_end.lua) -----------------------------------------------------------------------


@pytest.mark.parametrize("day", ["1970-01-01", "2000-02-29", "2023-12-31", "2024-03-01", "2100-03-01"])
def test_usage_counts_on_the_tenants_utc_day(r: redis.Redis, store: JobStore, day: str) -> None:
    midnight = datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()
    finished = midnight + 86399.5  # the day's last second: an off-by-one day shows
    record(r, "u1", tenant="acme", queue="gpu", type="caption", started_at=finished - 2.25)
    record(r, "u2", tenant="acme", queue="gpu", type="caption", started_at=finished - 10, children_total=2)
    store.update("u1", {"status": "SUCCESS", "finished_at": finished})
    store.update("u2", {"status": "FAILURE", "finished_at": finished})  # a parent: its children count
    usage = r.hgetall(keys.usage("acme", day))
    assert usage.pop("caption|gpu|seconds") == "2.25"
    assert usage == {"caption|gpu|jobs": "2", "caption|gpu|status:SUCCESS": "1", "caption|gpu|status:FAILURE": "1"}
    assert r.ttl(keys.usage("acme", day)) > keys.USAGE_TTL_S - 60


# --- chord (worker/chord_end.lua) ---------------------------------------------------------------------


def fan_out(r: redis.Redis, parent: str, n: int, fair: bool = False) -> int:
    kids = [{"id": f"{parent}.{i}", "type": "echo", "queue": "gpu", "list": "gpu", "message": f"run {i}",
             "hash": ["id", f"{parent}.{i}", "status", "PENDING", "type", "echo", "parent", parent,
                      "tenant", "acme", "queue", "gpu"]} for i in range(n)]
    fan = r.register_script(scripts.FAN_OUT)
    return int(fan(keys=[keys.job(parent), keys.events(parent), keys.tenant_index("acme"), keys.METRICS_SUBMITTED],
                   args=["callback message", 1000, 60, json.dumps(kids), "waiting", "cpu", "1" if fair else "0"]))


def hold_slot(r: redis.Redis, job_id: str, tenant: str, queue: str = "cpu") -> None:
    """The job holds a slot of its queue, as the dispatcher hands one over (jobs/dispatch_lib.lua)."""
    r.zadd(keys.dispatch(queue, "inflight"), {job_id: 1})
    r.zadd(keys.tenant_running(tenant), {job_id: 1})
    r.zincrby(keys.DISPATCH_BUSY, 1, tenant)


def test_with_fair_dispatch_the_callback_waits_in_the_tenants_line_and_takes_a_slot(
        r: redis.Redis, store: JobStore) -> None:
    """The parent gives its slot back to its children; the last child's end puts its callback in the
    tenant's line (not straight onto the queue), handed over once a slot is free (the cpu queue's one slot
    is another tenant's job's until it ends) and counted as the tenant's running job until the parent ends."""
    r.set(keys.dispatch("cpu", "capacity"), 1)
    r.set(keys.dispatch("gpu", "capacity"), 2)
    record(r, "f", status="PROCESSING", queue="cpu", tenant="acme")
    hold_slot(r, "f", "acme")
    assert fan_out(r, "f", 2, fair=True) == 1
    assert r.lrange("gpu", 0, -1) == ["run 1", "run 0"] and r.zcard(keys.dispatch("cpu", "inflight")) == 0
    record(r, "other", status="PROCESSING", queue="cpu", tenant="zed")
    hold_slot(r, "other", "zed")
    store.update("f.0", {"status": "SUCCESS"})
    store.update("f.1", {"status": "SUCCESS"})
    assert r.llen("cpu") == 0 and r.lrange(keys.pending("cpu", "acme", "normal"), 0, -1) == ["f"]
    assert store.update("other", {"status": "SUCCESS"}) > 0
    assert r.lrange("cpu", 0, -1) == ["callback message"]
    assert r.zrange(keys.dispatch("cpu", "inflight"), 0, -1) == ["f"] and r.zrange(keys.tenant_running("acme"), 0, -1) == ["f"]
    assert store.update("f", {"status": "SUCCESS"}) > 0
    assert r.zcard(keys.dispatch("cpu", "inflight")) == 0 and r.zcard(keys.DISPATCH_BUSY) == 0


def test_chord_counts_each_childs_end_and_the_last_one_queues_the_callback(r: redis.Redis, store: JobStore) -> None:
    record(r, "p", status="PROCESSING", queue="cpu", webhook="http://h", webhook_events=",progress,")
    assert fan_out(r, "p", 2) == 1
    assert r.lrange("gpu", 0, -1) == ["run 1", "run 0"] and r.exists(keys.job("p.1"))
    ps = subscribed(r, "p")
    store.update("p.0", {"status": "PROCESSING"})
    assert r.hget(keys.job("p"), "children_done") == "0"  # not an end
    store.update("p.0", {"status": "FAILURE"})
    parent = r.hgetall(keys.job("p"))
    assert parent["children_done"] == "1" and parent["progress"] == "50"
    assert parent["message"] == "1 of 2 child jobs finished" and r.llen("cpu") == 0
    store.update("p.1", {"status": "SUCCESS"})
    assert r.lrange("cpu", 0, -1) == ["callback message"]
    assert [(e["seq"], e["progress"], e["status"]) for e in drain(ps)] == [(2, 50, "PROCESSING"), (3, 99, "PROCESSING")]
    assert [(d["task_id"], d["event"], d["seq"]) for d in deliveries(r)] == [("p", "progress", 2), ("p", "progress", 3)]


def test_chord_leaves_a_finished_parent_alone(r: redis.Redis, store: JobStore) -> None:
    record(r, "q", status="PROCESSING")
    fan_out(r, "q", 1)
    store.update("q", {"status": "REVOKED"})
    store.update("q.0", {"status": "REVOKED"})
    assert r.hget(keys.job("q"), "seq") == "2" and r.llen("cpu") == 0


# --- document records (documents/records_end.lua) ----------------------------------------------------


def test_documents_mark_the_record_completed_or_failed_while_it_names_the_job(
        r: redis.Redis, store: JobStore) -> None:
    docs = {name: keys.document("acme", name) for name in ("ok", "bad", "stop", "newer")}
    for name, dkey in docs.items():
        r.hset(dkey, mapping={"task_id": "j-other" if name == "newer" else f"j-{name}", "status": "processing"})
        record(r, f"j-{name}", type="document_ingestion", document=dkey, status="PROCESSING", message="reading")
    result = {"pages": 3, "chunks": 12, "ocr_pages": 1, "tokens": 4096, "doc_type": "pdf"}
    store.update("j-ok", {"status": "SUCCESS", "result": result})
    store.update("j-bad", {"status": "FAILURE", "error_type": "DocumentError", "error_message": "Not a PDF."})
    store.update("j-stop", {"status": "REVOKED", "message": "Cancelled by user"})
    store.update("j-newer", {"status": "SUCCESS", "result": result})
    ok = r.hgetall(docs["ok"])
    assert float(ok.pop("finished_at")) == float(ok.pop("updated_at")) > 1e9
    assert ok == {"task_id": "j-ok", "status": "completed", "pages": "3", "chunks": "12", "ocr_pages": "1",
                  "tokens": "4096", "doc_type": "pdf", "error": "", "error_type": ""}
    bad = r.hgetall(docs["bad"])
    assert (bad["status"], bad["error"], bad["error_type"]) == ("failed", "Not a PDF.", "DocumentError")
    stop = r.hgetall(docs["stop"])
    assert (stop["status"], stop["error_type"]) == ("failed", "Cancelled")
    assert stop["error"] == "The ingestion was cancelled (Cancelled by user)."
    assert r.hgetall(docs["newer"]) == {"task_id": "j-other", "status": "processing"}
    assert r.ttl(docs["ok"]) == -1


# --- webhooks (jobs/webhooks_end.lua) -----------------------------------------------------------------


@pytest.mark.parametrize(("subscribed", "queued"), [
    (",completed,", [("completed", 3)]),
    (",start,progress,", [("start", 1), ("progress", 2)]),
    (",start,progress,completed,", [("start", 1), ("progress", 2), ("completed", 3)]),
    (None, []),
])
def test_webhooks_queue_a_delivery_only_for_subscribed_kinds(
        r: redis.Redis, store: JobStore, subscribed: str | None, queued: list[tuple[str, int]]) -> None:
    record(r, "w", **({"webhook": "http://h", "webhook_events": subscribed} if subscribed else {}))
    store.update("w", {"status": "PROCESSING"})
    store.update("w", {"progress": 40, "message": "part"})
    store.update("w", {"status": "SUCCESS", "progress": 100})
    found = deliveries(r)
    assert [(d["event"], d["seq"]) for d in found] == queued
    states = {1: ("PROCESSING", 0, ""), 2: ("PROCESSING", 40, "part"), 3: ("SUCCESS", 100, "part")}
    for d in found:
        assert d == {"task_id": "w", "event": d["event"], "seq": d["seq"], "attempt": 1,
                     **dict(zip(("status", "progress", "message"), states[d["seq"]]))}


# --- the assembly -------------------------------------------------------------------------------------


def test_no_lua_file_names_a_key_and_every_placeholder_is_substituted() -> None:
    files = sorted(PACKAGE.rglob("*.lua"))
    declared = {PACKAGE.joinpath(*f.package.split(".")[1:], f.file) for f in atomic_end.FRAGMENTS}
    assert declared <= set(files) and len(files) >= len(declared) + 3  # + frame, create, fan_out
    for path in files:
        assert keys.PREFIX + ":" not in path.read_text(), path
    for script in (scripts.UPDATE, scripts.CREATE, scripts.FAN_OUT):
        assert not re.findall(r"@\w+@", script)
        assert "--" in script and "<terminal fragments>" not in script and "<every-change fragments>" not in script
    assert keys.JOB_PREFIX + "' .." in scripts.UPDATE and keys.WEBHOOKS_PENDING in scripts.UPDATE
    assert scripts.UPDATE.index("fragment metrics") < scripts.UPDATE.index("fragment usage") \
        < scripts.UPDATE.index("fragment chord") < scripts.UPDATE.index("fragment documents") \
        < scripts.UPDATE.index("fragment webhooks")
    assert atomic_end.assemble() == scripts.UPDATE


def test_a_placeholder_without_a_value_fails_the_assembly() -> None:
    assert lua.render("return '@JOB_PREFIX@'") == f"return '{keys.JOB_PREFIX}'"
    with pytest.raises(ValueError, match="@JOB_PREFIXX@"):
        lua.render("return '@JOB_PREFIXX@'")


def test_only_declared_fragments_run(r: redis.Redis) -> None:
    without = tuple(f for f in atomic_end.FRAGMENTS if f.name not in ("metrics", "webhooks"))
    update = r.register_script(atomic_end.assemble(without))
    record(r, "d", webhook="http://h", webhook_events=",completed,")
    assert update(keys=[keys.job("d"), keys.events("d")], args=["", "status", "SUCCESS", "finished_at", "0"]) == 1
    assert not r.exists(keys.METRICS_JOBS) and not r.exists(keys.WEBHOOKS_PENDING)
    assert r.hget(keys.usage("acme", "1970-01-01"), "echo|cpu|jobs") == "1"


def test_create_answers_a_repeated_key_with_its_first_job_until_a_caller_claims_it(r: redis.Redis) -> None:
    create = r.register_script(scripts.CREATE)

    def submit(job_id: str, claim: str = "0") -> list[Any]:
        return list(create(keys=[keys.job(job_id), keys.tenant_index("acme"), "cpu", keys.idempotency("acme", "k"),
                                 keys.METRICS_SUBMITTED, keys.tenant_queued("acme"), keys.tenant_limits("acme")],
                           args=[60, 1000, job_id, "msg", 60, "echo", 0, json.dumps(["id", job_id]), claim]))

    assert submit("first") == [1, "first"]
    assert submit("second") == [0, "first"]
    assert submit("second", claim="1") == [0, "first"]  # it is still in Redis: no claim
    r.delete(keys.job("first"))  # gone from Redis (recorded and let go, or expired)
    assert submit("third") == [0, "first"]  # the API looks for it in the store of record
    assert submit("third", claim="1") == [1, "third"]  # found in no store: the key is taken over
    assert submit("fourth") == [0, "third"]
