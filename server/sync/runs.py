"""Sync runs: the one-at-a-time lock, the `sync_runs` records, the counts a run keeps."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg

from server.sync import repo

# pg_try_advisory_lock key of the sync; any constant works, as long as every instance uses the same.
LOCK_KEY = 0x7A6F686F73796E63  # "zohosync"
RunKind = Literal["incremental", "full"]
RunStatus = Literal["running", "succeeded", "failed", "paused", "already_running"]
_MAX_ERROR = 2000
# Anything that looks like a credential is masked before an error text is stored or printed.
_SECRETS = re.compile(
    r"(?i)(refresh_token|client_secret|client_id|access_token|authorization|password)"
    r"([\"':= ]+(?:Zoho-oauthtoken |Bearer )?)[^\s&\"',]+"
)


@dataclass(slots=True)
class Counts:
    """What a run saw and wrote (the integer columns of sync_runs)."""

    items_seen: int = 0
    items_changed: int = 0
    items_invalid: int = 0
    items_deactivated: int = 0
    categories_changed: int = 0
    price_lists_changed: int = 0
    prices_changed: int = 0
    images_fetched: int = 0
    images_removed: int = 0
    images_failed: int = 0
    images_deferred: int = 0
    calls: int = 0
    throttles: int = 0

    def catalog_rows(self) -> int:
        """Catalog rows written (0 for a run that found nothing changed)."""
        return (
            self.items_changed
            + self.items_deactivated
            + self.categories_changed
            + self.price_lists_changed
            + self.prices_changed
        )


@dataclass(slots=True)
class RunResult:
    """The outcome of run_sync (run_id None: another run holds the lock)."""

    status: RunStatus
    run_id: int | None = None
    kind: RunKind = "incremental"
    resumed: bool = False
    counts: Counts = field(default_factory=Counts)
    watermark_before: datetime | None = None
    watermark_after: datetime | None = None
    error: str | None = None
    seconds: float = 0.0
    paused_s: float = 0.0  # pauses after writes (ZOHO_SYNC_WRITE_SHARE, server/sync/pace.py)
    pressure_paused_s: float = 0.0  # of those, the part the host's CPU pressure added

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if self.status == "already_running":
            return "sync: already running (another process holds the sync lock)"
        c = self.counts
        line = (
            f"sync #{self.run_id} {self.kind}{' (resumed)' if self.resumed else ''}: {self.status} "
            f"in {self.seconds:.1f} s; items {c.items_seen} seen, {c.items_changed} changed, "
            f"{c.items_invalid} invalid, {c.items_deactivated} deactivated; "
            f"categories {c.categories_changed}, "
            f"price lists {c.price_lists_changed}, prices {c.prices_changed}; images {c.images_fetched} "
            f"fetched, {c.images_removed} removed, {c.images_failed} failed, {c.images_deferred} waiting; "
            f"{c.calls} calls, {c.throttles} throttled"
            + (f"; writes paced: {self.paused_s:.1f} s of pauses" if self.paused_s >= 0.05 else "")
            + (f" ({self.pressure_paused_s:.1f} s for CPU pressure)" if self.pressure_paused_s else "")
        )
        return line + (f"; error: {self.error}" if self.error else "")


def clean_error(exc: BaseException) -> str:
    """An exception as text fit for sync_runs.error and logs: credentials masked, bounded."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return _SECRETS.sub(r"\1\2***", text)[:_MAX_ERROR]


@contextlib.asynccontextmanager
async def run_lock(conn: asyncpg.Connection) -> AsyncIterator[bool]:
    """Hold the sync lock on this connection for the block; yields False when another run holds it.

    A session-level advisory lock: it is released when the block ends, and by PostgreSQL when the process
    dies with its connection, so a killed run never blocks the next one.
    """
    got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY))
    try:
        yield got
    finally:
        if got and not conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def start_run(
    conn: asyncpg.Connection, *, kind: RunKind, resumed: bool, watermark: datetime | None
) -> int:
    """Record a new running run (after marking runs a dead process left `running` as failed)."""
    await conn.execute(repo.INTERRUPT_STALE_RUNS)
    row = await conn.fetchrow(repo.START_RUN, kind, resumed, watermark)
    return int(row["id"])


async def record_run(conn: asyncpg.Connection, result: RunResult) -> None:
    """Write a run's status, counts, watermark and error."""
    c = result.counts
    await conn.execute(
        repo.UPDATE_RUN,
        result.run_id,
        result.status,
        c.items_seen,
        c.items_changed,
        c.items_invalid,
        c.items_deactivated,
        c.categories_changed,
        c.price_lists_changed,
        c.prices_changed,
        c.images_fetched,
        c.images_removed,
        c.images_failed,
        c.images_deferred,
        c.calls,
        c.throttles,
        result.watermark_after,
        result.error,
    )


async def get_run(conn: asyncpg.Connection, run_id: int) -> dict[str, Any] | None:
    """One sync_runs row as a dict (None: no such run)."""
    row = await conn.fetchrow(repo.RUN_BY_ID, run_id)
    return dict(row) if row is not None else None


async def list_runs(conn: asyncpg.Connection, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of runs, newest first, and the number of runs."""
    rows = await conn.fetch(repo.RUNS_PAGE, limit, offset)
    total = await conn.fetchval(repo.RUNS_COUNT)
    return [dict(r) for r in rows], int(total)


def counts_dict(counts: Counts) -> dict[str, int]:
    """The counts as a plain dict (progress events, JSON)."""
    return asdict(counts)
