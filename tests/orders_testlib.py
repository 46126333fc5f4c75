"""Helpers of the order tests: shoppers made in SQL with tokens signed by a key the server also has
(no sign-up mail, no password hashing), products set up for ordering, and concurrent order requests."""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from catalog_testlib import Database

from server.accounts.keys import KeyRing
from server.accounts.tokens import sign

ORDERS = "/api/consumer/orders"
KID = "orders-test"
KEY = bytes(range(32))
JWT_ENV = {"AUTH_JWT_KEYS": f"{KID}:{base64.urlsafe_b64encode(KEY).decode().rstrip('=')}"}


def token(user_id: int) -> str:
    """An access token of `user_id`, valid for 15 minutes."""
    return sign(KeyRing({KID: KEY}, KID), user_id=user_id, session="test", ttl_s=900)


@dataclass(frozen=True, slots=True)
class Shopper:
    """A user id and the headers of its requests."""

    id: int
    token: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        """Authorization and, when given, the Idempotency-Key."""
        out = {"Authorization": f"Bearer {self.token}"}
        if key is not None:
            out["Idempotency-Key"] = key
        return out


async def make_shoppers(db: Database, n: int) -> list[Shopper]:
    """`n` verified users, made in SQL."""
    rows = await db.fetch(
        "INSERT INTO users (email, password_hash, email_verified_at) "
        "SELECT 'o' || g || '-' || $2 || '@example.com', 'x', now() FROM generate_series(1, $1) g "
        "RETURNING id",
        n,
        uuid.uuid4().hex[:10],
    )
    return [Shopper(r["id"], token(r["id"])) for r in rows]


async def priced_products(db: Database, n: int, stock: int, skip: int = 0) -> list[int]:
    """Ids of `n` active products with a consumer price, their stock set to `stock`."""
    rows = await db.fetch(
        "SELECT p.id FROM products p JOIN product_prices pp ON pp.product_id = p.id "
        "JOIN price_lists pl ON pl.id = pp.price_list_id AND pl.code = 'consumer' "
        "WHERE p.is_active ORDER BY p.id OFFSET $1 LIMIT $2",
        skip,
        n,
    )
    ids = [r["id"] for r in rows]
    assert len(ids) == n
    await db.execute("UPDATE products SET stock_on_hand = $2 WHERE id = ANY($1::int[])", ids, stock)
    return ids


async def stock_of(db: Database, ids: list[int]) -> dict[int, int]:
    """id -> stock_on_hand."""
    rows = await db.fetch("SELECT id, stock_on_hand FROM products WHERE id = ANY($1::int[])", ids)
    return {r["id"]: r["stock_on_hand"] for r in rows}


def new_key() -> str:
    """A fresh Idempotency-Key."""
    return str(uuid.uuid4())


async def post_many(
    base_url: str, requests: list[tuple[Shopper, str, dict[str, Any]]], limit: int = 64
) -> list[httpx.Response]:
    """POST each (shopper, key, body) at once (up to `limit` connections); the answers in order."""
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        start = asyncio.Event()

        async def one(shopper: Shopper, key: str, body: dict[str, Any]) -> httpx.Response:
            await start.wait()
            return await client.post(ORDERS, json=body, headers=shopper.headers(key))

        tasks = [asyncio.create_task(one(*r)) for r in requests]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))
