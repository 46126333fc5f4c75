"""The shared limiter: GCRA state in Redis (one Lua script, Redis's clock), spent through small local leases,
with an in-process fallback while Redis is unreachable. See the package docstring for the trade-offs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, RedisError

from server.ratelimit.decision import Decision
from server.ratelimit.local import LocalLimiter
from server.ratelimit.policy import Policy

__all__ = ["GCRA_LUA", "RateLimiter", "Strategy"]

log = logging.getLogger("server.ratelimit")

Strategy = Literal["lease", "direct"]

# GCRA, for every key given, on the theoretical arrival time (TAT, µs of Redis's clock) it holds. Takes up
# to `want` requests at once (a lease) and grants what is available, so nothing is ever admitted twice. Many
# keys go in one call: one round trip for every client whose lease ran out in the same event-loop tick.
# ARGV: (interval µs = window/quota, burst, want) per key. Reply per key: granted, remaining,
# µs until full, µs until retry.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[i * 3 - 2])
  local burst = tonumber(ARGV[i * 3 - 1])
  local want = tonumber(ARGV[i * 3])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local tau = interval * burst
  local avail = math.floor((now + tau - tat) / interval + 1e-6)
  if avail > burst then avail = burst end
  if avail < 0 then avail = 0 end
  local grant = math.min(want, avail)
  if grant > 0 then
    tat = tat + grant * interval
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    out[#out + 1] = grant
    out[#out + 1] = avail - grant
    out[#out + 1] = math.ceil(tat - now)
    out[#out + 1] = 0
  else
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(tat - now)
    out[#out + 1] = math.max(1, math.ceil(tat + interval - tau - now))
  end
end
return out
"""
MAX_BATCH = 256  # keys per script call

_REDIS_DOWN = (RedisError, OSError, TimeoutError)


def _ceil_us(us: int) -> int:
    return -(-us // 1_000_000)


class _Lease:
    """This process's view of one (policy, client): leased requests left, and a cached denial."""

    __slots__ = ("denied_until", "expires", "fetched", "remaining", "reset_at", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.remaining = 0
        self.fetched = 0.0
        self.reset_at = 0.0
        self.denied_until = 0.0
        self.expires = 0.0


class RateLimiter:
    """One per process: `await check(policy, key)` decides; `degraded` is True while Redis is away."""

    def __init__(
        self,
        redis: aioredis.Redis | None,
        *,
        processes: int = 1,
        prefix: str = "",
        timeout_s: float = 0.1,
        probe_interval_s: float = 1.0,
        strategy: Strategy = "lease",
        lease_max: int = 1024,
        enabled: bool = True,
        max_keys: int = 100_000,
        owns_client: bool = False,
    ) -> None:
        if processes < 1 or lease_max < 1 or timeout_s <= 0:
            raise ValueError("processes and lease_max must be >= 1 and timeout_s > 0")
        self.enabled = enabled
        self.processes = processes
        self.prefix = prefix + "rl:"
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.strategy: Strategy = strategy
        self.lease_max = 1 if strategy == "direct" else lease_max
        self.max_keys = max_keys
        self.redis_errors = 0
        self.overflows = 0
        self._redis = redis
        self._owns_client = owns_client
        self._script = redis.register_script(GCRA_LUA) if redis is not None else None
        self._batch: list[tuple[str, list[float], asyncio.Future[list[int]]]] = []
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        self._local = LocalLimiter(processes, max_keys=max_keys)
        self._leases: dict[str, _Lease] = {}
        self._lease_sizes: dict[Policy, int] = {}
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._waiters: dict[str, int] = {}
        self._degraded = False
        self._last_probe = 0.0
        self._probe_task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 0.1, max_connections: int = 100, **kwargs: Any
    ) -> RateLimiter:
        """A limiter with its own Redis client: short timeouts, one immediate retry (a stale connection)."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            max_connections=max_connections,
        )
        return cls(client, timeout_s=timeout_s, owns_client=True, **kwargs)

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and limits are local (reading it schedules a recovery probe)."""
        if self._degraded:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule
                self._maybe_probe(time.monotonic())
        return self._degraded

    def lease_size(self, policy: Policy) -> int:
        """Requests taken from Redis per round trip: at most a tenth of the burst across all processes."""
        size = self._lease_sizes.get(policy)
        if size is None:
            size = max(1, min(self.lease_max, policy.burst // (10 * self.processes)))
            self._lease_sizes[policy] = size
        return size

    def check_now(self, policy: Policy, key: str) -> Decision | None:
        """The decision if it needs no round trip (a lease with tokens, a cached denial, local mode);
        None when `check` must ask Redis. Lets the hot path skip a coroutine."""
        if not self.enabled:
            return Decision(True, policy.burst, 0, 0)
        if self._degraded or self._script is None:
            return None
        lease = self._leases.get(policy.name + ":" + key)
        return None if lease is None else self._spend(policy, lease, time.monotonic())

    async def check(self, policy: Policy, key: str) -> Decision:
        """Spend one request of client `key` under `policy`; never raises because Redis is gone."""
        if not self.enabled:
            return Decision(True, policy.burst, 0, 0)
        if self._degraded or self._script is None:
            if self._script is not None:
                self._maybe_probe(time.monotonic())
            return self._local.check(policy, key)
        k = policy.name + ":" + key
        lease = self._leases.get(k)
        if lease is not None:
            decision = self._spend(policy, lease, time.monotonic())
            if decision is not None:
                return decision
        return await self._refill(policy, key, k)

    def _spend(self, policy: Policy, lease: _Lease, now: float) -> Decision | None:
        if lease.tokens > 0 and now < lease.expires:
            lease.tokens -= 1
            refilled = int((now - lease.fetched) / policy.interval_s)
            remaining = min(policy.burst, lease.remaining + lease.tokens + refilled)
            reset = lease.reset_at - now
            return Decision(True, remaining, math.ceil(reset) if reset > 0 else 0, 0)
        if now < lease.denied_until:
            reset = math.ceil(lease.reset_at - now)
            return Decision(False, 0, max(reset, 1), max(1, math.ceil(lease.denied_until - now)))
        return None

    async def _refill(self, policy: Policy, key: str, k: str) -> Decision:
        # Concurrent requests of one client share a single round trip: later ones wait for its lease (sized
        # to include them). Each round trip either grants, caches a denial or degrades, so this ends.
        while (pending := self._inflight.get(k)) is not None:
            self._waiters[k] = self._waiters.get(k, 0) + 1
            try:
                await asyncio.shield(pending)
            finally:
                left = self._waiters.pop(k) - 1
                if left:
                    self._waiters[k] = left
            if self._degraded:
                return self._local.check(policy, key)
            lease = self._leases.get(k)
            if lease is not None:
                decision = self._spend(policy, lease, time.monotonic())
                if decision is not None:
                    return decision
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[k] = future
        try:
            return await self._fetch(policy, key, k)
        finally:
            del self._inflight[k]
            future.set_result(None)

    async def _fetch(self, policy: Policy, key: str, k: str) -> Decision:
        assert self._script is not None
        want = min(policy.burst, self.lease_size(policy) + self._waiters.get(k, 0))
        try:
            reply = await self._queue(self.prefix + k, [policy.interval_s * 1e6, policy.burst, want])
        except MaxConnectionsError:
            self.overflows += 1  # more concurrent round trips than the pool allows: not an outage
            return self._local.check(policy, key)
        except _REDIS_DOWN as exc:
            self._outage(exc)
            return self._local.check(policy, key)
        granted, remaining, reset_us, retry_us = (int(x) for x in reply)
        reset_s = _ceil_us(reset_us)
        if self.strategy == "direct":
            return Decision(granted > 0, remaining, reset_s, _ceil_us(retry_us))
        now = time.monotonic()
        lease = self._leases.get(k)
        if lease is None:
            if len(self._leases) >= self.max_keys:
                self._prune(now)
            lease = self._leases[k] = _Lease()
        lease.fetched = now
        lease.reset_at = now + reset_us / 1e6
        lease.remaining = remaining
        if granted > 0:
            lease.tokens = granted - 1
            lease.denied_until = 0.0
            lease.expires = now + policy.window_s
            return Decision(True, remaining + lease.tokens, reset_s, 0)
        lease.tokens = 0
        lease.denied_until = now + retry_us / 1e6
        return Decision(False, 0, max(reset_s, 1), _ceil_us(retry_us))

    def _queue(self, redis_key: str, args: list[float]) -> asyncio.Future[list[int]]:
        """Join the batch of this loop tick; the batch goes to Redis in one script call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._batch.append((redis_key, args, future))
        if not self._flush_scheduled:
            # call_soon runs after the callbacks already queued: every request handled in this tick joins.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        for start in range(0, len(batch), MAX_BATCH):
            task = asyncio.get_running_loop().create_task(self._send(batch[start : start + MAX_BATCH]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[str, list[float], asyncio.Future[list[int]]]]) -> None:
        assert self._script is not None
        keys = [key for key, _, _ in batch]
        args = [a for _, key_args, _ in batch for a in key_args]
        try:
            self.round_trips += 1
            async with asyncio.timeout(self.timeout_s):
                reply = await self._script(keys=keys, args=args)
        except BaseException as exc:  # every waiter sees the failure and decides (local, overflow)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved by the waiter; never "never retrieved"
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        values = [int(x) for x in reply]
        for i, (_, _, future) in enumerate(batch):
            if not future.done():
                future.set_result(values[i * 4 : i * 4 + 4])

    def _prune(self, now: float) -> None:
        self._leases = {
            k: v for k, v in self._leases.items() if (v.tokens and v.expires > now) or v.denied_until > now
        }
        excess = len(self._leases) - int(self.max_keys * 0.9)
        for k in list(itertools.islice(self._leases, max(0, excess))):
            del self._leases[k]

    # -- outage and recovery ------------------------------------------------------------------------

    def _outage(self, exc: BaseException) -> None:
        self.redis_errors += 1
        if self._degraded:
            return
        self._degraded = True
        self._last_probe = time.monotonic()
        log.warning(
            "rate limiter: Redis unreachable (%s: %s); limiting locally at 1/%d of each quota until back",
            type(exc).__name__,
            exc,
            self.processes,
        )

    def _maybe_probe(self, now: float) -> None:
        if self._probe_task is None and now - self._last_probe >= self.probe_interval_s:
            self._last_probe = now
            self._probe_task = asyncio.get_running_loop().create_task(self._probe(), name="ratelimit-probe")

    async def _probe(self) -> None:
        assert self._redis is not None
        try:
            # Connections in the pool may have died with the server: start over with fresh ones.
            await self._redis.connection_pool.disconnect()
            async with asyncio.timeout(self.timeout_s):
                await self._redis.ping()
        except _REDIS_DOWN:
            return
        finally:
            self._probe_task = None
        self._degraded = False
        self._local.clear()
        log.info("rate limiter: Redis is back; shared limits resumed")

    async def aclose(self) -> None:
        """Stop the recovery probe; close the Redis client if this limiter made it (from_url)."""
        for sending in list(self._sending):
            with contextlib.suppress(BaseException):
                await sending
        task = self._probe_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_client and self._redis is not None:
            await self._redis.aclose()
