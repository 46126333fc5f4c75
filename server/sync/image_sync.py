"""The image phase: files follow Zoho's image id and name, within the run's share of the call budget.

An item's image is fetched only when Zoho's `image_id`/`image_name` changed since it was last settled
(sync_items.image_key vs image_done), oldest change first, at most ZOHO_SYNC_IMAGES_PER_RUN a run and never
more than the day's remaining budget; the others wait for the next run. An image gone from Zoho removes the
file (no call). Bytes that fail validation are settled as `rejected` (no file written; counted as failed)
and not fetched again until Zoho's image changes; a fetch that fails in transit is retried by later runs,
up to MAX_ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import logging

from server.images.ingest import ImageRejected, ingest_image, remove_image
from server.sync import repo
from server.sync.job import Job
from server.sync.zoho import TOO_LARGE, ZohoError, ZohoPaused

log = logging.getLogger("server.sync.images")
MAX_ATTEMPTS = 5
MAX_REMOVALS = 100_000  # per run; removals cost no call


async def _allowance(job: Job) -> int:
    """Images this run may fetch: the per-run cap, within what is left of the day's call budget."""
    cap = job.options.images_per_run
    budget = getattr(job.client, "budget", None)
    if budget is None or cap == 0:
        return cap
    try:
        left = int(budget.daily_budget) - int(await budget.used_today())
    except Exception:  # the count is advisory: the budget itself still refuses calls past the limit
        log.warning("sync: could not read today's Zoho call count; fetching up to the per-run cap")
        return cap
    return max(0, min(cap, left))


async def sync_images(job: Job) -> None:
    """Remove files of images gone from Zoho, then fetch changed images (raises ZohoPaused)."""
    conn, options, counts = job.conn, job.options, job.counts
    for row in await conn.fetch(repo.PENDING_REMOVALS, MAX_REMOVALS):
        await asyncio.to_thread(remove_image, options.uploads, row["zoho_item_id"])
        await conn.execute(repo.SETTLE_IMAGE, row["zoho_item_id"], None, "removed")
        counts.images_removed += 1
    allowance = await _allowance(job)
    rows = await conn.fetch(repo.PENDING_FETCHES, allowance) if allowance else []
    total = len(rows)
    done = 0
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for row in rows:
        queue.put_nowait((row["zoho_item_id"], row["image_key"]))
    settle_lock = asyncio.Lock()  # the run's one connection: one statement at a time

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            item_id, key = queue.get_nowait()
            state, error = await _fetch_one(job, item_id)
            async with settle_lock:
                if state is None:
                    await conn.execute(repo.IMAGE_FAILED, item_id, MAX_ATTEMPTS)
                else:
                    await conn.execute(repo.SETTLE_IMAGE, item_id, key, state)
            if error is not None:
                log.warning("sync: image of item %s: %s", item_id, error)
            done += 1
            job.report("images", done, total)

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(options.concurrency, total)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        counts.images_deferred = int(await conn.fetchval(repo.COUNT_PENDING_IMAGES))


async def _fetch_one(job: Job, item_id: str) -> tuple[str | None, str | None]:
    """(state to settle or None to retry later, error text) of one image; ZohoPaused propagates."""
    counts, options = job.counts, job.options
    try:
        got = await job.client.get_bytes(f"/items/{item_id}/image", max_bytes=options.image_max_bytes)
    except ZohoPaused:
        raise
    except ZohoError as exc:
        counts.images_failed += 1
        # Over the size cap: refused unread, like bad bytes (not fetched again until the image changes).
        return ("rejected" if exc.code == TOO_LARGE else None), str(exc)
    if got is None:  # Zoho lists an image it does not have: as if removed
        if await asyncio.to_thread(remove_image, options.uploads, item_id):
            counts.images_removed += 1
        return "missing", None
    try:
        await asyncio.to_thread(ingest_image, got[0], options.uploads, item_id, options.image_max_bytes)
    except ImageRejected as exc:
        counts.images_failed += 1
        return "rejected", f"rejected ({type(exc).__name__}): {exc}"
    except OSError as exc:  # the uploads folder: full disk, permissions
        counts.images_failed += 1
        return None, f"not written: {exc.strerror or exc}"
    counts.images_fetched += 1
    return "stored", None
