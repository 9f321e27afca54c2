"""Live updates: Server-Sent Events, the WebSocket and seed 003's WebSocket, over real connections."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stack import TERMINAL, key_of, queue_held, submit, wait_status, ws_open, ws_paths, ws_recv, ws_refused, ws_rest

TASKS = "/api/v1/tasks"


# --- helpers -------------------------------------------------------------------------------------


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Each SSE message as {"event", "id", "data"} (data parsed from JSON); comments are skipped."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in event:
                yield {"event": event.get("event", "message"), "id": event.get("id"), "data": event["data"]}
            event = {}
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = json.loads(value) if name == "data" else value


def check_ordered(messages: list[dict[str, Any]]) -> None:
    seqs = [m["seq"] for m in messages]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), seqs
    progress = [m["progress"] for m in messages]
    assert progress == sorted(progress), progress
    assert all(m["status"] not in TERMINAL for m in messages[:-1]), [m["status"] for m in messages]
    assert messages[-1]["status"] in TERMINAL


# --- progress in order --------------------------------------------------------------------------


@pytest.mark.slow  # seconds of waiting
def test_every_step_arrives_in_order_on_sse_and_both_websockets(stack, client):
    key = key_of(client)
    with queue_held(client) as release:
        task_id = submit(client, parameters={"duration_s": 2.5, "steps": 5})
        with client.stream("GET", f"{TASKS}/{task_id}/events", timeout=120) as r, \
                ws_open(stack, f"{TASKS}/{task_id}/ws", key) as ws, \
                ws_open(stack, f"/api/ws/tasks/{task_id}", key) as ws003:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse(r)
            sse_first, ws_first, seed_first = next(events), ws_recv(ws), ws_recv(ws003)
            for first in (sse_first["data"], ws_first):
                assert first["status"] == "PENDING" and first["task_id"] == task_id, first
            assert seed_first["type"] == "progress" and seed_first["data"]["state"] == "PENDING"
            release()
            sse_all = [sse_first, *events]
            ws_all, ws_code = ws_rest(ws)
            ws_all.insert(0, ws_first)
            seed_all, seed_code = ws_rest(ws003)
            seed_all.insert(0, seed_first)

    # SSE: data messages, each with id = seq, then `end`, then the stream closes.
    assert sse_all[-1]["event"] == "end", sse_all[-1]
    assert sse_all[-1]["data"] == {"task_id": task_id, "status": "SUCCESS"}
    data = [m["data"] for m in sse_all[:-1]]
    assert all(m["event"] == "message" for m in sse_all[:-1])
    assert [int(m["id"]) for m in sse_all[:-1]] == [d["seq"] for d in data]
    check_ordered(data)
    steps = {d["message"]: d["progress"] for d in data if d["message"].startswith("step ")}
    assert steps == {"step 1/5": 20, "step 2/5": 40, "step 3/5": 60, "step 4/5": 80, "step 5/5": 99}, data
    final = data[-1]
    assert final["status"] == "SUCCESS" and final["progress"] == 100 and final["result_available"] is True
    assert final["result"]["parameters"]["steps"] == 5 and final["result"]["artifacts"] == []

    # The WebSocket sends the same messages, then closes normally.
    assert ws_code == 1000
    assert ws_all == data

    # Seed 003's shape, message for message.
    assert seed_code == 1000
    assert len(seed_all) == len(data)
    for seed, d in zip(seed_all, data):
        assert seed["data"]["task_id"] == task_id
        assert seed["data"]["state"] == d["status"]
        assert seed["data"]["progress"] == d["progress"]
        assert seed["data"]["status"] == d["message"]
    assert [s["type"] for s in seed_all] == ["progress"] * (len(data) - 1) + ["complete"]
    assert seed_all[-1]["data"]["result"] == final["result"]


@pytest.mark.slow  # seconds of waiting
def test_a_late_subscriber_first_gets_the_current_state(stack, client):
    key = key_of(client)
    # A running job: the first message is where it is now, not its history.
    task_id = submit(client, parameters={"duration_s": 6, "steps": 12})
    deadline = time.monotonic() + 60
    while True:
        now = client.get(f"{TASKS}/{task_id}/status/").json()
        if now["status"] == "PROCESSING" and now["progress"] >= 25:
            break
        assert now["status"] not in TERMINAL and time.monotonic() < deadline, now
        time.sleep(0.05)
    with client.stream("GET", f"{TASKS}/{task_id}/events", timeout=120) as r:
        messages = list(sse(r))
    first = messages[0]["data"]
    assert first["status"] == "PROCESSING" and first["progress"] >= now["progress"], (first, now)
    assert messages[-2]["data"]["status"] == "SUCCESS" and messages[-1]["event"] == "end"
    check_ordered([m["data"] for m in messages[:-1]])

    # A finished job: its final state (with the result), then the end.
    with client.stream("GET", f"{TASKS}/{task_id}/events", timeout=60) as r:
        late = list(sse(r))
    assert [m["event"] for m in late] == ["message", "end"], late
    assert late[0]["data"]["status"] == "SUCCESS" and late[0]["data"]["progress"] == 100
    assert late[0]["data"]["result"]["parameters"]["steps"] == 12
    assert late[0]["data"]["seq"] == messages[-2]["data"]["seq"]
    assert late[1]["data"] == {"task_id": task_id, "status": "SUCCESS"}

    with ws_open(stack, f"{TASKS}/{task_id}/ws", key) as ws:
        ws_msgs, code = ws_rest(ws)
    assert code == 1000 and ws_msgs == [late[0]["data"]]
    with ws_open(stack, f"/api/ws/tasks/{task_id}", key) as ws:
        seed_msgs, code = ws_rest(ws)
    assert code == 1000 and len(seed_msgs) == 1
    assert seed_msgs[0]["type"] == "complete" and seed_msgs[0]["data"]["state"] == "SUCCESS"
    assert seed_msgs[0]["data"]["result"]["parameters"]["steps"] == 12


def test_failure_ends_the_streams(stack, client):
    key = key_of(client)
    task_id = submit(client, parameters={"fail": True})
    with client.stream("GET", f"{TASKS}/{task_id}/events", timeout=60) as r:
        messages = list(sse(r))
    final = messages[-2]["data"]
    assert final["status"] == "FAILURE" and final["error_type"] == "JobError" and final["error"]
    assert "result" not in final
    assert messages[-1] == {"event": "end", "id": None, "data": {"task_id": task_id, "status": "FAILURE"}}
    with ws_open(stack, f"/api/ws/tasks/{task_id}", key) as ws:
        seed_msgs, code = ws_rest(ws)
    assert code == 1000
    assert seed_msgs[-1]["type"] == "error" and seed_msgs[-1]["data"]["error"] == final["error"]


def test_cancellation_is_seen_on_every_stream_as_revoked(stack, client):
    key = key_of(client)
    task_id = submit(client, parameters={"duration_s": 60, "steps": 240})
    assert wait_status(client, task_id, {"PROCESSING"} | TERMINAL)["status"] == "PROCESSING"
    with client.stream("GET", f"{TASKS}/{task_id}/events", timeout=120) as r, \
            ws_open(stack, f"{TASKS}/{task_id}/ws", key) as ws, \
            ws_open(stack, f"/api/ws/tasks/{task_id}", key) as ws003:
        events = sse(r)
        assert next(events)["data"]["status"] == "PROCESSING"
        assert ws_recv(ws)["status"] == "PROCESSING"
        assert ws_recv(ws003)["type"] == "progress"
        assert client.post(f"{TASKS}/{task_id}/cancel/").status_code == 200
        sse_rest = list(events)
        ws_all, ws_code = ws_rest(ws)
        seed_all, seed_code = ws_rest(ws003)

    assert sse_rest[-1] == {"event": "end", "id": None, "data": {"task_id": task_id, "status": "REVOKED"}}
    assert sse_rest[-2]["data"]["status"] == "REVOKED"
    assert ws_code == 1000 and ws_all[-1]["status"] == "REVOKED"
    assert all(m["status"] == "PROCESSING" for m in ws_all[:-1])
    assert seed_code == 1000
    assert seed_all[-1]["type"] == "error" and seed_all[-1]["data"]["state"] == "REVOKED"
    assert seed_all[-1]["data"]["error"] == "Task was cancelled"
    assert all(m["type"] == "progress" for m in seed_all[:-1])


# --- refusals ------------------------------------------------------------------------------------


def test_unknown_task_is_404_on_sse_and_4404_on_websockets(stack, client):
    key = key_of(client)
    for task_id in (str(uuid.uuid4()), "not-a-uuid", "x" * 300):
        r = client.get(f"{TASKS}/{task_id}/events")
        assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
        for path in ws_paths(task_id):
            message, code = ws_refused(stack, path, key)
            assert code == 4404, (path, code)
            assert message["code"] == "not_found" and message["error"], message


def test_no_or_bad_key_is_401_on_sse_and_4401_on_websockets(stack, client):
    task_id = submit(client)  # a real task of a real tenant: the key alone decides
    url = f"{stack.url}{TASKS}/{task_id}/events"
    for headers in ({}, {"Authorization": "Bearer ait_not-a-real-key"},
                    {"Authorization": f"Basic {key_of(client)}"}, {"Authorization": "Bearer"}):
        r = httpx.get(url, headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["code"] == "unauthorized" and r.json()["error"]
    for key in (None, "ait_not-a-real-key"):
        for path in ws_paths(task_id):
            message, code = ws_refused(stack, path, key)
            assert code == 4401, (path, key, code)
            assert message["code"] == "unauthorized" and message["error"], message
    assert wait_status(client, task_id)["status"] == "SUCCESS"


def test_another_tenants_task_is_404_and_4404(stack, client):
    task_id = submit(client)
    assert wait_status(client, task_id)["status"] == "SUCCESS"
    with stack.client() as other:
        r = other.get(f"{TASKS}/{task_id}/events")
        assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
        for path in ws_paths(task_id):
            message, code = ws_refused(stack, path, key_of(other))
            assert code == 4404, (path, code)
            # Exactly what an unknown id gets (apart from the id it names).
            unknown = str(uuid.uuid4())
            expected, _ = ws_refused(stack, path.replace(task_id, unknown), key_of(other))
            assert message == json.loads(json.dumps(expected).replace(unknown, task_id))



def test_a_subscriber_that_reads_too_slowly_gets_overflow_not_an_unbounded_mailbox(stack):
    """The hub (one Redis subscription per API process) gives each subscriber a mailbox of 64 events: a
    job publishing 200 changes to a subscriber that reads none leaves it one OVERFLOW, which ends an SSE
    stream with `event: error` (code slow_consumer; routes/stream.py), and the hub goes on delivering."""
    import asyncio

    import redis.asyncio as aredis

    from aitasks.jobs import keys
    from aitasks.jobs.events import MAILBOX, OVERFLOW, EventHub

    async def run() -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
        hub = EventHub(aredis.Redis.from_url(stack.redis_server.url))
        hub.start()
        await asyncio.wait_for(hub.connected.wait(), 10)
        publisher = aredis.Redis.from_url(stack.redis_server.url)
        async with hub.subscribe("slow") as slow, hub.subscribe("fine") as fine:
            while not slow.empty():
                slow.get_nowait()  # the hub's RESYNC on connecting
            for seq in range(1, 201):
                await publisher.publish(keys.events("slow"), json.dumps({"seq": seq, "status": "PROCESSING"}))
            await publisher.publish(keys.events("fine"), json.dumps({"seq": 1, "status": "SUCCESS"}))
            after = await asyncio.wait_for(fine.get(), 10)  # delivered after the 200: the hub kept going
            while fine.empty() is False:
                fine.get_nowait()
            held = [slow.get_nowait() for _ in range(slow.qsize())]
            peak = MAILBOX
        await publisher.aclose()
        await hub.stop()
        return peak, held, after

    peak, held, after = asyncio.run(run())
    assert len(held) <= peak and held, held
    assert any(e is OVERFLOW or e == OVERFLOW for e in held), held[:3]
    assert after["status"] == "SUCCESS"
