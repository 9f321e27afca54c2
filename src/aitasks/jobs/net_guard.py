"""Which addresses a webhook may reach: one pure decision, made at submit (api/webhook_input.py) and
again at send against the address actually connected (worker/webhook_http.py).

Refused: loopback, unspecified, RFC 1918, carrier-grade NAT (100.64.0.0/10), link-local, multicast and
other not globally routable IPv4; loopback, unique local (fc00::/7), link-local, site-local, multicast
and other reserved IPv6; an IPv4 address written inside IPv6 (IPv4-mapped ``::ffff:a.b.c.d``,
IPv4-compatible ``::a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``) is judged as that IPv4 address. The operator's allow-list (``AITASKS_WEBHOOK_ALLOW_PRIVATE``)
lets private networks through; known cloud metadata addresses are refused even then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# AWS/GCP/Azure/OpenStack/Oracle, AWS's IPv6 one, Alibaba's.
METADATA = frozenset(ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))

_V4: tuple[tuple[IPv4Network, str], ...] = tuple((IPv4Network(n), reason) for n, reason in (
    ("0.0.0.0/8", "an unspecified address"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private (RFC 1918) address"),
    ("172.16.0.0/12", "a private (RFC 1918) address"),
    ("192.168.0.0/16", "a private (RFC 1918) address"),
    ("100.64.0.0/10", "a carrier-grade NAT (100.64.0.0/10) address"),
    ("169.254.0.0/16", "a link-local address"),
    ("224.0.0.0/4", "a multicast address"),
))
_V6: tuple[tuple[IPv6Network, str], ...] = tuple((IPv6Network(n), reason) for n, reason in (
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("fc00::/7", "a unique local (fc00::/7) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
))
# IPv6 forms that carry an IPv4 address in their last 32 bits (6to4 is handled on its own).
_EMBEDDING: tuple[tuple[IPv6Network, str], ...] = tuple((IPv6Network(n), form) for n, form in (
    ("::ffff:0:0/96", "an IPv4-mapped"),
    ("::ffff:0:0:0/96", "an IPv4-translated"),
    ("64:ff9b::/96", "a NAT64"),
    ("::/96", "an IPv4-compatible"),  # after :: and ::1, which _V6 names
))
_SIXTOFOUR = IPv6Network("2002::/16")


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.0/8, ::1"`` -> networks; a bare address is its own /32 or /128. ValueError names the
    entry that is not a network."""
    out: list[Network] = []
    for entry in (e.strip() for e in text.split(",")):
        if entry:
            try:
                out.append(ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP network (e.g. 10.0.0.0/8 or ::1)") from None
    return tuple(out)


def embedded_ipv4(addr: IPAddress) -> tuple[IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for, with the name of its form; None if it is none."""
    if not isinstance(addr, IPv6Address) or int(addr) <= 1:  # :: and ::1 are themselves
        return None
    if addr in _SIXTOFOUR:
        return IPv4Address((int(addr) >> 80) & 0xFFFFFFFF), "a 6to4"
    for net, form in _EMBEDDING:
        if addr in net:
            return IPv4Address(int(addr) & 0xFFFFFFFF), form
    return None


def _own_reason(addr: IPAddress) -> str | None:
    table: Sequence[tuple[Network, str]] = _V4 if isinstance(addr, IPv4Address) else _V6
    for net, reason in table:
        if addr in net:
            return reason
    return None if addr.is_global else "a reserved (not globally routable) address"


def refusal(addr: IPAddress, allowed: Iterable[Network] = ()) -> str | None:
    """Why a webhook may not reach ``addr`` (e.g. "a loopback address"), or None when it may."""
    inner = embedded_ipv4(addr)
    if addr in METADATA or (inner and inner[0] in METADATA):
        return "a cloud metadata address"
    allowed = tuple(allowed)
    if any(a in net for net in allowed for a in (addr, *(inner[:1] if inner else ())) if a.version == net.version):
        return None
    if inner:
        reason = _own_reason(inner[0])
        return f"{inner[1]} form of {inner[0]}, {reason}" if reason else None
    return _own_reason(addr)


def same_endpoint(addr: IPAddress, port: int, endpoints: Iterable[tuple[IPAddress, int]]) -> bool:
    """Whether (addr, port) is one of ``endpoints``; every loopback address counts as the same host."""
    for other, other_port in endpoints:
        if port == other_port and (addr == other or (addr.is_loopback and other.is_loopback)):
            return True
    return False
