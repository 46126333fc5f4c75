"""How a run shares the machine with the API: its catalog writes take at most ZOHO_SYNC_WRITE_SHARE of its
wall time.

Each batch a run writes costs the database (COPY, upserts, the change feed's triggers, index upkeep) and
then every serving process (its catch-up: the changed rows fetched, new names placed, the row store
refilled). Unpaced, an unthrottled run writes back to back, and on a small machine those costs add up to the
CPU the API needed: under `make load` its p99 doubled while a full run imported 50,000 items. So after a
write that took `w` seconds the run pauses `w * (1 - share) / share` (share 0.5: as long as the write),
during which the processes catch up with nothing else from it in the way. The pause follows the write's own
time, so it grows when the machine is busy (a write takes longer) and shrinks to almost nothing when it is
idle. Against Zoho itself the per-minute limit (100 calls, 200 items each) spaces the batches more than this,
and the next page downloads during the pause: it then costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

# One pause at most (a price book of 100,000 prices is one write of seconds: the run does not stop as long).
MAX_PAUSE_S = 5.0


class Pacer:
    """Pauses after each timed write so that writes take `share` (0 < share <= 1) of the wall time."""

    def __init__(self, share: float = 1.0, max_pause_s: float = MAX_PAUSE_S) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"write share {share!r}: expected 0 < share <= 1")
        self.share = share
        self.max_pause_s = max_pause_s
        self.writes = 0
        self.paused_s = 0.0  # the run's pauses, in all

    def pause_for(self, worked_s: float) -> float:
        """How long to pause after a write of `worked_s` seconds."""
        return min(self.max_pause_s, max(0.0, worked_s) * (1 - self.share) / self.share)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        """Time the block (one batch's transaction and what goes with it), then pause as its time says (not
        when it raised: the run is ending)."""
        started = time.monotonic()
        yield
        self.writes += 1
        pause = self.pause_for(time.monotonic() - started)
        if pause > 0:
            self.paused_s += pause
            await asyncio.sleep(pause)
