"""Hosts for tests: Linux network namespaces joined by a bridge, each with its own address, made by the test
and removed afterwards (whatever happened). A process started in a host sees only that host's network: it
reaches the others through the bridge by their addresses, as separate machines on one LAN would.

Root only (CAP_NET_ADMIN). Names carry a random tag, and the subnet is one no route of this machine uses,
so nothing outside the hosts the test made is touched; traffic stays on the bridge (10.x.y.0/24).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


def available() -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class Host:
    name: str  # its namespace
    address: str
    link: str  # the bridge side of its cable: down cuts the host off, as a pulled cable would

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host (``ip netns exec`` then execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.name, *command]

    def cut(self) -> None:
        ip("link", "set", self.link, "down")

    def mend(self) -> None:
        ip("link", "set", self.link, "up")


def _free_subnet() -> ipaddress.IPv4Network:
    used = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.{secrets.randbelow(50) + 200}.{secrets.randbelow(250) + 1}.0/24")
        if f"{net.network_address}".rsplit(".", 1)[0] + "." not in used:
            return net
    raise RuntimeError("no free 10.x.y.0/24 subnet")


@contextlib.contextmanager
def lan(names: list[str]) -> Iterator[tuple[str, dict[str, Host]]]:
    """A bridge (the machine the test runs on takes its first address) and one host per name; yields the
    bridge's address and the hosts by name. Everything is removed on the way out."""
    tag = secrets.token_hex(2)
    net = _free_subnet()
    addresses = [str(a) for a in net.hosts()]
    bridge = f"ait{tag}br"
    made: list[str] = []
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{addresses[0]}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        hosts: dict[str, Host] = {}
        for i, name in enumerate(names, start=1):
            ns, link, peer = f"ait-{tag}-{name}", f"ait{tag}h{i}", f"ait{tag}p{i}"
            ip("netns", "add", ns)
            made.append(ns)
            ip("link", "add", link, "type", "veth", "peer", "name", peer, "netns", ns)
            ip("link", "set", link, "master", bridge)
            ip("link", "set", link, "up")
            ip("-n", ns, "addr", "add", f"{addresses[i]}/24", "dev", peer)
            ip("-n", ns, "link", "set", peer, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            hosts[name] = Host(ns, addresses[i], link)
        yield addresses[0], hosts
    finally:
        for ns in made:  # deleting a namespace deletes its end of each cable, and so the cable
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)
