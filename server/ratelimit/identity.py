"""Who a request counts against: the client address (forwarded addresses only from trusted proxies), or
later the signed-in user. Keys are `ip:<addr>` or `u:<user id>`, so the two can never collide.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["ClientKeys", "IPNetwork", "client_key", "parse_ip", "user_key"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A proxy chain longer than this is not ours: stop walking (bounds the work a huge header can cause).
MAX_HOPS = 16
# One IPv6 subscriber usually owns a whole /64 and can rotate through it freely, so limit the /64.
IPV6_PREFIX = 64


def parse_ip(text: str) -> IPAddress | None:
    """An address from '1.2.3.4', '1.2.3.4:80', '2001:db8::1', '[2001:db8::1]:443'; None if malformed."""
    s = text.strip()
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            return None
        s = s[1:end]
    elif s.count(":") == 1:  # IPv4 with a port
        s = s.partition(":")[0]
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _key(addr: IPAddress) -> str:
    if isinstance(addr, ipaddress.IPv4Address):
        return f"ip:{addr}"
    net = ipaddress.IPv6Network((int(addr) >> (128 - IPV6_PREFIX) << (128 - IPV6_PREFIX), IPV6_PREFIX))
    return f"ip:{net}"


def _trusted(addr: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(addr in net for net in trusted)


def client_key(peer_ip: str, x_forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The limiter key of a request's client.

    The TCP peer, unless the peer is a trusted proxy: then X-Forwarded-For (all its values joined by ',') is
    walked from the right past trusted hops, and the first untrusted address is the client. A malformed hop
    on the way makes the peer the key (never a value a client may have forged). A forged header from an
    untrusted peer is ignored. IPv6 clients are keyed by their /64.
    """
    peer = parse_ip(peer_ip)
    if peer is None:
        return "ip:unknown"
    if not x_forwarded_for or not trusted or not _trusted(peer, trusted):
        return _key(peer)
    hops = x_forwarded_for.rsplit(",", MAX_HOPS)
    last = peer
    for hop in reversed(hops[-MAX_HOPS:]):
        addr = parse_ip(hop)
        if addr is None:
            return _key(peer)
        if not _trusted(addr, trusted):
            return _key(addr)
        last = addr
    if len(hops) > MAX_HOPS:
        return _key(peer)
    return _key(last)  # every hop is a trusted proxy: the request started inside our network


class ClientKeys:
    """client_key with this process's trusted proxies and a bounded memo: parsing addresses and testing
    networks costs 4-10 µs, a repeat costs a dict lookup (one per request in the wrapper)."""

    def __init__(self, trusted: Sequence[IPNetwork], max_entries: int = 65_536) -> None:
        self.trusted = tuple(trusted)
        self.max_entries = max_entries
        self._memo: dict[tuple[str, str | None], str] = {}

    def __call__(self, peer_ip: str, x_forwarded_for: str | None) -> str:
        """The limiter key of a request (see client_key)."""
        if not self.trusted:
            x_forwarded_for = None  # nobody is trusted: the header cannot matter, keep it out of the memo
        memo_key = (peer_ip, x_forwarded_for)
        key = self._memo.get(memo_key)
        if key is None:
            if len(self._memo) >= self.max_entries:
                self._memo.clear()  # crude but bounded: varying headers cannot grow memory
            key = self._memo[memo_key] = client_key(peer_ip, x_forwarded_for, self.trusted)
        return key


def user_key(user_id: int | str) -> str:
    """The limiter key of a signed-in user (the hook for per-user limits once auth exists)."""
    return f"u:{user_id}"
