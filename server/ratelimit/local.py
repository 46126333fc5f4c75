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
    """GCRA over a dict of theoretical arrival times, with quota and burst divided by `processes`.

    Like the shared limiter, a request may also be charged to its client's block (a coarser budget): it is
    allowed only if both have room. At most `max_keys` keys (client and block keys alike) are kept.
    """

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

    def check(
        self, policy: Policy, key: str, block_policy: Policy | None = None, block: str | None = None
    ) -> Decision:
        """Spend one request of `key` (and of `block` under `block_policy`) under this process's share."""
        now = self._clock()
        k = policy.name + ":" + key
        interval, burst = self._share(policy)
        tat = max(self._tat.get(k, now), now)
        new_tat, tau = tat + interval, burst * interval
        wait = new_tat - tau - now  # > 0: denied for this long
        bk, new_btat, binterval, bburst = "", 0.0, 1.0, 0
        if block_policy is not None and block is not None:
            bk = policy.name + ":" + block
            binterval, bburst = self._share(block_policy)
            new_btat = max(self._tat.get(bk, now), now) + binterval
            wait = max(wait, new_btat - bburst * binterval - now)
        if wait > _EPS:
            retry = max(1, math.ceil(wait))
            return Decision(False, 0, max(retry, math.ceil(tat - now)), retry)
        for kk in (k, bk) if bk else (k,):
            if len(self._tat) >= self.max_keys and kk not in self._tat:
                self._prune(now)
        self._tat[k] = new_tat
        remaining = int((now + tau - new_tat) / interval + _EPS)
        if bk:
            self._tat[bk] = new_btat
            remaining = min(remaining, int((now + bburst * binterval - new_btat) / binterval + _EPS))
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
