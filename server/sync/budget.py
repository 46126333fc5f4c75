"""The Zoho call budget of one organisation: requests per window, calls in flight, calls per UTC day.

Per window: a sliding log (never more than `rate` calls in any window, which a GCRA with a burst would
allow), in Redis when given so every process shares it, else in this process. In flight: a local semaphore
and, with Redis, leases in a sorted set that expire on their own if a process dies mid-call. Per day: one
atomic statement in PostgreSQL (durable; Redis may evict), else Redis, else this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from server.sync import zoho_repo
from server.sync.zoho_errors import ZohoPaused

log = logging.getLogger("server.sync.budget")

# KEYS: call times (sorted set, ms), hold flag, leases. ARGV: limit, window ms, member, lease member, lease
# ttl ms. Returns 0 (slot taken) or ms to wait; while waiting, the caller's lease is kept alive.
_RATE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = redis.call('PTTL', KEYS[2])
if wait <= 0 then
  local window = tonumber(ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
    return 0
  end
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = math.max(1, tonumber(oldest[2]) + window - now + 1)
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[5]), ARGV[4])
end
return wait
"""
# KEYS[1]: hold flag. ARGV[1]: ms. Extends the hold, never shortens it.
_HOLD_LUA = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
"""
# KEYS[1]: sorted set of leases (score: expiry ms). ARGV: limit, ttl ms, member. Returns 1 (taken) or 0.
_LEASE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
REDIS_ERRORS: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)
try:  # redis is a dependency; the guard only keeps this module importable in isolation
    import redis.exceptions

    REDIS_ERRORS = (*REDIS_ERRORS, redis.exceptions.RedisError)
except ImportError:  # pragma: no cover
    pass


REDIS_TIMEOUT_S = 1.0  # per Redis call; a stalled Redis must not stall the sync
REDIS_RETRY_S = 5.0  # after a failure, Redis is tried again this much later


def safety_margin_s(window_s: float) -> float:
    """Extra window length: a call counted at t reaches Zoho a little later, and late arrivals of old
    calls must not make a full window look like one call too many there. On a busy machine the gap between
    a slot's grant and the request's arrival reached 110 ms (CI: one code 44 in 250 calls with a 3 s window
    and a 0.11 s margin); 0.25 s plus 2 % covers that, and costs 2.4 % of Zoho's 100 calls a minute."""
    return 0.25 + 0.02 * window_s


class CallBudget:
    """Admits one call at a time through `slot()`; raises ZohoPaused when the day's budget is spent."""

    def __init__(
        self,
        *,
        organization_id: str,
        rate: int,
        window_s: float,
        max_concurrency: int,
        daily_budget: int,
        redis: Any = None,
        pool: Any = None,
        key_prefix: str = "",
        lease_ttl_s: float = 60.0,
    ) -> None:
        self.org, self.rate, self.daily_budget = organization_id, rate, daily_budget
        self.window_s = window_s + safety_margin_s(window_s)
        self.max_concurrency = max_concurrency
        self._redis, self._pool = redis, pool
        base = f"{key_prefix}zoho:{organization_id}:"
        self._rate_key, self._lease_key, self._day_key = base + "rate", base + "inflight", base + "day:"
        self._hold_key = base + "hold"
        self._hold_until = 0.0  # monotonic; this process's copy of the hold
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._sem = asyncio.Semaphore(max_concurrency)
        self._times: deque[float] = deque()  # local sliding log (monotonic seconds)
        self._rate_lock = asyncio.Lock()
        self._day: tuple[str, int] = ("", 0)  # local daily count
        self._redis_down_until = 0.0  # monotonic; Redis is skipped until then after a failure
        if redis is not None:  # EVALSHA, loading the script again if Redis forgot it
            self._rate_script = redis.register_script(_RATE_LUA)
            self._lease_script = redis.register_script(_LEASE_LUA)
            self._hold_script = redis.register_script(_HOLD_LUA)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a daily call, an in-flight slot and a rate slot for one HTTP call (in that order, so the
        call goes out right after its rate slot is taken)."""
        await self._reserve_day()
        async with self._sem:
            lease = await self._lease()
            try:
                await self._take_rate(lease)
                yield
            finally:
                if lease is not None:
                    await self._release(lease)

    # ---- Redis, while it answers -----------------------------------------------------------------------
    async def _shared(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> tuple[bool, Any]:
        """(True, result) of a Redis call; (False, None) when Redis is absent, down, or slow (then it is
        skipped for REDIS_RETRY_S and this process's own limits apply)."""
        if self._redis is None or time.monotonic() < self._redis_down_until:
            return False, None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                return True, await fn(*args, **kw)
        except REDIS_ERRORS as exc:
            if self._redis_down_until == 0.0 or time.monotonic() - self._redis_down_until > REDIS_RETRY_S:
                log.warning(
                    "Redis failed (%s): the Zoho call budget uses this process's own limits for %.0f s",
                    type(exc).__name__,
                    REDIS_RETRY_S,
                )
            self._redis_down_until = time.monotonic() + REDIS_RETRY_S
            return False, None

    # ---- per window -----------------------------------------------------------------------------------
    async def hold(self, seconds: float) -> None:
        """Zoho said slow down (429 Retry-After, code 44): no call of this organisation goes out, from any
        process, for `seconds`."""
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)
        if self._redis is not None and seconds > 0:
            await self._shared(self._hold_script, keys=[self._hold_key], args=[int(seconds * 1000)])

    async def _take_rate(self, lease: str | None) -> None:
        member = uuid.uuid4().hex
        keys = [self._rate_key, self._hold_key, self._lease_key]
        args = [self.rate, int(self.window_s * 1000), member, lease or "", self._lease_ttl_ms]
        while self._redis is not None:
            ok, wait_ms = await self._shared(self._rate_script, keys=keys, args=args)
            if not ok:
                break
            if int(wait_ms) == 0:
                return
            await asyncio.sleep(int(wait_ms) / 1000 + random.uniform(0, 0.01))
        async with self._rate_lock:  # waiters queue in order; each takes the next free slot
            while True:
                now = time.monotonic()
                if self._hold_until > now:
                    await asyncio.sleep(self._hold_until - now)
                    continue
                while self._times and now - self._times[0] >= self.window_s:
                    self._times.popleft()
                if len(self._times) < self.rate:
                    self._times.append(now)
                    return
                await asyncio.sleep(self._times[0] + self.window_s - now + 0.001)

    # ---- in flight ---------------------------------------------------------------------------------------
    async def _lease(self) -> str | None:
        member = uuid.uuid4().hex
        args = [self.max_concurrency, self._lease_ttl_ms, member]
        delay = 0.005
        while self._redis is not None:
            ok, taken = await self._shared(self._lease_script, keys=[self._lease_key], args=args)
            if not ok:
                return None
            if int(taken):
                return member
            await asyncio.sleep(delay + random.uniform(0, delay))
            delay = min(0.1, delay * 2)
        return None

    async def _release(self, member: str) -> None:
        await self._shared(self._redis.zrem, self._lease_key, member)  # else it expires on its own

    # ---- per UTC day ----------------------------------------------------------------------------------
    async def _reserve_day(self) -> None:
        if self._pool is not None:
            async with self._pool.acquire() as conn:
                if await zoho_repo.reserve_call(conn, self.org, self.daily_budget) is None:
                    raise self._paused()
            return
        today = datetime.now(UTC).strftime("%Y%m%d")
        ok, count = await self._shared(self._redis_count_call, self._day_key + today)
        if ok:
            if count > self.daily_budget:
                raise self._paused()
            return
        day, count = self._day
        count = count if day == today else 0
        if count >= self.daily_budget:
            raise self._paused()
        self._day = (today, count + 1)

    async def _redis_count_call(self, key: str) -> int:
        count = int(await self._redis.incr(key))
        if count == 1:
            await self._redis.expire(key, 2 * 86_400)
        return count

    def _paused(self) -> ZohoPaused:
        return ZohoPaused(0, f"daily Zoho call budget of {self.daily_budget} spent (UTC day)", 0)

    async def exhaust_day(self) -> None:
        """Zoho said its daily limit is reached (code 45): count today as spent for every process."""
        today = datetime.now(UTC).strftime("%Y%m%d")
        self._day = (today, self.daily_budget)
        if self._pool is not None:
            async with self._pool.acquire() as conn:
                await zoho_repo.exhaust_day(conn, self.org, self.daily_budget)
        elif self._redis is not None:
            await self._shared(self._redis.set, self._day_key + today, self.daily_budget, ex=2 * 86_400)

    async def used_today(self) -> int:
        """Calls counted today (in the shared store when there is one)."""
        today = datetime.now(UTC).strftime("%Y%m%d")
        if self._pool is not None:
            async with self._pool.acquire() as conn:
                return await zoho_repo.calls_today(conn, self.org)
        ok, value = await self._shared(self._redis.get, self._day_key + today) if self._redis else (False, 0)
        if ok:
            return int(value or 0)
        return self._day[1] if self._day[0] == today else 0
