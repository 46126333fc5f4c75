"""In-process GCRA: the fallback when Redis is unreachable, each process enforcing its share of a quota."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

from server.ratelimit.decision import Decision
from server.ratelimit.policy import Policy

__all__ = ["LocalLimiter"]

_EPS = 1e-9


class LocalLimiter:
    """GCRA over a dict of theoretical arrival times, with quota and burst divided by `processes`."""

    def __init__(
        self, processes: int = 1, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self.processes = processes
        self.max_keys = max_keys
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._shares: dict[Policy, tuple[float, int]] = {}

    def _share(self, policy: Policy) -> tuple[float, int]:
        share = self._shares.get(policy)
        if share is None:
            quota = max(1, policy.quota // self.processes)
            burst = max(1, policy.burst // self.processes)
            share = self._shares[policy] = (policy.window_s / quota, burst)
        return share

    def check(self, policy: Policy, key: str) -> Decision:
        """Spend one request of `key` under this process's share of `policy`."""
        interval, burst = self._share(policy)
        now = self._clock()
        k = policy.name + ":" + key
        tat = self._tat.get(k, now)
        if tat < now:
            tat = now
        new_tat = tat + interval
        tau = burst * interval
        if new_tat - now > tau + _EPS:
            return Decision(False, 0, math.ceil(tat - now), max(1, math.ceil(new_tat - tau - now)))
        if len(self._tat) >= self.max_keys and k not in self._tat:
            self._prune(now)
        self._tat[k] = new_tat
        remaining = int((now + tau - new_tat) / interval + _EPS)
        return Decision(True, remaining, math.ceil(new_tat - now - _EPS), 0)

    def _prune(self, now: float) -> None:
        # A key whose TAT has passed has a full bucket: forgetting it changes nothing.
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        excess = len(self._tat) - int(self.max_keys * 0.9)
        for k in list(itertools.islice(self._tat, max(0, excess))):  # oldest first: insertion order
            del self._tat[k]

    def clear(self) -> None:
        """Forget every key (used when Redis is back and owns the counts again)."""
        self._tat.clear()
