"""The service's own sync schedule: an incremental run every ZOHO_SYNC_INTERVAL_S, a full reconcile daily.

Who runs a slot: in each instance only the first worker process (slot 0 of the pool) claims slots, and
across instances a claim is one conditional UPDATE of `sync_state` (repo.CLAIM_*), so each slot is taken by
one process of one instance. The run itself still takes the sync's advisory lock: a slot that comes while
another run holds it (a manual run, the CLI, a long full run) is skipped with a debug line, never run
twice at once. Times are the database's clock, so instances with skewed clocks agree.

The daily full run is due once the day's `ZOHO_SYNC_FULL_AT` (UTC) has passed, unless that slot was
claimed already or a full run ended after it. A service that never made a full run (a fresh database) is
due at once. When a full run is due the incremental slot is taken with it (the full run covers it).
Every other process reads the plan every few seconds, so /ready shows the same next run times anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from server.settings import Settings
from server.sync import repo

log = logging.getLogger("server.sync.schedule")

REFRESH_S = 5.0  # longest sleep between two readings of the plan (picks up other processes' claims)
DUE_MARGIN_S = 0.01  # sleep past a due time: the database's clock, not ours, decides
DAY = timedelta(days=1)
Kind = Literal["full", "incremental"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """What the settings ask for: the incremental interval (0: none) and the daily full time ("": none)."""

    interval_s: float
    full_at: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        """The schedule of ZOHO_SYNC_INTERVAL_S and ZOHO_SYNC_FULL_AT."""
        return cls(settings.ZOHO_SYNC_INTERVAL_S, settings.ZOHO_SYNC_FULL_AT)

    @property
    def enabled(self) -> bool:
        """True when something is scheduled at all."""
        return self.interval_s > 0 or bool(self.full_at)

    def describe(self) -> dict[str, Any]:
        """The settings part of /ready's sync section."""
        return {
            "enabled": self.enabled,
            "interval_s": self.interval_s,
            "full_at": f"{self.full_at} UTC" if self.full_at else None,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """The schedule as read from the database: next due times and the newest run."""

    now: datetime
    next_incremental: datetime | None
    next_full: datetime | None
    last_run: dict[str, Any] | None

    def due_in(self) -> float:
        """Seconds until the next due slot (0: due now; inf: nothing scheduled)."""
        times = [t for t in (self.next_incremental, self.next_full) if t is not None]
        if not times:
            return float("inf")
        return max(0.0, (min(times) - self.now).total_seconds())

    def report(self) -> dict[str, Any]:
        """The plan part of /ready's sync section (ISO times, UTC)."""
        return {
            "next_incremental_at": _iso(self.next_incremental),
            "next_full_at": _iso(self.next_full),
            "last_run": self.last_run,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def plan_from_row(schedule: Schedule, row: Any) -> Plan:
    """Next due times from repo.SCHEDULE_PLAN's row."""
    now = row["now"]
    next_incremental = None
    if schedule.interval_s > 0:
        claimed = row["schedule_incremental_at"]
        next_incremental = now if claimed is None else claimed + timedelta(seconds=schedule.interval_s)
    next_full = None
    if schedule.full_at:
        slot, claimed, last_full = row["full_slot"], row["schedule_full_slot"], row["last_full_at"]
        owed = (claimed is None or claimed < slot) and (last_full is None or last_full < slot)
        next_full = slot if owed else slot + DAY
    last_run = None
    if row["run_id"] is not None:
        last_run = {
            "id": row["run_id"],
            "kind": row["run_kind"],
            "status": row["run_status"],
            "started_at": _iso(row["run_started_at"]),
            "finished_at": _iso(row["run_finished_at"]),
        }
    return Plan(now, next_incremental, next_full, last_run)


def _full_at(schedule: Schedule) -> timedelta:
    """The daily full run's time of day as an offset from midnight (00:00 when none: the query needs one)."""
    hours, _, minutes = (schedule.full_at or "00:00").partition(":")
    return timedelta(hours=int(hours), minutes=int(minutes))


async def read_plan(conn: asyncpg.Connection, schedule: Schedule) -> Plan:
    """The plan as the database sees it now."""
    row = await conn.fetchrow(repo.SCHEDULE_PLAN, _full_at(schedule))
    return plan_from_row(schedule, row)


async def claim(conn: asyncpg.Connection, schedule: Schedule) -> Kind | None:
    """Take the slot that is due, if no other process took it: the full run first; None when none is."""
    async with conn.transaction():
        if schedule.full_at and await conn.fetchval(repo.CLAIM_FULL, _full_at(schedule)) is not None:
            return "full"
        interval = schedule.interval_s
        if interval > 0 and await conn.fetchval(repo.CLAIM_INCREMENTAL, interval) is not None:
            return "incremental"
    return None


def wait_s(plan: Plan) -> float:
    """How long to sleep before looking again: until the next due time, at most REFRESH_S."""
    due = plan.due_in()
    return 0.0 if due <= 0 else min(due + DUE_MARGIN_S, REFRESH_S)
