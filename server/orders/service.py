"""Placing orders exactly once without overselling, reading a shopper's orders, cancelling them.

Placing is one transaction: the (user, Idempotency-Key) advisory lock (taken without waiting: a second
request with the key while the first runs is a 409), the stored answer of the key if any (replayed, or 422
for another body), the products locked in id order and checked (422 unknown/inactive, 409 short, nothing
changed), then the order, its lines, its outbox row and the key's answer, and the stock decrement last.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from server.errors import (
    FieldError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InsufficientStock,
    NotFound,
    OrderNotCancellable,
    ValidationFailed,
)
from server.orders import repo
from server.orders.schemas import EXTRA_FIELDS, encode_cursor

PLACED = 201


class _KeyTakenMeanwhile(Exception):
    """The key got an answer after this transaction's snapshot: roll back, then replay it."""


@dataclass(slots=True)
class OrderStats:
    """This process's counts (for a metrics module to export): placed, refused by reason, replayed."""

    placed: int = 0
    refused_stock: int = 0
    refused_product: int = 0
    key_in_use: int = 0
    key_reused: int = 0
    replayed: int = 0
    cancelled: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by name."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Answer:
    """What placing answered: status and body bytes, and whether it is a replay of a stored answer."""

    status: int
    body: bytes
    order_id: int | None
    replayed: bool = False


@dataclass(slots=True)
class Orders:
    """The order service of one process: what it needs from settings, and its counts."""

    price_list: str
    key_ttl_s: int
    stats: OrderStats = field(default_factory=OrderStats)

    async def place(self, pool: Any, *, user_id: int, key: str, body: dict[str, Any]) -> Answer:
        """Place the order of `body` under `key` (exactly once), or replay the key's stored answer."""
        request_hash = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
        merged = merge_lines(body["lines"])
        try:
            return await self._place(pool, user_id, key, body, request_hash, merged)
        except _KeyTakenMeanwhile:
            # Another request with this key committed between our lock and our snapshot: rolled back;
            # a second pass sees its answer and replays it (or 422 for another body).
            return await self._place(pool, user_id, key, body, request_hash, merged)

    async def _place(
        self,
        pool: Any,
        user_id: int,
        key: str,
        body: dict[str, Any],
        request_hash: bytes,
        merged: dict[int, int],
    ) -> Answer:
        async with pool.acquire() as conn, conn.transaction():
            found = await repo.lock_and_find_key(conn, user_id, key)
            if not found["locked"]:
                self.stats.key_in_use += 1
                raise IdempotencyKeyInUse(headers={"Retry-After": "1"})
            if found["request_hash"] is not None:
                if bytes(found["request_hash"]) != request_hash:
                    self.stats.key_reused += 1
                    raise IdempotencyKeyReused()
                self.stats.replayed += 1
                doc = bytes(found["body"])
                return Answer(found["status"], doc, orjson.loads(doc)["id"], replayed=True)
            products = await repo.lock_products(conn, list(merged), self.price_list)
            lines, currency = self._check(body["lines"], merged, products)
            extra = [body.get(name) for name in EXTRA_FIELDS]
            row = await repo.insert_order(conn, user_id=user_id, currency=currency, lines=lines, extra=extra)
            doc = orjson.dumps(placed_json(row, currency, lines, extra))
            taken = await repo.save_key_and_take_stock(
                conn,
                user_id=user_id,
                key=key,
                request_hash=request_hash,
                body=doc,
                order_id=row["id"],
                ttl_s=self.key_ttl_s,
                stock=merged,
            )
            if taken != len(merged):
                raise _KeyTakenMeanwhile()
        self.stats.placed += 1
        return Answer(PLACED, doc, row["id"])

    def _check(
        self, given: list[dict[str, int]], merged: dict[int, int], products: list[asyncpg.Record]
    ) -> tuple[list[tuple[int, str | None, str | None, str, str | None, int, Decimal]], str]:
        """The order's lines (snapshot) and currency; 422 naming unavailable lines, 409 listing short ones."""
        found = {p["id"]: p for p in products}
        first_line: dict[int, int] = {}
        for i, line in enumerate(given):
            first_line.setdefault(line["product_id"], i)
        unavailable = [
            pid for pid in merged if (p := found.get(pid)) is None or not p["is_active"] or p["price"] is None
        ]
        if unavailable:
            self.stats.refused_product += 1
            raise ValidationFailed(
                "Some lines name a product that does not exist or is not for sale; nothing was ordered.",
                "بعض البنود تذكر منتجاً غير موجود أو غير معروض للبيع؛ لم يُنفَّذ أي طلب.",
                errors=[
                    FieldError(
                        f"body.lines[{first_line[pid]}].product_id",
                        f"product {pid} does not exist or is not for sale",
                        f"المنتج {pid} غير موجود أو غير معروض للبيع",
                    )
                    for pid in sorted(unavailable, key=first_line.__getitem__)
                ],
            )
        short = [(pid, qty, found[pid]["stock_on_hand"]) for pid, qty in merged.items()]
        short = [s for s in short if s[2] < s[1]]
        if short:
            self.stats.refused_stock += 1
            raise InsufficientStock(
                errors=[
                    FieldError(
                        f"body.lines[{first_line[pid]}].quantity",
                        f"only {max(0, available)} of product {pid} in stock ({qty} asked)",
                        f"المتوفر من المنتج {pid} هو {max(0, available)} فقط (المطلوب {qty})",
                    )
                    for pid, qty, available in sorted(short, key=lambda s: first_line[s[0]])
                ],
                extensions={
                    "lines": [
                        {
                            "line": first_line[pid],
                            "product_id": pid,
                            "requested": qty,
                            "available": max(0, available),
                        }
                        for pid, qty, available in sorted(short, key=lambda s: first_line[s[0]])
                    ]
                },
            )
        lines = [
            (pid, p["zoho_item_id"], p["sku"], p["name"], p["name_ar"], qty, p["price"])
            for pid, qty in merged.items()
            for p in (found[pid],)
        ]
        return lines, products[0]["currency"]

    async def history(self, pool: Any, *, user_id: int, before_id: int, page_size: int) -> bytes:
        """One page of the user's orders, newest first, with the cursor of the next page."""
        async with pool.acquire() as conn:
            rows = await repo.history(conn, user_id, before_id, page_size + 1)
        items = [order_json(r) for r in rows[:page_size]]
        more = len(rows) > page_size
        return orjson.dumps(
            {
                "items": items,
                "page_size": page_size,
                "next_cursor": encode_cursor(rows[page_size - 1]["id"]) if more else None,
            }
        )

    async def get(self, pool: Any, *, user_id: int, order_id: int) -> bytes:
        """The user's order (404 for anyone else's, as for one that does not exist)."""
        async with pool.acquire() as conn:
            row = await repo.one(conn, order_id, user_id)
        if row is None:
            raise no_order(order_id)
        return orjson.dumps(order_json(row))

    async def cancel(self, pool: Any, *, user_id: int, order_id: int) -> bytes:
        """Cancel a pending order and put its stock back, in one transaction (409 otherwise)."""
        async with pool.acquire() as conn:
            async with conn.transaction():
                status = await repo.lock_order(conn, order_id, user_id)
                if status is None:
                    raise no_order(order_id)
                if status != "pending":
                    raise OrderNotCancellable(
                        f"Order {order_id} is {status}; only a pending order can be cancelled.",
                        f"الطلب {order_id} حالته {status}؛ لا يمكن إلغاء إلا الطلب قيد الانتظار.",
                    )
                await repo.lock_order_products(conn, order_id)
                if not await repo.lock_outbox(conn, order_id):
                    raise OrderNotCancellable(
                        f"Order {order_id} is being sent to the retailer right now; see its status.",
                        f"يجري إرسال الطلب {order_id} إلى المتجر الآن؛ راجع حالته.",
                    )
                await repo.cancel(conn, order_id)
            row = await repo.one(conn, order_id, user_id)
        self.stats.cancelled += 1
        return orjson.dumps(order_json(row))


def merge_lines(lines: list[dict[str, int]]) -> dict[int, int]:
    """product id -> total quantity, in ascending product id order."""
    merged: dict[int, int] = {}
    for line in lines:
        merged[line["product_id"]] = merged.get(line["product_id"], 0) + line["quantity"]
    return dict(sorted(merged.items()))


def order_number(order_id: int) -> str:
    """Our order number: the Zoho sales order's reference_number."""
    return f"ORD-{order_id:08d}"


def no_order(order_id: int) -> NotFound:
    """The 404 of an order that is not the caller's (whether or not it exists)."""
    return NotFound(f"You have no order {order_id}.", f"لا يوجد لديك طلب بالمعرّف {order_id}.")


def _delivery(values: list[str | None]) -> dict[str, str | None] | None:
    if not any(values):
        return None
    return dict(zip(("name", "phone", "address", "city"), values, strict=True))


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def placed_json(
    row: asyncpg.Record,
    currency: str,
    lines: list[tuple[int, str | None, str | None, str, str | None, int, Decimal]],
    extra: list[str | None],
) -> dict[str, Any]:
    """The new order as order_json shows it (built from what the transaction already has)."""
    return {
        "id": row["id"],
        "number": order_number(row["id"]),
        "status": "pending",
        "currency": currency,
        "total": str(row["total"]),
        "item_count": sum(line[5] for line in lines),
        "notes": extra[0],
        "delivery": _delivery(extra[1:]),
        "created_at": _when(row["created_at"]),
        "updated_at": _when(row["updated_at"]),
        "cancelled_at": None,
        "zoho": {"state": "pending", "salesorder_id": None},
        "lines": [
            {
                "product_id": pid,
                "sku": sku,
                "name": name,
                "name_ar": name_ar,
                "quantity": qty,
                "unit_price": str(price),
                "line_total": str((price * qty).quantize(Decimal("0.01"))),
            }
            for pid, _zid, sku, name, name_ar, qty, price in lines
        ],
    }


def order_json(row: asyncpg.Record) -> dict[str, Any]:
    """An order read back (history, detail); its lines are PostgreSQL's JSON, embedded as they are."""
    return {
        "id": row["id"],
        "number": order_number(row["id"]),
        "status": row["status"],
        "currency": row["currency"],
        "total": str(row["total"]),
        "item_count": row["item_count"],
        "notes": row["notes"],
        "delivery": _delivery(
            [row["delivery_name"], row["delivery_phone"], row["delivery_address"], row["delivery_city"]]
        ),
        "created_at": _when(row["created_at"]),
        "updated_at": _when(row["updated_at"]),
        "cancelled_at": _when(row["cancelled_at"]),
        "zoho": {"state": row["zoho_state"], "salesorder_id": row["zoho_salesorder_id"]},
        "lines": orjson.Fragment(row["lines"] or "[]"),
    }
