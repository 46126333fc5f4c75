"""Admin writes: each one transaction that locks the product row, writes the change and its audit row.

The writes go through PostgreSQL like any other, so the catalog's statement triggers bump the version,
record the changed ids and notify: every process's caches and index see an admin write as they see the
sync's (within a second). A write that changes nothing is not applied (no version bump, no cache
invalidated) but is still audited, so the log shows every request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from server.admin import repo
from server.admin.schemas import product_doc
from server.body import INT_MAX
from server.errors import FieldError, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from server.images.ingest import ImageRejected, ImageTooLarge, UnsupportedImage, ingest_image, remove_image


@dataclass(frozen=True, slots=True)
class Actor:
    """Who writes (the key's id) and under which request id: what each audit row records."""

    key_id: int
    request_id: str


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """Where images go and how large they may be."""

    folder: Path
    max_bytes: int
    max_pixels: int


def _no_product(product_id: int) -> NotFound:
    return NotFound(f"No product with id {product_id}.", f"لا يوجد منتج بالمعرّف {product_id}.")


def _invalid(field: str, en: str, ar: str) -> ValidationFailed:
    return ValidationFailed(errors=[FieldError(field, en, ar)])


def _no_category() -> ValidationFailed:
    return _invalid("body.category_id", "no such category", "لا توجد فئة بهذا المعرّف")


async def _locked(conn: asyncpg.Connection, product_id: int) -> asyncpg.Record:
    row = await repo.product_for_update(conn, product_id)
    if row is None:
        raise _no_product(product_id)
    return row


async def _audit(
    conn: asyncpg.Connection, actor: Actor, action: str, target: str, before: Any, after: Any
) -> int:
    return await repo.insert_audit(
        conn,
        key_id=actor.key_id,
        action=action,
        target=target,
        before=before,
        after=after,
        request_id=actor.request_id,
    )


async def patch_product(
    conn: asyncpg.Connection, *, product_id: int, changes: dict[str, Any], actor: Actor
) -> dict[str, Any]:
    """Change names, descriptions, category or active flag; the product as it is now."""
    async with conn.transaction():
        before = product_doc(await _locked(conn, product_id))
        category = changes.get("category_id")
        if (
            category is not None
            and category != before["category_id"]
            and not await repo.category_exists(conn, category)
        ):
            raise _no_category()
        differ = {k: v for k, v in changes.items() if before[k] != v}
        after = before
        if differ:
            try:
                after = product_doc(await repo.update_product(conn, product_id, differ))
            except asyncpg.ForeignKeyViolationError:  # the category went away since we looked
                raise _no_category() from None
        audit_id = await _audit(
            conn,
            actor,
            "product.update",
            f"product:{product_id}",
            {k: before[k] for k in changes},
            {k: after[k] for k in changes},
        )
    return {**after, "audit_id": audit_id}


async def patch_stock(
    conn: asyncpg.Connection, *, product_id: int, stock: int | None, delta: int | None, actor: Actor
) -> dict[str, Any]:
    """Set the stock, or add `delta` to it under the row lock (concurrent deltas all count)."""
    async with conn.transaction():
        before = product_doc(await _locked(conn, product_id))
        if delta is not None:
            stock = before["stock_on_hand"] + delta
            if stock < 0:
                raise _invalid(
                    "body.delta",
                    f"would make the stock negative (it is {before['stock_on_hand']})",
                    f"سيجعل المخزون سالباً (المخزون الحالي {before['stock_on_hand']})",
                )
            if stock > INT_MAX:
                raise _invalid(
                    "body.delta", f"would make the stock exceed {INT_MAX}", f"سيتجاوز المخزون {INT_MAX}"
                )
        assert stock is not None
        after = before
        if stock != before["stock_on_hand"]:
            after = product_doc(await repo.set_stock(conn, product_id, stock))
        audit_id = await _audit(
            conn,
            actor,
            "product.stock",
            f"product:{product_id}",
            {"stock_on_hand": before["stock_on_hand"]},
            {"stock_on_hand": after["stock_on_hand"], **({"delta": delta} if delta is not None else {})},
        )
    return {**after, "audit_id": audit_id}


async def put_price(
    conn: asyncpg.Connection, *, product_id: int, code: str, price: Decimal, actor: Actor
) -> dict[str, Any]:
    """Set a product's price in one price list; 404 for an unknown product or price list."""
    async with conn.transaction():
        await _locked(conn, product_id)
        plist = await repo.price_list(conn, code)
        if plist is None:
            raise NotFound(f"No price list {code!r}.", f"لا توجد قائمة أسعار باسم {code!r}.")
        old = await repo.price_for_update(conn, product_id, plist["id"])
        if old != price:
            await repo.upsert_price(conn, product_id, plist["id"], price)
        audit_id = await _audit(
            conn,
            actor,
            "product.price",
            f"product:{product_id}",
            {"price_list": code, "price": None if old is None else str(old)},
            {"price_list": code, "price": str(price)},
        )
    return {
        "product_id": product_id,
        "price_list": code,
        "price": str(price),
        "currency": plist["currency"],
        "audit_id": audit_id,
    }


def _image_error(exc: ImageRejected) -> Exception:
    if isinstance(exc, ImageTooLarge):
        return PayloadTooLarge(exc.en, exc.ar)
    if isinstance(exc, UnsupportedImage):
        return UnsupportedMediaType(exc.en, exc.ar)
    return _invalid("body", exc.en, exc.ar)


async def put_image(
    conn: asyncpg.Connection, *, product_id: int, data: bytes, limits: ImageLimits, actor: Actor
) -> dict[str, Any]:
    """Validate and store a product's image (replacing any); the row lock serialises its uploads."""
    async with conn.transaction():
        row = await _locked(conn, product_id)
        item = row["zoho_item_id"]
        had = (limits.folder / f"{item}.jpg").exists()
        try:
            path = await asyncio.to_thread(
                ingest_image, data, limits.folder, item, limits.max_bytes, max_pixels=limits.max_pixels
            )
        except ImageRejected as exc:
            raise _image_error(exc) from None
        size = path.stat().st_size
        audit_id = await _audit(
            conn,
            actor,
            "product.image.put",
            f"product:{product_id}",
            {"has_image": had},
            {"has_image": True, "size_bytes": size, "uploaded_bytes": len(data)},
        )
    return _image_doc(product_id, item, has_image=True, audit_id=audit_id, size_bytes=size)


async def delete_image(
    conn: asyncpg.Connection, *, product_id: int, folder: Path, actor: Actor
) -> dict[str, Any]:
    """Remove a product's image file (idempotent: `removed` says whether there was one)."""
    async with conn.transaction():
        row = await _locked(conn, product_id)
        item = row["zoho_item_id"]
        removed = await asyncio.to_thread(remove_image, folder, item)
        audit_id = await _audit(
            conn,
            actor,
            "product.image.delete",
            f"product:{product_id}",
            {"has_image": removed},
            {"has_image": False},
        )
    return _image_doc(product_id, item, has_image=False, audit_id=audit_id, removed=removed)


def _image_doc(product_id: int, item: str, *, has_image: bool, audit_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "product_id": product_id,
        "zoho_item_id": item,
        "has_image": has_image,
        "image_path": f"/product-images/{item}.jpg",
        **extra,
        "audit_id": audit_id,
    }
