"""Readiness of this process: probes run at most once per READY_CACHE_MS, debounced, with three outcomes.

- ready (200): the database answers within its budget; nothing is impaired.
- degraded (200): still able to serve, but something is impaired: Redis down (L1 and the database serve),
  the LISTEN connection reconnecting, a background task failing, fewer live worker processes than
  expected, or a database probe failing for less than READY_DB_FAIL_AFTER_S.
- unavailable (503): the database has been failing for READY_DB_FAIL_AFTER_S or longer (a single slow probe
  never flips it, so a moment of database slowness does not pull every instance out of the balancer at
  once), or this process is shutting down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from server.ratelimit import IPNetwork, parse_ip
from server.resources import Resources

MAX_HOPS = 16  # as the rate limiter: a longer X-Forwarded-For chain is not ours


@dataclass(slots=True)
class Probe:
    """One round of checks: the database (through the pool, within budget) and Redis."""

    db_ok: bool
    db_ms: float
    db_error: str = ""
    redis: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


class Readiness:
    """Per-process probe cache (single flight: concurrent callers share one probe) and debounce state."""

    def __init__(self, *, cache_s: float, db_timeout_s: float, db_fail_after_s: float) -> None:
        self.cache_s, self.db_timeout_s, self.db_fail_after_s = cache_s, db_timeout_s, db_fail_after_s
        self.last: Probe | None = None
        self.db_failures = 0  # consecutive failed database probes
        self.db_failing_since: float | None = None
        self.probes = 0
        self._running: asyncio.Future[Probe] | None = None

    async def probe(self, res: Resources) -> Probe:
        """The latest probe if younger than the cache time, else a new one (shared by concurrent callers)."""
        last = self.last
        if last is not None and time.monotonic() - last.at < self.cache_s:
            return last
        if self._running is not None:
            return await asyncio.shield(self._running)
        running = self._running = asyncio.get_running_loop().create_future()
        try:
            result = await self._run(res)
            running.set_result(result)
            return result
        except BaseException as exc:  # cancelled: the waiters must not hang
            running.set_exception(exc)
            running.exception()  # retrieved here, so an unawaited failure is not reported as lost
            raise
        finally:
            self._running = None

    async def _run(self, res: Resources) -> Probe:
        self.probes += 1
        started = time.monotonic()
        db_error = ""
        try:
            async with asyncio.timeout(self.db_timeout_s):
                async with res.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except Exception as exc:  # readiness reports any failure, it never raises
            db_error = type(exc).__name__
        db_ms = (time.monotonic() - started) * 1000
        if db_error:
            self.db_failures += 1
            if self.db_failing_since is None:
                self.db_failing_since = started
        else:
            self.db_failures, self.db_failing_since = 0, None
        redis: dict[str, Any] = {"configured": res.redis is not None}
        if res.redis is not None:
            try:
                async with asyncio.timeout(0.5):
                    redis["ok"] = bool(await res.redis.ping())
                if redis["ok"]:
                    res.cache.redis_reachable()
            except Exception as exc:
                redis["ok"] = False
                redis["error"] = type(exc).__name__
        self.last = Probe(not db_error, round(db_ms, 1), db_error, redis)
        return self.last

    def db_unavailable(self, probe: Probe) -> bool:
        """True once the database has kept failing for READY_DB_FAIL_AFTER_S (0: at the first failure)."""
        if probe.db_ok or self.db_failing_since is None:
            return False
        return probe.at - self.db_failing_since >= self.db_fail_after_s


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> Any:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy, the first untrusted hop of
    X-Forwarded-For from the right (the rate limiter's rule, server/ratelimit/identity.py). None if the
    address cannot be known."""
    addr = parse_ip(peer)
    if addr is None or not forwarded_for or not any(addr in net for net in trusted):
        return addr
    hops = forwarded_for.rsplit(",", MAX_HOPS)
    if len(hops) > MAX_HOPS:
        return None
    for hop in reversed(hops):
        hop_addr = parse_ip(hop)
        if hop_addr is None:
            return None
        addr = hop_addr
        if not any(addr in net for net in trusted):
            return addr
    return addr


def may_see_details(addr: Any, networks: tuple[IPNetwork, ...]) -> bool:
    """True if a client at `addr` may see the detailed readiness report."""
    return addr is not None and any(addr.version == net.version and addr in net for net in networks)
