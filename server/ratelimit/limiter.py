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
from typing import TYPE_CHECKING, Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, RedisError

from server.ratelimit.decision import Decision
from server.ratelimit.local import LocalLimiter
from server.ratelimit.policy import Policy, scaled

if TYPE_CHECKING:
    from server.settings import Settings

__all__ = ["GCRA_LUA", "RateLimiter", "Strategy"]

log = logging.getLogger("server.ratelimit")

Strategy = Literal["lease", "direct"]

# GCRA, for every entry given, on the theoretical arrival time (TAT, µs of Redis's clock) its keys hold. An
# entry is a client's key, optionally followed by its provider block's key (a coarser budget): a request is
# granted only as far as *both* have room, and is charged to both. Takes up to `want` requests at once (a
# lease) and grants what is available, so nothing is ever admitted twice. Many entries go in one call: one
# round trip for every client whose lease ran out in the same event-loop tick.
# ARGV per entry: interval µs (= window/quota), burst, want; a negative want (-want) says a block key
# follows, and two more values: block interval µs, block burst (entries without a block cost no extra
# bytes). Reply per entry: granted, remaining, µs until full, µs until retry, and with a block a fifth:
# µs until the block allows (0 when the block did not refuse).
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function state(key, interval, burst)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local avail = math.floor((now + interval * burst - tat) / interval + 1e-6)
  if avail > burst then avail = burst end
  if avail < 0 then avail = 0 end
  return tat, avail
end
local function charge(key, tat, grant, interval)
  tat = tat + grant * interval
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  return tat
end
local function retry(tat, interval, burst)
  return math.max(1, math.ceil(tat + interval - interval * burst - now))
end
local out = {}
local k = 1
local a = 1
while a <= #ARGV do
  local interval = tonumber(ARGV[a])
  local burst = tonumber(ARGV[a + 1])
  local want = tonumber(ARGV[a + 2])
  local key = KEYS[k]
  k = k + 1
  local tat, avail = state(key, interval, burst)
  local bkey, btat, bavail, binterval, bburst
  if want < 0 then
    want = -want
    binterval = tonumber(ARGV[a + 3])
    bburst = tonumber(ARGV[a + 4])
    bkey = KEYS[k]
    k = k + 1
    a = a + 5
    btat, bavail = state(bkey, binterval, bburst)
  else
    a = a + 3
  end
  local grant = math.min(want, avail)
  if bkey and bavail < grant then grant = bavail end
  if grant > 0 then
    tat = charge(key, tat, grant, interval)
    local left = avail - grant
    if bkey then
      charge(bkey, btat, grant, binterval)
      left = math.min(left, bavail - grant)
    end
    out[#out + 1] = grant
    out[#out + 1] = left
    out[#out + 1] = math.ceil(tat - now)
    out[#out + 1] = 0
    if bkey then out[#out + 1] = 0 end
  else
    local wait = 0
    if avail == 0 then wait = retry(tat, interval, burst) end
    local bwait = 0
    if bkey and bavail == 0 then bwait = retry(btat, binterval, bburst) end
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(tat - now)
    out[#out + 1] = math.max(1, wait, bwait)
    if bkey then out[#out + 1] = bwait end
  end
end
return out
"""
MAX_BATCH = 256  # entries (a client key and maybe its block key) per script call

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


_Entry = tuple[list[str], list[float], "asyncio.Future[list[int]]"]


class RateLimiter:
    """One per process: `await check(policy, key, block)` decides; `degraded` is True while Redis is away.

    `block` (from ClientKeys: `b6:<the /48>` or `b4:<the /24>`) adds a second, coarser budget of
    `multiplier` times the policy's quota and burst, shared by every client of the block; a request is
    allowed only if the client's budget and its block's both allow it (in the same script call).
    Multiplier 0 turns a family's block budget off.
    """

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
        ipv6_block_multiplier: int = 16,
        ipv4_block_multiplier: int = 0,
        owns_client: bool = False,
    ) -> None:
        if processes < 1 or lease_max < 1 or timeout_s <= 0:
            raise ValueError("processes and lease_max must be >= 1 and timeout_s > 0")
        if ipv6_block_multiplier < 0 or ipv4_block_multiplier < 0:
            raise ValueError("block multipliers must be >= 0 (0: no block budget)")
        self.enabled = enabled
        self.processes = processes
        self.prefix = prefix + "rl:"
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.strategy: Strategy = strategy
        self.lease_max = 1 if strategy == "direct" else lease_max
        self.max_keys = max_keys
        # By the block key's family character: 'b6:…' / 'b4:…'.
        self.block_multipliers = {"6": ipv6_block_multiplier, "4": ipv4_block_multiplier}
        self.redis_errors = 0
        self.overflows = 0
        self._redis = redis
        self._owns_client = owns_client
        self._script = redis.register_script(GCRA_LUA) if redis is not None else None
        self._batch: list[_Entry] = []
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        self._local = LocalLimiter(processes, max_keys=max_keys)
        self._leases: dict[str, _Lease] = {}
        self._blocked: dict[str, float] = {}  # "policy:block" -> monotonic time the block allows again
        self._lease_sizes: dict[Policy, int] = {}
        self._block_policies: dict[tuple[Policy, str], Policy | None] = {}
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

    @classmethod
    def from_settings(cls, s: Settings) -> RateLimiter:
        """This process's limiter: shared through Redis when REDIS_URL is set, else local limits only; a
        no-op when RATE_LIMIT_ENABLED is false."""
        v6, v4 = s.RATE_LIMIT_IPV6_BLOCK_MULTIPLIER, s.RATE_LIMIT_IPV4_BLOCK_MULTIPLIER
        if not s.RATE_LIMIT_ENABLED or s.REDIS_URL is None:
            return cls(
                None,
                processes=s.PROCESSES,
                enabled=s.RATE_LIMIT_ENABLED,
                ipv6_block_multiplier=v6,
                ipv4_block_multiplier=v4,
            )
        return cls.from_url(
            s.REDIS_URL.get_secret_value(),
            processes=s.PROCESSES,
            prefix=s.REDIS_KEY_PREFIX,
            timeout_s=s.RATE_LIMIT_REDIS_TIMEOUT_MS / 1000,
            ipv6_block_multiplier=v6,
            ipv4_block_multiplier=v4,
        )

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

    def block_policy(self, policy: Policy, block: str) -> Policy | None:
        """The budget of `block` under `policy` (the multiplier of its family), None when it has none."""
        found = self._block_policies.get((policy, block[1]), policy)
        if found is policy:  # not computed yet (a policy is never its own block budget)
            factor = self.block_multipliers.get(block[1], 0)
            found = self._block_policies[(policy, block[1])] = scaled(policy, factor) if factor else None
        return found

    def check_now(self, policy: Policy, key: str, block: str | None = None) -> Decision | None:
        """The decision if it needs no round trip (a lease with tokens, a cached denial, local mode);
        None when `check` must ask Redis. Lets the hot path skip a coroutine."""
        if not self.enabled:
            return Decision(True, policy.burst, 0, 0)
        if self._degraded or self._script is None:
            return None
        lease = self._leases.get(policy.name + ":" + key)
        now = time.monotonic()
        decision = None if lease is None else self._spend(policy, lease, now)
        if decision is None and block is not None and self._blocked:
            decision = self._block_denial(policy.name + ":" + block, now)
        return decision

    async def check(self, policy: Policy, key: str, block: str | None = None) -> Decision:
        """Spend one request of client `key` (and of its `block`) under `policy`; never raises because
        Redis is gone."""
        if not self.enabled:
            return Decision(True, policy.burst, 0, 0)
        bpolicy = None if block is None else self.block_policy(policy, block)
        if self._degraded or self._script is None:
            if self._script is not None:
                self._maybe_probe(time.monotonic())
            return self._local.check(policy, key, bpolicy, block)
        k = policy.name + ":" + key
        lease = self._leases.get(k)
        now = time.monotonic()
        if lease is not None:
            decision = self._spend(policy, lease, now)
            if decision is not None:
                return decision
        if bpolicy is not None and block is not None:
            decision = self._block_denial(policy.name + ":" + block, now)
            if decision is not None:
                return decision
            return await self._refill(policy, key, k, bpolicy, block)
        return await self._refill(policy, key, k, None, None)

    def _spend(self, policy: Policy, lease: _Lease, now: float) -> Decision | None:
        if lease.tokens > 0 and now < lease.expires:
            lease.tokens -= 1
            refilled = int((now - lease.fetched) / policy.interval_s)
            remaining = min(policy.burst, lease.remaining + lease.tokens + refilled)
            reset = lease.reset_at - now
            return Decision(True, remaining, math.ceil(reset) if reset > 0 else 0, 0)
        if now < lease.denied_until:
            retry = max(1, math.ceil(lease.denied_until - now))
            return Decision(False, 0, max(math.ceil(lease.reset_at - now), retry), retry)
        return None

    def _block_denial(self, bk: str, now: float) -> Decision | None:
        """A denial while Redis said this block has no room (clients rotating through a block ask once)."""
        until = self._blocked.get(bk)
        if until is None or now >= until:
            return None
        wait = max(1, math.ceil(until - now))
        return Decision(False, 0, wait, wait)

    async def _refill(
        self, policy: Policy, key: str, k: str, bpolicy: Policy | None, block: str | None
    ) -> Decision:
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
                return self._local.check(policy, key, bpolicy, block)
            lease = self._leases.get(k)
            if lease is not None:
                decision = self._spend(policy, lease, time.monotonic())
                if decision is not None:
                    return decision
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[k] = future
        try:
            return await self._fetch(policy, key, k, bpolicy, block)
        finally:
            del self._inflight[k]
            future.set_result(None)

    async def _fetch(
        self, policy: Policy, key: str, k: str, bpolicy: Policy | None, block: str | None
    ) -> Decision:
        assert self._script is not None
        lease = self._leases.get(k)
        # A client's first round trip under a block budget takes only what it needs: the unspent rest of a
        # lease would be lost to the whole block (clients rotating through a /48 would waste its budget).
        size = 1 if bpolicy is not None and lease is None else self.lease_size(policy)
        want = min(policy.burst, size + self._waiters.get(k, 0))
        keys = [self.prefix + k]
        args = [policy.interval_s * 1e6, policy.burst, want]
        bk = ""
        if bpolicy is not None and block is not None:
            bk = policy.name + ":" + block
            keys.append(self.prefix + bk)
            args[2:] = [-want, bpolicy.interval_s * 1e6, bpolicy.burst]
        try:
            reply = await self._queue(keys, args)
        except MaxConnectionsError:
            self.overflows += 1  # more concurrent round trips than the pool allows: not an outage
            return self._local.check(policy, key, bpolicy, block)
        except _REDIS_DOWN as exc:
            self._outage(exc)
            return self._local.check(policy, key, bpolicy, block)
        granted, remaining, reset_us, retry_us = reply[:4]
        block_us = reply[4] if len(reply) > 4 else 0
        reset_s = _ceil_us(reset_us)
        now = time.monotonic()
        if block_us > 0:
            if len(self._blocked) >= self.max_keys:
                self._prune_blocked(now)
            self._blocked[bk] = now + block_us / 1e6
        retry_s = _ceil_us(retry_us)
        if granted == 0:
            reset_s = max(reset_s, retry_s)  # refused by the block: r=0 until at least the retry
        if self.strategy == "direct":
            return Decision(granted > 0, remaining, reset_s, retry_s)
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
        return Decision(False, 0, reset_s, retry_s)

    def _queue(self, keys: list[str], args: list[float]) -> asyncio.Future[list[int]]:
        """Join the batch of this loop tick; the batch goes to Redis in one script call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._batch.append((keys, args, future))
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

    async def _send(self, batch: list[_Entry]) -> None:
        assert self._script is not None
        keys = [key for entry_keys, _, _ in batch for key in entry_keys]
        args = [a for _, entry_args, _ in batch for a in entry_args]
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
        at = 0
        for entry_keys, _, future in batch:
            size = 3 + len(entry_keys)  # 4 values, 5 with a block key
            if not future.done():
                future.set_result([int(x) for x in reply[at : at + size]])
            at += size

    def _prune(self, now: float) -> None:
        self._leases = {
            k: v for k, v in self._leases.items() if (v.tokens and v.expires > now) or v.denied_until > now
        }
        excess = len(self._leases) - int(self.max_keys * 0.9)
        for k in list(itertools.islice(self._leases, max(0, excess))):
            del self._leases[k]

    def _prune_blocked(self, now: float) -> None:
        self._blocked = {k: until for k, until in self._blocked.items() if until > now}
        excess = len(self._blocked) - int(self.max_keys * 0.9)
        for k in list(itertools.islice(self._blocked, max(0, excess))):
            del self._blocked[k]

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
