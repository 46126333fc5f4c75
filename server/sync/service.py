"""The sync inside the serving processes: runs started by the admin API or the schedule, in the background.

A run gets connections of its own (a small asyncpg pool with the CLI's long statement timeout, its own Redis
client for the Zoho budget), never the request pool: a long run must not hold a request's connection or be
cut by DB_COMMAND_TIMEOUT_S. It is a job of the process's Resources, so shutdown cancels it: the run then
records itself `failed` ("cancelled") and the next run resumes at its cursor (server/sync/engine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from server import workers
from server.errors import ServiceUnavailable, SyncAlreadyRunning
from server.resources import TRANSIENT_DB_ERRORS, Resources, TaskHealth
from server.settings import Settings
from server.sync import runs, schedule
from server.sync.engine import run_sync
from server.sync.job import Progress
from server.sync.runs import RunResult
from server.sync.zoho import missing_credentials

log = logging.getLogger("server.sync.service")

START_TIMEOUT_S = 10.0  # a POST waits this long for its run's record (it takes milliseconds)
RUN_POOL_MAX = 4  # the run's connection, the client's token and daily-count reads, room to spare
RUN_COMMAND_TIMEOUT_S = 300.0  # as the CLI: a full run's reconcile statement may take a while
_UNREACHABLE: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, OSError)


def not_configured(missing: list[str]) -> ServiceUnavailable:
    """503 for a sync without Zoho credentials (names the unset variables, never a value)."""
    names = ", ".join(missing)
    return ServiceUnavailable(
        f"The Zoho sync is not configured: set {names} (see the README, Zoho client).",
        f"مزامنة Zoho غير مهيأة: عيّن {names} (راجع ملف README، قسم Zoho client).",
        headers={"Retry-After": "3600"},
    )


@contextlib.asynccontextmanager
async def run_connections(settings: Settings, dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, Any]]:
    """(pool, Redis client or None) for one run, closed when it ends."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=RUN_POOL_MAX,
        command_timeout=RUN_COMMAND_TIMEOUT_S,
        server_settings={"application_name": "catalog-sync"},
    )
    redis = aioredis.Redis.from_url(settings.REDIS_URL.get_secret_value()) if settings.REDIS_URL else None
    try:
        yield pool, redis
    finally:
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()
        try:
            await asyncio.wait_for(pool.close(), 2)
        except Exception:  # cancelled or stuck: cut the connections
            pool.terminate()


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
        self._busy = False  # a run started by this process is in progress
        self._run_id: int | None = None
        self._plan: schedule.Plan | None = None
        self._plan_read_at = 0.0
        self._claims = False  # this process claims scheduled slots (the instance's first worker)
        self._health: TaskHealth | None = None

    def start(self, res: Resources) -> None:
        """Start-up hook: keep the resources; run or watch the schedule when credentials are set."""
        self._res = res
        # httpx logs every request at INFO: a full run would add hundreds of lines to the service's log.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
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
        if self._busy:  # this process's own run: no need to ask the lock
            raise SyncAlreadyRunning()
        res = self._resources()
        started: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._busy = True  # before any await: a second POST to this process gets 409 at once
        try:
            res.spawn("sync-run", self._run(full=full, source="api", started=started))
        except BaseException:
            self._busy = False
            raise
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
    ) -> RunResult:
        """One run on connections of its own; `started` gets the run id (None: the lock is held)."""

        def progress(event: Progress) -> None:
            self._run_id = event.run_id
            if started is not None and not started.done():
                started.set_result(event.run_id)

        self._busy = True
        try:
            async with run_connections(self.settings, self._resources().dsn) as (pool, redis):
                result = await run_sync(self.settings, pool=pool, redis=redis, full=full, progress=progress)
        except BaseException as exc:
            if started is not None and not started.done():
                # Cancelled (shutdown) before its record existed: the waiting POST answers 503.
                started.set_exception(exc if isinstance(exc, Exception) else _stopping())
                started.exception()  # retrieved: a waiter that timed out leaves no "never retrieved" log
            raise
        finally:
            self._busy, self._run_id = False, None
        if started is not None and not started.done():
            started.set_result(result.run_id)
        if result.status == "already_running":
            log.debug("sync (%s): already running elsewhere; skipped", source)
        else:
            log.info("sync (%s): %s", source, result.summary())
        return result

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
            if kind is not None and self._busy:  # this process's manual run: the slot is skipped
                log.debug("sync (schedule, %s): already running here; skipped", kind)
            elif kind is not None:
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
        doc["running_here"] = self._run_id if self._busy else None
        plan = self._plan
        if plan is not None:
            sched.update({k: v for k, v in plan.report().items() if k != "last_run"})
            doc["last_run"] = plan.last_run
            doc["checked_s_ago"] = round(time.monotonic() - self._plan_read_at, 1)
        return doc


async def run_doc(conn: asyncpg.Connection, run_id: int) -> dict[str, Any] | None:
    """A run as its JSON document (None: no such run)."""
    row = await runs.get_run(conn, run_id)
    return run_json(row) if row is not None else None


def run_json(row: dict[str, Any]) -> dict[str, Any]:
    """A sync_runs row with ISO times and the run's own Location."""
    doc = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    doc["href"] = f"/api/admin/sync/runs/{row['id']}"
    return doc
