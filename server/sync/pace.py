"""How a run shares the machine with the API: its catalog writes take at most ZOHO_SYNC_WRITE_SHARE of its
wall time, and less while tasks on the host wait for a CPU (ZOHO_SYNC_CPU_PRESSURE).

Each batch a run writes costs the database (COPY, upserts, the change feed's triggers, index upkeep) and
then every serving process (its catch-up: the changed rows fetched, new names placed, the row store
refilled). Unpaced, an unthrottled run writes back to back, and on a small machine those costs add up to the
CPU the API needed: under `make load` its p99 doubled while a full run imported 50,000 items. So after a
write that took `w` seconds the run pauses `w * (1 - share) / share` (share 0.5: as long as the write),
during which the processes catch up with nothing else from it in the way. The pause follows the write's own
time, so it grows when the machine is busy (a write takes longer) and shrinks to almost nothing when it is
idle. Against Zoho itself the per-minute limit (100 calls, 200 items each) spaces the batches more than this,
and the next page downloads during the pause: it then costs nothing.

That alone still left the API's p99 at twice its own under `make load` on a two-core host: the workers did
not lack CPU on average (the host was ~60 % busy), they waited for one whenever the run's writes and the
catch-ups they cause held both (a probe of a worker's event loop: its stalls over 5 ms were mostly time on
the run queue, not its own work). Linux counts exactly that wait: /proc/pressure/cpu's `some` total is the
time during which at least one runnable task had no CPU. After each write the pacer reads how much of the
time since it last judged (0.25 s at least: a shorter window is noise, one burst of a 0.1 s write reads as
pressure) was such time; above ZOHO_SYNC_CPU_PRESSURE the run's share is divided by 1.5 (to 1/16 of the
setting at most), at or below it grows back by 1.25, so that a window over the limit now and then does not
drag it down (it falls only while over a third of the windows are over).
A run alone on the host (a few % of pressure) is not slowed; one beside a busy API slows until the
pressure falls to the setting.
Without the file (another OS, an old kernel, a container that hides it) the pacing is the share alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

# One pause at most (a price book of 100,000 prices is one write of seconds: the run does not stop as long).
MAX_PAUSE_S = 5.0
PSI_CPU = Path("/proc/pressure/cpu")
# Under pressure the share falls by this factor per window judged, to the setting / SLOWEST at most; it
# grows back by RECOVER per window without.
SLOWER = 1.5
RECOVER = 1.25
SLOWEST = 16
# The pressure is judged over this long at least (a write and its pause, or several).
WINDOW_S = 0.25


class CpuPressure:
    """The share of wall time during which some task on this host waited for a CPU (Linux PSI), over
    windows of at least `window_s` (shorter ones are noise: one burst of a 0.1 s write reads as pressure)."""

    def __init__(self, path: Path = PSI_CPU, window_s: float = WINDOW_S) -> None:
        self.path = path
        self.window_s = window_s
        self._last = self._read()

    def _read(self) -> tuple[int, float] | None:
        """(`some` stall total in µs, monotonic time); None when the file is missing or unreadable."""
        try:
            with self.path.open() as f:
                first = f.readline()
            return int(first.rsplit("total=", 1)[1]), time.monotonic()
        except (OSError, ValueError, IndexError):
            return None

    def since_last(self) -> float | None:
        """The share since the window began (at creation, then at the last call that returned one), in
        [0, 1]; None when unknown or while the window is shorter than `window_s`."""
        now, last = self._read(), self._last
        if now is None or last is None:
            self._last = now
            return None
        if now[1] - last[1] < self.window_s:
            return None
        self._last = now
        return min(1.0, max(0.0, (now[0] - last[0]) / 1e6 / (now[1] - last[1])))


class Pacer:
    """Pauses after each timed write so that writes take `share` (0 < share <= 1) of the wall time, less
    while the host's CPU pressure is above `pressure_limit` (0: never less)."""

    def __init__(
        self,
        share: float = 1.0,
        max_pause_s: float = MAX_PAUSE_S,
        pressure_limit: float = 0.0,
        pressure: CpuPressure | None = None,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"write share {share!r}: expected 0 < share <= 1")
        self.share = share
        self.max_pause_s = max_pause_s
        self.pressure_limit = pressure_limit
        self.pressure = pressure if pressure is not None else CpuPressure() if pressure_limit > 0 else None
        self.effective = share  # the share now: below `share` while the host is under pressure
        self.paused_s = 0.0  # the run's pauses, in all
        self.pressure_paused_s = 0.0  # of those, the part the pressure added

    def pause_for(self, worked_s: float, share: float | None = None) -> float:
        """How long to pause after a write of `worked_s` seconds (at `share`, by default the setting)."""
        s = self.share if share is None else share
        return min(self.max_pause_s, max(0.0, worked_s) * (1 - s) / s)

    def adapt(self, pressure: float | None) -> None:
        """Move the share by the CPU pressure of the window just judged (None: none judged, no move)."""
        if pressure is None or self.pressure_limit <= 0:
            return
        if pressure > self.pressure_limit:
            self.effective = max(self.share / SLOWEST, self.effective / SLOWER)
        else:
            self.effective = min(self.share, self.effective * RECOVER)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        """Time the block (one batch's transaction and what goes with it), then pause as its time and the
        CPU pressure say (not when it raised: the run is ending)."""
        started = time.monotonic()
        yield
        worked = time.monotonic() - started
        if self.pressure is not None:
            self.adapt(self.pressure.since_last())
        pause = self.pause_for(worked, self.effective)
        if pause > 0:
            self.paused_s += pause
            self.pressure_paused_s += max(0.0, pause - self.pause_for(worked))
            await asyncio.sleep(pause)
