"""The sync inside the service: runs started by the admin API or the schedule, in a child process.

A run is `python -m server sync [--full] --announce` started by the serving process (the child lowers its
own CPU priority and has its own connections: server/sync/cli.py), awaited as a job of the process's
Resources.
Measured (README, Zoho sync): the same run inside a worker's event loop parsed and encoded Zoho's pages
between requests, and the catalog's p99 grew 20 to 50 times; in its own process the OS keeps them apart.
The child prints the run's id as soon as the run is recorded (that is what the POST waits for) and its
summary at the end; it exits 4 when another run holds the sync lock (409). Shutdown cancels the job: the
child gets SIGINT, records its run `failed` ("cancelled") and exits; the next run resumes at its cursor
(server/sync/engine.py). If the worker dies, the kernel sends the child SIGINT too (parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import sys
import time
from typing import Any

import asyncpg

from server import workers
from server.db.pool import DATABASE_UNAVAILABLE
from server.errors import ServiceUnavailable, SyncAlreadyRunning
from server.metrics.trace import outgoing_traceparent
from server.resources import Resources, TaskHealth
from server.settings import Settings
from server.sync import runs, schedule
from server.sync.cli import ANNOUNCE, EXIT_CODES
from server.sync.zoho import missing_credentials

log = logging.getLogger("server.sync.service")

START_TIMEOUT_S = 15.0  # a POST waits this long for its run's record (the child starts in about a second)
CHILD_STOP_S = 2.0  # after SIGINT, the child's time to record its end before SIGKILL
_SUMMARY_ID = re.compile(rb"^sync #(\d+) ")
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)
_UNREACHABLE: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, OSError)


def not_configured(missing: list[str]) -> ServiceUnavailable:
    """503 for a sync without Zoho credentials (names the unset variables, never a value)."""
    names = ", ".join(missing)
    return ServiceUnavailable(
        f"The Zoho sync is not configured: set {names} (see the README, Zoho client).",
        f"مزامنة Zoho غير مهيأة: عيّن {names} (راجع ملف README، قسم Zoho client).",
        headers={"Retry-After": "3600"},
    )


def _stopping() -> ServiceUnavailable:
    return ServiceUnavailable(
        "This process is stopping; the run did not start.",
        "هذه العملية قيد الإيقاف؛ لم يبدأ التشغيل.",
        headers={"Retry-After": "1"},
    )


class SyncService:
    """This process's part of the sync: start runs (API, schedule), run the schedule, report to /ready."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schedule = schedule.Schedule.from_settings(settings)
        self.missing = missing_credentials(settings)
        self._res: Resources | None = None
        self._running: set[int] = set()  # runs of this process's children, while they live
        self._plan: schedule.Plan | None = None
        self._plan_read_at = 0.0
        self._claims = False  # this process claims scheduled slots (the instance's first worker)
        self._health: TaskHealth | None = None

    def start(self, res: Resources) -> None:
        """Start-up hook: keep the resources; run or watch the schedule when credentials are set."""
        self._res = res
        if self.missing or not self.schedule.enabled:
            return
        ctx = workers.current()
        self._claims = ctx is None or ctx.slot == 0
        self._health = res.start_task("sync-schedule", self._schedule_loop)

    # -- runs -------------------------------------------------------------------------------------

    async def trigger(self, *, full: bool) -> int:
        """Start a run in the background; its id once it is recorded. 503 without credentials, 409 while
        another run holds the sync lock."""
        if self.missing:
            raise not_configured(self.missing)
        # No shortcut on a run this process knows of: only the lock knows whether it is still held (a
        # child that recorded its end may still be closing its connections).
        res = self._resources()
        started: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        res.spawn("sync-run", self._run(full=full, source="api", started=started))
        try:
            run_id = await asyncio.wait_for(asyncio.shield(started), START_TIMEOUT_S)
        except TimeoutError:
            raise ServiceUnavailable(
                "The sync run did not start in time; see GET /api/admin/sync/runs.",
                "لم يبدأ تشغيل المزامنة في الوقت المحدد؛ راجع GET /api/admin/sync/runs.",
                headers={"Retry-After": "5"},
            ) from None
        except _UNREACHABLE as exc:  # the run's own connections could not be made
            raise ServiceUnavailable(headers={"Retry-After": "1"}) from exc
        if run_id is None:
            raise SyncAlreadyRunning()
        return run_id

    async def _run(
        self, *, full: bool, source: str, started: asyncio.Future[int | None] | None = None
    ) -> str:
        """One run in a child process; `started` gets the run id (None: the lock is held). Its status."""
        proc: asyncio.subprocess.Process | None = None
        run_id: int | None = None
        try:
            cmd = [sys.executable, "-m", "server", "sync", "--announce", *(["--full"] if full else [])]
            traceparent = outgoing_traceparent()  # a run started by a request continues its trace
            if traceparent is not None:
                cmd += ["--traceparent", traceparent]
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                env={**os.environ, "DATABASE_URL": self._resources().dsn},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            summary = b""
            async for line in proc.stdout:  # bounded: the child prints two lines
                if line.startswith(ANNOUNCE.encode()):
                    run_id = int(line.split()[1])
                    self._running.add(run_id)
                    if started is not None and not started.done():
                        started.set_result(run_id)
                elif line.strip():
                    summary = line.strip()[:4000]
            code = await proc.wait()
        except BaseException as exc:
            if proc is not None and proc.returncode is None:
                await _stop_child(proc)
            if started is not None and not started.done():
                # Cancelled (shutdown) or unable to start: the waiting POST answers 503.
                started.set_exception(exc if isinstance(exc, Exception) else _stopping())
                started.exception()  # retrieved: a waiter that timed out leaves no "never retrieved" log
            raise
        finally:
            if run_id is not None:
                self._running.discard(run_id)
        status = {v: k for k, v in EXIT_CODES.items()}.get(code, "failed")
        if started is not None and not started.done():
            found = _SUMMARY_ID.match(summary)  # a run that failed before its first progress event
            started.set_result(int(found.group(1)) if found and status != "already_running" else None)
        text = summary.decode(errors="replace")
        if status == "already_running":
            log.debug("sync (%s): already running elsewhere; skipped", source)
        elif status == "succeeded":
            log.info("sync (%s): %s", source, text)
        else:
            log.warning("sync (%s, exit %d): %s", source, code, text)
        return status

    def _resources(self) -> Resources:
        if self._res is None:
            raise ServiceUnavailable(headers={"Retry-After": "1"})  # before start-up finished
        return self._res

    # -- schedule ---------------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        res, health = self._resources(), self._health
        assert health is not None
        while True:
            try:
                async with res.pool.acquire() as conn:
                    self._plan = await schedule.read_plan(conn, self.schedule)
                    self._plan_read_at = time.monotonic()
                    kind = None
                    if self._claims and self._plan.due_in() <= 0:
                        kind = await schedule.claim(conn, self.schedule)
                health.ok()
            except TRANSIENT_DB_ERRORS as exc:
                health.failed(exc)
                log.warning("sync schedule: %s: %s; retrying", type(exc).__name__, exc)
                await asyncio.sleep(1.0 + random.random())
                continue
            if kind is not None:  # the child's lock decides whether it runs or is skipped
                await self._run(full=kind == "full", source=f"schedule, {kind}")
                continue  # read the plan again: the run took time, its end is the newest run
            wait = schedule.wait_s(self._plan) if self._claims else schedule.REFRESH_S
            # A slot another process claimed first: look again soon, not in a tight loop.
            await asyncio.sleep(wait if wait > 0 else 0.1)

    # -- /ready -----------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The `sync` section of the detailed /ready (no secrets: variable names at most)."""
        doc: dict[str, Any] = {"configured": not self.missing}
        if self.missing:
            doc["missing"] = self.missing
        sched = self.schedule.describe()
        sched["enabled"] = sched["enabled"] and not self.missing
        sched["claims_here"] = self._claims
        doc["schedule"] = sched
        doc["running_here"] = sorted(self._running)
        plan = self._plan
        if plan is not None:
            sched.update({k: v for k, v in plan.report().items() if k != "last_run"})
            doc["last_run"] = plan.last_run
            doc["checked_s_ago"] = round(time.monotonic() - self._plan_read_at, 1)
        return doc


async def _stop_child(proc: asyncio.subprocess.Process) -> None:
    """SIGINT (the run records its end), then SIGKILL if it takes longer than CHILD_STOP_S."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        await asyncio.shield(asyncio.wait_for(proc.wait(), CHILD_STOP_S))
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def run_doc(conn: asyncpg.Connection, run_id: int) -> dict[str, Any] | None:
    """A run as its JSON document (None: no such run)."""
    row = await runs.get_run(conn, run_id)
    return run_json(row) if row is not None else None


def run_json(row: dict[str, Any]) -> dict[str, Any]:
    """A sync_runs row with ISO times and the run's own Location."""
    doc = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    doc["href"] = f"/api/admin/sync/runs/{row['id']}"
    return doc
