"""The small phases of a run: Zoho's categories (read whole every run) and price books."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from server.sync import writer
from server.sync.job import Job
from server.sync.mapping import ZOHO_ID, Category, Invalid, map_category, map_pricebook, price

log = logging.getLogger("server.sync.phases")


async def _pages(job: Job, path: str, key: str) -> list[dict[str, Any]]:
    """Every record of a (short) Zoho list."""
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        doc = await job.client.get(path, {"page": page, "per_page": job.options.per_page})
        records = doc.get(key)
        if not isinstance(records, list):
            records = []
        out.extend(records)
        context = doc.get("page_context")
        if not records or not (isinstance(context, dict) and context.get("has_more_page")):
            return out
        page += 1


async def sync_categories(job: Job) -> None:
    """Apply Zoho's category list (new, changed, gone -> inactive) in one transaction."""
    categories: list[Category] = []
    for position, raw in enumerate(await _pages(job, "/categories", "categories")):
        try:
            categories.append(map_category(raw, position, job.options.fields))
        except Invalid as exc:
            job.invalid("category", raw.get("category_id") if isinstance(raw, dict) else None, str(exc))
    async with job.conn.transaction():
        job.counts.categories_changed += await writer.write_categories(job.conn, categories)
    job.report("categories", len(categories), len(categories))


async def prepare_rate_list(job: Job) -> None:
    """Find (or create) the list the item rate feeds: CONSUMER_PRICE_LIST, unless a price book owns it."""
    async with job.conn.transaction():
        job.rate_list_id, made = await writer.ensure_rate_list(
            job.conn, job.options.consumer_list, job.options.currency
        )
    job.counts.price_lists_changed += made


def _book_prices(job: Job, book_id: str, lines: Any) -> list[tuple[str, Decimal | None]]:
    out: list[tuple[str, Decimal | None]] = []
    for line in lines if isinstance(lines, list) else []:
        item_id = line.get("item_id") if isinstance(line, dict) else None
        try:
            if not isinstance(item_id, str | int) or not ZOHO_ID.match(str(item_id)):
                raise Invalid("item_id: not an id")
            out.append((str(item_id), price(line.get("pricebook_rate"), "pricebook_rate")))
        except Invalid as exc:
            job.invalid(f"price book {book_id} line", item_id, str(exc))
    return out


async def sync_pricebooks(job: Job) -> None:
    """Each active per-item sales price book -> a price list of ours and its prices (read whole).

    Fixed-percentage books hold no prices of their own and purchase books are not for shoppers: skipped.
    """
    lists = await writer.price_lists(job.conn)
    books = await _pages(job, "/pricebooks", "pricebooks")
    for n, raw in enumerate(books, 1):
        try:
            book = map_pricebook(raw)
        except Invalid as exc:
            job.invalid("price book", raw.get("pricebook_id") if isinstance(raw, dict) else None, str(exc))
            continue
        if not book.is_active or not book.per_item or raw.get("sales_or_purchase_type") == "purchases":
            log.info("sync: price book %s skipped (inactive, fixed percentage or purchase)", book.name)
            continue
        doc = await job.client.get(f"/pricebooks/{book.zoho_pricebook_id}")
        detail = doc.get("pricebook")
        lines = detail.get("pricebook_items") if isinstance(detail, dict) else None
        if not isinstance(lines, list):
            job.invalid("price book", book.zoho_pricebook_id, "pricebook_items: missing")
            continue
        prices = _book_prices(job, book.zoho_pricebook_id, lines)
        async with job.pacer.write(), job.conn.transaction():
            list_id, made = await writer.ensure_price_book(job.conn, book, lists)
            job.counts.price_lists_changed += made
            # Read whole, so the list is replaced: prices of items the book no longer has go.
            job.counts.prices_changed += await writer.write_prices(job.conn, list_id, prices, complete=True)
        job.report("price books", n, len(books))
