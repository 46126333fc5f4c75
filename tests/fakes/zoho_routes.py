"""The fake Zoho's API routes: Zoho Inventory's documents built from the catalog."""

from __future__ import annotations

import json
from typing import Any

from .zoho_data import Catalog, parse_zoho_time, zoho_time

API_PREFIX = "/inventory/v1"
MESSAGES = {
    44: "You have exceeded the maximum number of requests allowed per minute. Please try again later.",
    45: "You have reached the maximum number of API requests allowed for the day. Try again tomorrow.",
    57: "You are not authorized to perform this operation",
    1070: "Too many concurrent requests. Please try again after some time.",
    1002: "Item does not exist.",
    6041: "This user is not associated with the organization.",
    4: "Invalid value passed.",
    500: "Internal error.",
}


def route(
    cat: Catalog,
    org: dict[str, Any],
    ignore_modified_filter: bool,
    method: str,
    path: str,
    q: dict[str, str],
    body: bytes,
) -> tuple[int, Any, str]:
    """(status, JSON document or bytes, content type) of an admitted API request."""
    parts = [p for p in path[len(API_PREFIX) :].split("/") if p]
    if method == "GET" and parts == ["items"]:
        return 200, _list_items(cat, q, ignore_modified_filter), ""
    if method == "GET" and len(parts) in (2, 3) and parts[0] == "items":
        with cat.lock:
            item = cat.items.get(parts[1])
            if item is None:
                return 404, err(1002), ""
            if len(parts) == 2:
                return 200, {**_ok(), "item": _detail(item)}, ""
            if parts[2] == "image":
                data = cat.image(parts[1])
                if data is None:
                    return 404, {"code": 1002, "message": "Image does not exist."}, ""
                return 200, data, "image/jpeg"
    if method == "GET" and parts == ["categories"]:
        with cat.lock:
            cats = list(cat.categories.values())
        return 200, _paged("categories", cats, q), ""
    if method == "GET" and parts == ["pricebooks"]:
        with cat.lock:
            books = list(cat.pricebooks.values())
        return 200, _paged("pricebooks", books, q), ""
    if method == "GET" and len(parts) == 2 and parts[0] == "pricebooks":
        with cat.lock:
            book = cat.pricebooks.get(parts[1])
            if book is None:
                return 404, {"code": 1002, "message": "Price list does not exist."}, ""
            lines = [
                {
                    "pricebook_item_id": f"{parts[1][-6:]}{iid}",
                    "item_id": iid,
                    "name": cat.items[iid]["name"],
                    "sku": cat.items[iid]["sku"],
                    "pricebook_rate": rate,
                }
                for iid, rate in cat.prices[parts[1]].items()
                if iid in cat.items
            ]
        return 200, {**_ok(), "pricebook": {**book, "pricebook_items": lines}}, ""
    if parts == ["salesorders"]:
        return _salesorders(cat, method, q, body)
    if method == "GET" and parts == ["organizations"]:
        return 200, {**_ok(), "organizations": [org]}, ""
    return 404, {"code": 5, "message": "Invalid URL Passed"}, ""


def _list_items(cat: Catalog, q: dict[str, str], ignore_modified_filter: bool) -> dict[str, Any]:
    page, per_page = _page_args(q)
    column = q.get("sort_column", "name")
    descending = q.get("sort_order", "A").upper() in ("D", "DESCENDING")
    rows = cat.ordered_items(column, descending)
    since = q.get("last_modified_time")
    if since and not ignore_modified_filter:
        # Stored times are all UTC in one format, so strings compare as times do (no parsing per item).
        floor = zoho_time(parse_zoho_time(since))
        rows = [r for r in rows if r["last_modified_time"] >= floor]
    status = q.get("filter_by", "Status.All")
    if status in ("Status.Active", "Status.Inactive"):
        want = status.split(".")[1].lower()
        rows = [r for r in rows if r["status"] == want]
    start = (page - 1) * per_page
    with cat.lock:
        chunk = [_summary(r) for r in rows[start : start + per_page]]
    ctx = _context(page, per_page, len(rows) > start + per_page)
    ctx.update(report_name="Items", applied_filter=status, sort_column=column)
    ctx["sort_order"] = "D" if descending else "A"
    return {**_ok(), "items": chunk, "page_context": ctx}


def _salesorders(cat: Catalog, method: str, q: dict[str, str], body: bytes) -> tuple[int, Any, str]:
    if method == "GET":
        ref = q.get("reference_number")
        with cat.lock:
            orders = [o for o in cat.salesorders if ref is None or o["reference_number"] == ref]
        return 200, _paged("salesorders", orders, q), ""
    if method != "POST":
        return 405, {"code": 5, "message": "Invalid URL Passed"}, ""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return 400, err(4), ""
    lines = doc.get("line_items") if isinstance(doc, dict) else None
    if not lines or not isinstance(lines, list):
        return 400, {"code": 4, "message": "Line items are required."}, ""
    with cat.lock:
        if any(str(line.get("item_id")) not in cat.items for line in lines):
            return 400, err(1002), ""
        number = len(cat.salesorders) + 1
        order = {
            **doc,
            "salesorder_id": str(9_000_000_000 + number),
            "salesorder_number": f"SO-{number:05d}",
            "reference_number": str(doc.get("reference_number", "")),
            "status": "confirmed",
        }
        cat.salesorders.append(order)
    return 201, {"code": 0, "message": "Sales Order has been created.", "salesorder": order}, ""


def _ok() -> dict[str, Any]:
    return {"code": 0, "message": "success"}


def err(code: int) -> dict[str, Any]:
    """Zoho's error document of a code."""
    return {"code": code, "message": MESSAGES.get(code, "error")}


def _page_args(q: dict[str, str]) -> tuple[int, int]:
    try:
        page = max(1, int(q.get("page", "1")))
        per_page = min(200, max(1, int(q.get("per_page", "200"))))
    except ValueError:
        page, per_page = 1, 200
    return page, per_page


def _context(page: int, per_page: int, more: bool) -> dict[str, Any]:
    return {"page": page, "per_page": per_page, "has_more_page": more}


def _paged(key: str, rows: list[dict[str, Any]], q: dict[str, str]) -> dict[str, Any]:
    page, per_page = _page_args(q)
    start = (page - 1) * per_page
    chunk = rows[start : start + per_page]
    return {**_ok(), key: chunk, "page_context": _context(page, per_page, len(rows) > start + per_page)}


def _summary(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the list shows it: the detail fields plus custom fields flattened to `cf_*` keys."""
    out = _detail(item)
    for cf in item["custom_fields"]:
        out[cf["api_name"]] = cf["value"]
    return out


def _detail(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "custom_fields": [dict(cf) for cf in item["custom_fields"]]}
