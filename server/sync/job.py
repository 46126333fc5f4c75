"""What the phases of one run share: its connection, the Zoho client, its options, counts and progress."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from server.sync.mapping import FieldMap
from server.sync.pace import Pacer
from server.sync.runs import Counts, RunResult, record_run

log = logging.getLogger("server.sync")
PER_PAGE = 200  # Zoho's largest page


class Source(Protocol):
    """The calls of server.sync.zoho.ZohoClient the sync uses."""

    calls: int
    throttled: int

    async def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET a JSON document."""
        ...

    async def get_bytes(self, path: str, *, max_bytes: int | None = None) -> tuple[bytes, str | None] | None:
        """GET a file (at most max_bytes); None when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress event: the run, its phase, work done (of total when known), its counts so far."""

    run_id: int
    phase: str
    done: int
    total: int | None
    counts: Counts


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class Options:
    """The settings a run uses (built once from Settings by the engine)."""

    fields: FieldMap
    consumer_list: str
    currency: str
    uploads: Path
    image_max_bytes: int
    images_per_run: int
    pricebooks_every_run: bool
    concurrency: int
    write_share: float = 1.0  # ZOHO_SYNC_WRITE_SHARE (server/sync/pace.py)
    cpu_pressure: float = 0.0  # ZOHO_SYNC_CPU_PRESSURE (server/sync/pace.py)
    per_page: int = PER_PAGE


@dataclass(slots=True)
class Job:
    """One run in progress."""

    conn: asyncpg.Connection
    client: Source
    options: Options
    result: RunResult
    progress: ProgressFn | None = None
    rate_list_id: int | None = None
    pacer: Pacer = field(default_factory=Pacer)  # paces the run's catalog writes (server/sync/pace.py)
    _logged_invalid: int = field(default=0)
    _calls_base: int = field(default=-1)
    _throttles_base: int = field(default=0)

    def count_calls(self) -> None:
        """Calls and throttles of this run so far (the client may have served others before)."""
        if self._calls_base < 0:
            self._calls_base, self._throttles_base = self.client.calls, self.client.throttled
        self.counts.calls = self.client.calls - self._calls_base
        self.counts.throttles = self.client.throttled - self._throttles_base

    @property
    def counts(self) -> Counts:
        """The run's counts (also what sync_runs records)."""
        return self.result.counts

    def report(self, phase: str, done: int, total: int | None = None) -> None:
        """Refresh the call counts and tell the progress callback (a failing callback never stops a run)."""
        self.count_calls()
        if self.progress is not None and self.result.run_id is not None:
            try:
                self.progress(Progress(self.result.run_id, phase, done, total, self.counts))
            except Exception:
                log.exception("sync progress callback failed")

    async def checkpoint(self) -> None:
        """Write the run's counts so far (readers of sync_runs watch a run progress)."""
        self.count_calls()
        await record_run(self.conn, self.result)

    def invalid(self, what: str, record_id: object, reason: str) -> None:
        """Count and log a rejected record (the first 100 of a run at WARNING, the rest at DEBUG)."""
        self._logged_invalid += 1
        level = logging.WARNING if self._logged_invalid <= 100 else logging.DEBUG
        shown = record_id if isinstance(record_id, str | int) else "?"
        log.log(level, "sync: %s %s rejected: %s", what, str(shown)[:64], reason)
