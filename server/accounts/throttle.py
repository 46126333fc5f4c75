"""Per-account sign-in throttling: after N failures in a row, each try waits base * 2^(failures - N) s.

Kept in Redis under a hash of the normalised email, for unknown addresses exactly as for known ones (so the
throttle tells nothing about which accounts exist), with a TTL: the delay is capped at AUTH_THROTTLE_MAX_S
and the count forgotten after twice that, so no attacker can lock an account for good. A Redis failure
lets the try through (the per-address rate limit still applies) rather than locking everyone out.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.settings import Settings

log = logging.getLogger("server.accounts.throttle")


class Throttle:
    """Failure counts by account in Redis."""

    def __init__(
        self,
        redis: Callable[[], aioredis.Redis | None],
        *,
        prefix: str,
        after: int,
        base_s: float,
        max_s: float,
    ) -> None:
        self._redis = redis
        self.prefix, self.after, self.base_s, self.max_s = prefix, after, base_s, max_s

    @classmethod
    def from_settings(cls, s: Settings, redis: Callable[[], aioredis.Redis | None]) -> Throttle:
        """The throttle the settings describe, on this process's Redis client."""
        return cls(
            redis,
            prefix=f"{s.REDIS_KEY_PREFIX}authfail:",
            after=s.AUTH_THROTTLE_AFTER,
            base_s=s.AUTH_THROTTLE_BASE_S,
            max_s=s.AUTH_THROTTLE_MAX_S,
        )

    def _key(self, account: str) -> str:
        return self.prefix + hashlib.sha256(account.encode()).hexdigest()[:32]

    def delay_s(self, failures: int) -> float:
        """How long a try must wait after the last failure, given the failures in a row."""
        if failures < self.after:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(failures - self.after, 60))

    async def wait_s(self, account: str) -> int:
        """Whole seconds before this account may try again (0: now)."""
        redis = self._redis()
        if redis is None:
            return 0
        try:
            count, last = await redis.hmget(self._key(account), ["n", "t"])
        except RedisError as exc:
            log.warning("throttle unavailable (%s): sign-in not throttled per account", type(exc).__name__)
            return 0
        if count is None or last is None:
            return 0
        left = float(last) + self.delay_s(int(count)) - time.time()
        return math.ceil(left) if left > 0 else 0

    async def failed(self, account: str) -> None:
        """Count one failure."""
        redis = self._redis()
        if redis is None:
            return
        key = self._key(account)
        try:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "n", 1)
                pipe.hset(key, "t", repr(time.time()))
                pipe.expire(key, math.ceil(2 * self.max_s))
                await pipe.execute()
        except RedisError as exc:
            log.warning("throttle unavailable (%s): failure not counted", type(exc).__name__)

    async def succeeded(self, account: str) -> None:
        """Forget the failures (a successful sign-in)."""
        redis = self._redis()
        if redis is None:
            return
        try:
            await redis.delete(self._key(account))
        except RedisError as exc:
            log.warning("throttle unavailable (%s)", type(exc).__name__)
