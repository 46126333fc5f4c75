"""Stable client addresses for simulated users, from ranges no real client has: IPv4 from the benchmarking
range 198.18.0.0/15 (RFC 2544), IPv6 from the documentation range 2001:db8::/32 (RFC 3849). Plain Python (no
Locust import), so tests can load it without gevent's monkey-patching."""

from __future__ import annotations

import ipaddress

__all__ = ["client_address"]

IPV4_BASE = int(ipaddress.IPv4Address("198.18.0.0"))  # 198.18.0.0/15: 512 /24s
IPV6_BASE = int(ipaddress.IPv6Address("2001:db8::"))


def client_address(n: int, worker: int, ipv6_share: float) -> str:
    """The stable address of this process's n-th user: IPv6 for about `ipv6_share` of users, each in its own
    /48; IPv4 users spread over the 512 /24s of 198.18.0.0/15 first (so /24 budgets do not bind)."""
    before = int(n * ipv6_share)  # IPv6 users among the first n
    if int((n + 1) * ipv6_share) > before:
        index = max(0, worker) * 4096 + before
        return str(ipaddress.IPv6Address(IPV6_BASE + ((index % 65_536) << 80) + 1))
    index = max(0, worker) * 4096 + n - before  # the n-th user is this worker's (n - before)-th IPv4 user
    host = (index // 512) % 254 + 1
    return str(ipaddress.IPv4Address(IPV4_BASE + (index % 512) * 256 + host))
