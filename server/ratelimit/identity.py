"""Who a request counts against: the client address (forwarded addresses only from trusted proxies), or
later the signed-in user. Keys are `ip:<addr>` or `u:<user id>`, so the two can never collide.

Each address also names its provider block (`b6:<the /48>`, `b4:<the /24>`), the key of a coarser budget
(see RateLimiter): one IPv6 site owns a /48 and can rotate through its 65,536 /64s at will.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["ClientKeys", "IPNetwork", "Identity", "client_identity", "client_key", "parse_ip", "user_key"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (client key, block key or None): what the limiter charges for one request.
Identity = tuple[str, str | None]

# A proxy chain longer than this is not ours: stop walking (bounds the work a huge header can cause).
MAX_HOPS = 16
# The longest address a hop can carry: '[ffff:…:ffff%zone]:65535' fits; a longer hop is malformed.
MAX_HOP_CHARS = 64
# One IPv6 subscriber usually owns a whole /64 and can rotate through it freely, so limit the /64.
IPV6_PREFIX = 64
# Provider blocks: an IPv6 site is delegated a /48 (RFC 6177); an IPv4 /24 is the smallest routed block.
IPV6_BLOCK_PREFIX = 48
IPV4_BLOCK_PREFIX = 24
# Only headers up to this length are memoised: a proxy's real X-Forwarded-For ('client, proxy') is a few
# dozen bytes; a longer one is recomputed each time and never stored (it is client-controlled input).
MEMO_MAX_HEADER = 128
UNKNOWN: Identity = ("ip:unknown", None)


def parse_ip(text: str) -> IPAddress | None:
    """An address from '1.2.3.4', '1.2.3.4:80', '2001:db8::1', '[2001:db8::1]:443'; None if malformed."""
    s = text.strip()
    if len(s) > MAX_HOP_CHARS:
        return None
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


def _prefix(addr: IPAddress, prefix: int) -> str:
    # 'network/prefix' as str(ip_network(...)) writes it, from an address (3-5x cheaper than a network).
    bits = addr.max_prefixlen - prefix
    masked = int(addr) >> bits << bits
    if isinstance(addr, ipaddress.IPv4Address):
        return f"{ipaddress.IPv4Address(masked)}/{prefix}"
    return f"{ipaddress.IPv6Address(masked)}/{prefix}"


def _identity(addr: IPAddress) -> Identity:
    if isinstance(addr, ipaddress.IPv4Address):
        return f"ip:{addr}", f"b4:{_prefix(addr, IPV4_BLOCK_PREFIX)}"
    return f"ip:{_prefix(addr, IPV6_PREFIX)}", f"b6:{_prefix(addr, IPV6_BLOCK_PREFIX)}"


def _trusted(addr: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(addr in net for net in trusted)


def _forwarded_client(peer: IPAddress, x_forwarded_for: str, trusted: Sequence[IPNetwork]) -> IPAddress:
    """The first untrusted hop from the right of X-Forwarded-For (the peer is a trusted proxy)."""
    hops = x_forwarded_for.rsplit(",", MAX_HOPS)  # at most MAX_HOPS splits, whatever the header's size
    last = peer
    for hop in reversed(hops[-MAX_HOPS:]):
        addr = parse_ip(hop)
        if addr is None:
            return peer
        if not _trusted(addr, trusted):
            return addr
        last = addr
    if len(hops) > MAX_HOPS:
        return peer
    return last  # every hop is a trusted proxy: the request started inside our network


def client_identity(peer_ip: str, x_forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> Identity:
    """The limiter keys of a request's client: its own key and its provider block's (None if unknown).

    The TCP peer, unless the peer is a trusted proxy: then X-Forwarded-For (all its values joined by ',') is
    walked from the right past trusted hops, and the first untrusted address is the client. A malformed hop
    on the way makes the peer the key (never a value a client may have forged). A forged header from an
    untrusted peer is ignored. IPv6 clients are keyed by their /64, blocks are the /48 and the IPv4 /24.
    """
    peer = parse_ip(peer_ip)
    if peer is None:
        return UNKNOWN
    if not x_forwarded_for or not trusted or not _trusted(peer, trusted):
        return _identity(peer)
    return _identity(_forwarded_client(peer, x_forwarded_for, trusted))


def client_key(peer_ip: str, x_forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The limiter key of a request's client (see client_identity)."""
    return client_identity(peer_ip, x_forwarded_for, trusted)[0]


class ClientKeys:
    """client_identity with this process's trusted proxies and bounded memos: parsing addresses and testing
    networks costs 4-10 µs, a repeat costs a dict lookup or two (once per request in the wrapper).

    Both memos are bounded in entries and in key size: peers by the socket's address (at most
    MAX_HOP_CHARS), forwarded chains only when the header is at most MEMO_MAX_HEADER bytes long. Distinct
    oversized headers are recomputed (bounded work: MAX_HOPS hops of MAX_HOP_CHARS) and never stored.
    """

    def __init__(self, trusted: Sequence[IPNetwork], max_entries: int = 8192) -> None:
        self.trusted = tuple(trusted)
        self.max_entries = max_entries
        self._peers: dict[str, tuple[Identity, IPAddress | None]] = {}
        self._memo: dict[tuple[str, str], Identity] = {}

    def __call__(self, peer_ip: str, x_forwarded_for: str | None) -> Identity:
        """The limiter keys of a request (see client_identity)."""
        known = self._peers.get(peer_ip)
        if known is None:
            known = self._peer(peer_ip)
        identity, proxy = known
        if proxy is None or not x_forwarded_for:
            return identity  # not a trusted proxy: the header cannot matter
        if len(x_forwarded_for) > MEMO_MAX_HEADER:
            return _identity(_forwarded_client(proxy, x_forwarded_for, self.trusted))
        memo_key = (peer_ip, x_forwarded_for)
        found = self._memo.get(memo_key)
        if found is None:
            if len(self._memo) >= self.max_entries:
                self._memo.clear()  # crude but bounded: varying headers cannot grow memory
            found = self._memo[memo_key] = _identity(_forwarded_client(proxy, x_forwarded_for, self.trusted))
        return found

    def _peer(self, peer_ip: str) -> tuple[Identity, IPAddress | None]:
        """The peer's own identity, and the peer itself when it is a trusted proxy (else None)."""
        peer = parse_ip(peer_ip)
        if peer is None:
            return UNKNOWN, None
        known = (_identity(peer), peer if self.trusted and _trusted(peer, self.trusted) else None)
        if len(peer_ip) <= MAX_HOP_CHARS:  # a socket address always is; never store anything longer
            if len(self._peers) >= self.max_entries:
                self._peers.clear()
            self._peers[peer_ip] = known
        return known


def user_key(user_id: int | str) -> str:
    """The limiter key of a signed-in user (the hook for per-user limits once auth exists)."""
    return f"u:{user_id}"
