"""run_sync: one Zoho -> catalog run, from lock to record.

Order: categories (products refer to them), the items sweep (products, stock, the item rate as the
consumer price), price books (full runs, or every run if set), then images. One run at a time across
processes and instances: a session advisory lock on the run's own connection (pg_try_advisory_lock; a
second start answers `already_running` at once). The run's connection also does every write, one
transaction per batch, so what a killed run leaves is whole batches and a cursor to resume from.

Statuses: `succeeded`; `paused` when Zoho's daily limit (code 45) or our daily budget stops it (the next
run resumes at the stored cursor, pending images wait); `failed` with the error (credentials masked).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg

from server.settings import Settings
from server.sync import phases, repo, runs, writer
from server.sync.image_sync import sync_images
from server.sync.job import Job, Options, ProgressFn, Source
from server.sync.mapping import FieldMap
from server.sync.pace import Pacer
from server.sync.runs import RunKind, RunResult
from server.sync.sweep import Cursor, Sweep
from server.sync.zoho import ZohoClient, ZohoPaused

log = logging.getLogger("server.sync")


def options_from_settings(settings: Settings) -> Options:
    """The run options the settings describe."""
    return Options(
        fields=FieldMap(settings.ZOHO_FIELD_NAME_AR, settings.ZOHO_FIELD_DESCRIPTION_AR),
        consumer_list=settings.CONSUMER_PRICE_LIST,
        currency=settings.ZOHO_SYNC_CURRENCY,
        uploads=settings.UPLOADS_DIR,
        image_max_bytes=settings.IMAGE_MAX_BYTES,
        images_per_run=settings.ZOHO_SYNC_IMAGES_PER_RUN,
        pricebooks_every_run=settings.ZOHO_SYNC_PRICEBOOKS_EVERY_RUN,
        concurrency=settings.ZOHO_MAX_CONCURRENCY,
        write_share=settings.ZOHO_SYNC_WRITE_SHARE,
        cpu_pressure=settings.ZOHO_SYNC_CPU_PRESSURE,
    )


async def run_sync(
    settings: Settings,
    *,
    pool: asyncpg.Pool,
    redis: Any = None,
    full: bool,
    progress: ProgressFn | None = None,
    client: Source | None = None,
) -> RunResult:
    """Run one sync (`full`: read every item and deactivate those Zoho no longer has).

    `progress` gets a Progress event per page and image (its first carries the run id). `client`
    replaces the Zoho client built from the settings (it is not closed here).
    """
    started = time.monotonic()
    async with pool.acquire() as conn, runs.run_lock(conn) as locked:
        if not locked:
            return RunResult(status="already_running", kind="full" if full else "incremental")
        own_client = None
        if client is None:
            try:
                own_client = client = ZohoClient.from_settings(settings, pool=pool, redis=redis)
            except Exception as exc:
                result = await _start(conn, full)
                return await _end(conn, result, "failed", runs.clean_error(exc), started)
        try:
            return await _run(conn, client, options_from_settings(settings), full, progress, started)
        finally:
            if own_client is not None:
                await own_client.aclose()


async def _start(conn: asyncpg.Connection, full: bool, cursor: Cursor | None = None) -> RunResult:
    state = await conn.fetchrow(repo.STATE)
    kind: RunKind = cursor.kind if cursor is not None else ("full" if full else "incremental")
    result = RunResult(status="running", kind=kind, resumed=cursor is not None)
    result.watermark_before = result.watermark_after = state["items_watermark"]
    result.run_id = await runs.start_run(
        conn, kind=kind, resumed=result.resumed, watermark=result.watermark_before
    )
    return result


async def _end(
    conn: asyncpg.Connection, result: RunResult, status: str, error: str | None, started: float
) -> RunResult:
    result.status = status  # type: ignore[assignment]
    result.error = error
    result.seconds = time.monotonic() - started
    try:
        await runs.record_run(conn, result)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.error("sync: could not record the end of run %s: %s", result.run_id, exc)
    line = result.summary()
    (log.info if status == "succeeded" else log.warning)(line)
    return result


def _resumable(stored: Any, full: bool) -> Cursor | None:
    """The stored sweep this run continues: the same kind, or a full one (its reconcile is owed)."""
    cursor = Cursor.loads(stored) if stored is not None else None
    if cursor is None or (full and cursor.kind != "full"):
        return None  # a full sweep covers an unfinished incremental one
    return cursor


async def _run(
    conn: asyncpg.Connection,
    client: Source,
    options: Options,
    full: bool,
    progress: ProgressFn | None,
    started: float,
) -> RunResult:
    await writer.prepare(conn)
    state = await conn.fetchrow(repo.STATE)
    cursor = _resumable(state["sweep_cursor"], full)
    result = await _start(conn, full, cursor)
    if cursor is None:
        since = None if result.kind == "full" else result.watermark_before
        cursor = Cursor(
            sweep=int(await conn.fetchval(repo.NEXT_SWEEP)),
            kind=result.kind,
            page=1,
            since=since.isoformat() if since is not None else None,
            high=None,
        )
    else:
        # One page of overlap: items deleted in Zoho meanwhile shift the list up by as many places.
        cursor.page = max(1, cursor.page - 1)
        log.info("sync: resuming a %s sweep at page %d", cursor.kind, cursor.page)
    job = Job(
        conn=conn,
        client=client,
        options=options,
        result=result,
        progress=progress,
        pacer=Pacer(options.write_share, pressure_limit=options.cpu_pressure),
    )
    job.report("start", 0)  # also takes the client's call counts as this run's zero
    try:
        await phases.sync_categories(job)
        await phases.prepare_rate_list(job)
        mark = job.counts.catalog_rows()
        result.watermark_after = await Sweep(job, cursor).run()
        await writer.refresh_statistics(conn, job.counts.catalog_rows() - mark)
        if result.kind == "full" or options.pricebooks_every_run:
            mark = job.counts.catalog_rows()
            await phases.sync_pricebooks(job)
            await writer.refresh_statistics(conn, job.counts.catalog_rows() - mark)
        await sync_images(job)
        status, error = "succeeded", None
    except ZohoPaused as exc:
        status, error = "paused", runs.clean_error(exc)
    except asyncio.CancelledError:
        job.count_calls()
        await _end(conn, result, "failed", "cancelled", started)
        raise
    except Exception as exc:
        log.exception("sync run %s failed", result.run_id)
        status, error = "failed", runs.clean_error(exc)
    job.count_calls()
    result.paused_s = job.pacer.paused_s
    result.pressure_paused_s = job.pacer.pressure_paused_s
    return await _end(conn, result, status, error, started)
