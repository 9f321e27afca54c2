"""Webhooks cannot be aimed at the service's own side of the network (docs/security.md, item 3): the one
guard (jobs/net_guard.py) refuses every private, loopback, link-local and metadata form, at submit and
again at send against the address the worker actually connects to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from ipaddress import ip_address
from typing import Any

import httpx
import pytest

from aitasks.errors import ValidationFailed
from aitasks.jobs import keys
from aitasks.jobs.net_guard import parse_networks, refusal
from aitasks.settings import Settings
from aitasks.worker import webhook_http
from local_http import LocalServer, QuietHandler
from stack import poll, submit, wait_status

TASKS = "/api/v1/tasks"


@pytest.mark.parametrize("address,reason", [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("10.1.2.3", "private (RFC 1918)"),
    ("172.16.0.1", "private (RFC 1918)"),
    ("172.31.255.254", "private (RFC 1918)"),
    ("192.168.1.1", "private (RFC 1918)"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("198.18.0.1", "reserved"),
    ("240.0.0.1", "reserved"),
    ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("100.100.100.200", "metadata"),
    # IPv4 inside IPv6: judged as the IPv4 address it stands for.
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, a private"),
    ("::ffff:100.64.0.1", "IPv4-mapped form of 100.64.0.1, a carrier-grade NAT"),
    ("::ffff:0:192.168.0.1", "IPv4-translated form of 192.168.0.1, a private"),
    ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1, a loopback"),
    ("::169.254.169.254", "metadata"),
    ("64:ff9b::127.0.0.1", "NAT64 form of 127.0.0.1, a loopback"),
    ("64:ff9b::10.0.0.1", "NAT64 form of 10.0.0.1, a private"),
    ("64:ff9b::169.254.169.254", "metadata"),
    ("64:ff9b::100.100.100.200", "metadata"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("2002:7f00:1::1", "6to4 form of 127.0.0.1, a loopback"),
    ("2002:a9fe:a9fe::1", "metadata"),
])
def test_every_private_loopback_link_local_and_metadata_form_is_refused(address, reason):
    assert reason in (refusal(ip_address(address)) or ""), refusal(ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"])
def test_public_addresses_in_any_spelling_are_allowed(address):
    assert refusal(ip_address(address)) is None


def test_the_allow_list_lets_private_networks_through_but_never_metadata():
    allowed = parse_networks("127.0.0.0/8, ::1, 10.0.0.0/8, 169.254.0.0/16, fd00::/8")
    for address in ("127.0.0.1", "::1", "10.9.8.7", "::ffff:127.0.0.1", "169.254.1.1"):
        assert refusal(ip_address(address), allowed) is None, address
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"):
        assert "metadata" in (refusal(ip_address(address), allowed) or ""), address
    assert "private" in (refusal(ip_address("192.168.0.1"), allowed) or "")  # only what is listed


def test_a_bad_allow_list_fails_at_start_naming_the_entry(monkeypatch):
    monkeypatch.setenv("AITASKS_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8,localhost")
    with pytest.raises(ValueError, match="'localhost' is not an IP network"):
        Settings()


def read(url: str, allow: str = "") -> tuple[str | None, tuple[str, ...]]:
    from aitasks.api.webhook_input import read_webhook

    settings = Settings(redis_url="redis://127.0.0.1:1/0", webhook_allow_private=allow)
    return asyncio.run(read_webhook({"webhook": url}, settings))


@pytest.mark.parametrize("url,reason", [
    ("http://localhost:8080/hook", "a loopback address"),  # a name that resolves to 127.0.0.1
    ("http://[::ffff:169.254.169.254]/", "a cloud metadata address"),
    ("http://[::ffff:127.0.0.1]:8080/", "IPv4-mapped form of 127.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/", "a cloud metadata address"),
    ("http://100.100.100.200/latest/meta-data", "a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "a cloud metadata address"),
    ("http://10.0.0.1/", "RFC 1918"),
    ("http://100.64.1.1/", "carrier-grade NAT"),
    ("http://[fd00::1]/", "unique local"),
    ("http://2130706433/", "loopback"),  # 127.0.0.1 spelled as one number
])
def test_submit_refuses_each_form_naming_the_field_and_reason(url, reason):
    with pytest.raises(ValidationFailed) as err:
        read(url)
    assert err.value.fields[0].field == "webhook" and reason in str(err.value), str(err.value)


def test_submit_accepts_loopback_once_the_operator_allows_it():
    assert read("http://localhost:8080/hook", allow="127.0.0.0/8,::1")[0] == "http://localhost:8080/hook"
    with pytest.raises(ValidationFailed, match="metadata"):
        read("http://[::ffff:169.254.169.254]/", allow="0.0.0.0/0,::/0")


def test_metadata_is_refused_over_http_even_where_loopback_is_allowed(client):
    """The test deployment allows 127.0.0.0/8 and ::1 (tests/stack.py); metadata stays refused."""
    r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", "webhook": "http://[::ffff:169.254.169.254]/"})
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["fields"][0]["field"] == "webhook" and "metadata" in err["error"], err


# --- at send: the address connected is the address checked ---------------------------------------------


class Hits(LocalServer):
    """An HTTP receiver on 127.0.0.1 that counts what reaches it."""

    def __init__(self) -> None:
        self.hits: list[dict[str, str]] = []
        hits = self.hits

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"  # keeps the connection open between requests

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                hits.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(204)
                self.end_headers()

        super().__init__(Handler)


@pytest.fixture
def hits() -> Iterator[Hits]:
    h = Hits()
    yield h
    h.close()


def test_the_sender_resolves_once_and_connects_to_the_checked_address(hits):
    """A resolver whose second answer is the metadata address (DNS rebinding): the sender asks once per
    connection, checks that answer and connects to it, sending the URL's own Host header."""
    answers = [ip_address("127.0.0.1"), ip_address("169.254.169.254")]
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[Any]:
        asked.append(host)
        return [answers[min(len(asked) - 1, 1)]]

    backend = webhook_http.GuardedBackend(parse_networks("127.0.0.0/8"), resolver=rebinding)
    with webhook_http.client(backend, 2) as http:
        status = webhook_http.post(http, f"http://hooks.example:{hits.port}/x", b"{}", {}, 5.0)
        assert status == 204 and asked == ["hooks.example"]
        assert hits.hits[0]["host"] == f"hooks.example:{hits.port}"
        http.headers["Connection"] = "close"  # the next POST needs a new connection, so a new answer
        webhook_http.post(http, f"http://hooks.example:{hits.port}/x", b"{}", {}, 5.0)
        with pytest.raises(webhook_http.Refused, match="169.254.169.254, a cloud metadata address"):
            webhook_http.post(http, f"http://hooks.example:{hits.port}/x", b"{}", {}, 5.0)
    assert len(hits.hits) == 2


def test_the_sender_refuses_a_name_that_resolves_to_loopback(hits):
    backend = webhook_http.GuardedBackend(())
    with webhook_http.client(backend, 2) as http, pytest.raises(webhook_http.Refused, match="a loopback address"):
        webhook_http.post(http, f"http://localhost:{hits.port}/x", b"{}", {}, 5.0)
    with webhook_http.client(backend, 2) as http, pytest.raises(webhook_http.Refused, match="IPv4-mapped"):
        webhook_http.post(http, f"http://[::ffff:127.0.0.1]:{hits.port}/x", b"{}", {}, 5.0)
    assert hits.hits == []


@pytest.mark.slow  # its own deployment
def test_the_worker_checks_again_at_send(make_stack, hits):
    """Accepted at submit (127.0.0.2 is allowed), the job's webhook then names a host that now resolves
    to 127.0.0.1, which is not: the worker refuses to connect and logs why; nothing reaches the receiver."""
    stack = make_stack(env={"AITASKS_WEBHOOK_ALLOW_PRIVATE": "127.0.0.2/32"}, worker_queues=("cpu,gpu",))
    with stack.client() as c, stack.redis as r:
        task_id = submit(c, parameters={"duration_s": 2, "steps": 2}, webhook=f"http://127.0.0.2:{hits.port}/hook")
        r.hset(keys.job(task_id), "webhook", f"http://localhost:{hits.port}/hook")  # rebinding, as it were
        assert wait_status(c, task_id)["status"] == "SUCCESS"
        log = poll(lambda: c.get(f"{TASKS}/{task_id}/status/").json()["webhook"]["deliveries"], "the attempt")
    assert log[0]["delivered"] is False and "retry_in_s" not in log[0]
    assert log[0]["error"].startswith("Refused: localhost resolves to") and "a loopback address" in log[0]["error"]
    assert hits.hits == []


def test_urls_with_userinfo_or_odd_hosts_still_check_the_real_host():
    with pytest.raises(ValidationFailed, match="loopback"):
        read("http://example.com@127.0.0.1/")
    assert httpx.URL("http://example.com@127.0.0.1/").host == "127.0.0.1"  # what the sender connects to
