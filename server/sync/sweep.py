"""The items sweep: Zoho's item list, newest change first, one page per transaction.

A sweep asks for `sort_column=last_modified_time&sort_order=D` and, when incremental, passes the watermark
as the `last_modified_time` filter. Zoho lists are known to ignore filters silently, so the sweep does not
trust it: records older than the watermark are skipped and the sweep stops at the first page that reaches
them (a list that also ignores the sort is detected, and then read to its end). A full sweep reads every
page and then deactivates the products Zoho no longer lists.

Newest first means the watermark cannot move with each page: page 1 holds the newest change, and a run
killed after it must not skip pages 2..n next time. So each page's transaction writes the page's rows and
the sweep's cursor (next page, the watermark it filters by, the newest time seen); the watermark becomes
that newest time in the transaction that ends the sweep. A killed or paused run leaves the cursor, and the
next run resumes one page before it (a page of overlap absorbs items deleted in Zoho meanwhile, which
shift the list up; rows re-read cost nothing, they write nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from server.sync import repo, writer
from server.sync.job import Job
from server.sync.mapping import ZOHO_ID, Invalid, Item, format_time, map_item
from server.sync.runs import RunKind

log = logging.getLogger("server.sync.sweep")


@dataclass(slots=True)
class Cursor:
    """An unfinished sweep, as stored in sync_state.sweep_cursor."""

    sweep: int
    kind: RunKind
    page: int  # the first page not applied yet
    since: str | None  # the watermark this sweep filters by (ISO), None: every item
    high: str | None  # the newest last_modified_time applied by this sweep (ISO)
    seen: int = 0  # records listed so far (a full sweep that saw none deactivates nothing)

    def dumps(self) -> str:
        """JSON for the jsonb column."""
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: Any) -> Cursor | None:
        """The stored cursor, None when absent or unreadable (then a new sweep starts)."""
        try:
            data = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(data, dict) or data.get("kind") not in ("incremental", "full"):
                return None
            return cls(
                sweep=int(data["sweep"]),
                kind=data["kind"],
                page=max(1, int(data["page"])),
                since=data.get("since"),
                high=data.get("high"),
                seen=int(data.get("seen", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(slots=True)
class _Page:
    items: list[Item]
    invalid_ids: list[str]
    reached: bool  # a record older than the watermark: nothing after this page is newer
    more: bool


class Sweep:
    """One sweep over Zoho's item list (new or resumed)."""

    def __init__(self, job: Job, cursor: Cursor) -> None:
        self.job, self.cursor = job, cursor
        self.since = _dt(cursor.since)
        self.high = _dt(cursor.high)
        self.sorted = True
        self._last: datetime | None = None

    def _params(self, page: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "page": page,
            "per_page": self.job.options.per_page,
            "sort_column": "last_modified_time",
            "sort_order": "D",
        }
        if self.since is not None:
            params["last_modified_time"] = format_time(self.since)
        return params

    def _parse(self, doc: dict[str, Any]) -> _Page:
        records = doc.get("items")
        if not isinstance(records, list):
            records = []
        context = doc.get("page_context")
        more = bool(isinstance(context, dict) and context.get("has_more_page")) and bool(records)
        page = _Page([], [], False, more)
        for raw in records:
            try:
                item = map_item(raw, self.job.options.fields)
            except Invalid as exc:
                self.job.counts.items_invalid += 1
                record_id = raw.get("item_id") if isinstance(raw, dict) else None
                self.job.invalid("item", record_id, str(exc))
                if isinstance(record_id, str | int) and ZOHO_ID.match(str(record_id)):
                    page.invalid_ids.append(str(record_id))
                continue
            if self._last is not None and item.modified_at > self._last and self.sorted:
                self.sorted = False
                log.warning("Zoho ignored the sort of the item list: reading every page of this sweep")
            self._last = item.modified_at
            if self.since is not None and item.modified_at < self.since:
                page.reached = True
                continue
            page.items.append(item)
            if self.high is None or item.modified_at > self.high:
                self.high = item.modified_at
        return page

    async def run(self) -> datetime | None:
        """Apply every page; returns the watermark after the sweep."""
        job, cursor = self.job, self.cursor
        page_no = cursor.page
        fetch = asyncio.ensure_future(job.client.get("/items", self._params(page_no)))
        try:
            while True:
                page = self._parse(await fetch)
                done = not page.more or (page.reached and self.sorted)
                if not done:
                    # The next page downloads while this one is written.
                    fetch = asyncio.ensure_future(job.client.get("/items", self._params(page_no + 1)))
                cursor.seen += len(page.items) + len(page.invalid_ids)
                cursor.page, cursor.high = page_no + 1, _iso(self.high)
                async with job.pacer.write():
                    async with job.conn.transaction():
                        written = await writer.write_items(
                            job.conn,
                            page.items,
                            sweep=cursor.sweep,
                            rate_list_id=job.rate_list_id,
                            invalid_ids=page.invalid_ids,
                        )
                        if not done:
                            await job.conn.execute(repo.SAVE_CURSOR, cursor.dumps())
                    self._count(page, written)
                    job.report("items", job.counts.items_seen)
                    await job.checkpoint()
                if done:
                    return await self._finish()
                page_no += 1
        finally:
            # A prefetched page nobody will read: cancel it, and collect its outcome (no stray errors).
            fetch.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await fetch

    def _count(self, page: _Page, written: writer.Written) -> None:
        counts = self.job.counts
        counts.items_seen += len(page.items)
        counts.items_changed += written.products
        counts.prices_changed += written.prices
        if written.unknown_category:
            log.warning("sync: %d items name a category Zoho did not list", written.unknown_category)

    async def _finish(self) -> datetime | None:
        """End the sweep: full reconcile, watermark, cursor cleared, in one transaction."""
        job, cursor = self.job, self.cursor
        full = cursor.kind == "full"
        async with job.conn.transaction():
            if full and cursor.seen == 0:
                log.warning("sync: Zoho listed no items; nothing deactivated (wrong organisation?)")
            elif full:
                job.counts.items_deactivated += await writer.deactivate_unlisted(job.conn, cursor.sweep)
            watermark = await job.conn.fetchval(repo.FINISH_SWEEP, self.high, full)
        return watermark  # type: ignore[no-any-return]
