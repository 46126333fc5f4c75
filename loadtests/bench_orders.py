"""Orders benchmark: the issue's table, full size, printed (the tests assert the correctness at a smaller
size; nothing here is asserted on time).

A throw-away service (2 processes, rate limits off) on a scratch database of a real PostgreSQL
(`--admin-url`, created and dropped) with a signing key of our own, so shoppers are made in SQL and their
access tokens signed here (no sign-up, no password hashing in the figures). Rows:
  1. 200 concurrent orders for one product with stock 50: how many 201 / 409, the stock left.
  2. 1,000 concurrent multi-line orders over 20 products, random line order: deadlocks (pg_stat_database),
     5xx, oversold (stock + sold per product must stay what it was), statuses.
  3. One order sent 10 times at once with one key, then once more: orders made, answers, the late replay.
  4. Order placement with wrk (fresh key per request, 2 processes): orders/s, p50, p99.
  5. History of a shopper with 1,000 orders, every page (keyset cursors) with wrk: p50, p99.

    python -m loadtests.bench_orders [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--redis-url redis://127.0.0.1:6379/1] [--duration 10s] [--connections 32]   (make bench-orders)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from loadtests.bench_http import ensure_wrk, parse_wrk
from loadtests.service import LocalService
from server.accounts.keys import KeyRing
from server.accounts.tokens import sign

ORDERS = "/api/consumer/orders"
KID = "bench"
KEY = bytes(range(100, 132))
LUA = Path(__file__).with_name("bench_orders.lua")
PAGES_LUA = Path(__file__).with_name("bench_mix.lua")


def token(user_id: int) -> str:
    """An access token of `user_id` (1 hour)."""
    return sign(KeyRing({KID: KEY}, KID), user_id=user_id, session="bench", ttl_s=3600)


def key_env() -> dict[str, str]:
    """The service's AUTH_JWT_KEYS: our key."""
    import base64

    return {"AUTH_JWT_KEYS": f"{KID}:{base64.urlsafe_b64encode(KEY).decode().rstrip('=')}"}


async def make_users(conn: asyncpg.Connection, n: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO users (email, password_hash, email_verified_at) "
        "SELECT 'b' || g || '-' || $2 || '@example.com', 'x', now() FROM generate_series(1, $1) g "
        "RETURNING id",
        n,
        uuid.uuid4().hex[:8],
    )
    return [r["id"] for r in rows]


async def priced(conn: asyncpg.Connection, n: int, skip: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT p.id FROM products p JOIN product_prices pp ON pp.product_id = p.id "
        "JOIN price_lists pl ON pl.id = pp.price_list_id AND pl.code = 'consumer' "
        "WHERE p.is_active ORDER BY p.id OFFSET $1 LIMIT $2",
        skip,
        n,
    )
    return [r["id"] for r in rows]


async def stock(conn: asyncpg.Connection, ids: list[int]) -> dict[int, int]:
    rows = await conn.fetch("SELECT id, stock_on_hand FROM products WHERE id = ANY($1::int[])", ids)
    return {r["id"]: r["stock_on_hand"] for r in rows}


async def deadlocks(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    )


RETRIED: dict[str, int] = {}  # answers that were retried with the same key, by status


async def post_all(
    url: str, requests: list[tuple[int, str, dict[str, Any]]], retry: bool = True
) -> list[httpx.Response]:
    """Every (user, key, body) at once over up to 200 connections. A 503 (the process shed the request:
    no pool connection in DB_ACQUIRE_TIMEOUT_S) is sent again with the same key after its Retry-After, as
    a client should: the key makes that safe."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(user: int, key: str, body: dict[str, Any]) -> httpx.Response:
            await start.wait()
            headers = {"Authorization": f"Bearer {token(user)}", "Idempotency-Key": key}
            for _ in range(10):
                resp = await client.post(ORDERS, json=body, headers=headers)
                if resp.status_code != 503 or not retry:
                    return resp
                RETRIED["503"] = RETRIED.get("503", 0) + 1
                await asyncio.sleep(float(resp.headers.get("retry-after", "1")) * random.uniform(1, 2))
            return resp

        tasks = [asyncio.create_task(one(*r)) for r in requests]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))


def counts(answers: list[httpx.Response]) -> str:
    seen: dict[int, int] = {}
    for r in answers:
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
    return ", ".join(f"{n}x{s}" for s, n in sorted(seen.items()))


async def correctness(url: str, conn: asyncpg.Connection, users: list[int]) -> None:
    (one,) = await priced(conn, 1, 0)
    await conn.execute("UPDATE products SET stock_on_hand = 50 WHERE id = $1", one)
    body = {"lines": [{"product_id": one, "quantity": 1}]}
    answers = await post_all(url, [(users[i % len(users)], str(uuid.uuid4()), body) for i in range(200)])
    ok = sum(r.status_code == 201 for r in answers)
    short = sum(r.status_code == 409 for r in answers)
    left = (await stock(conn, [one]))[one]
    print(
        f"1. 200 concurrent orders, 1 product, stock 50: {ok} succeeded, {short} got 409, stock left {left}"
    )

    ids = await priced(conn, 20, 1)
    await conn.execute("UPDATE products SET stock_on_hand = 300 WHERE id = ANY($1::int[])", ids)
    before = await deadlocks(conn)
    RETRIED.clear()
    rng = random.Random(7)
    requests = []
    for i in range(1000):
        lines = [{"product_id": p, "quantity": rng.randint(1, 5)} for p in rng.sample(ids, rng.randint(2, 6))]
        requests.append((users[i % len(users)], str(uuid.uuid4()), {"lines": lines}))
    answers = await post_all(url, requests)
    after = await deadlocks(conn)
    left_by = await stock(conn, ids)
    sold = await conn.fetch(
        "SELECT l.product_id, sum(l.quantity)::int AS n FROM order_lines l "
        "JOIN orders o ON o.id = l.order_id "
        "WHERE o.status <> 'cancelled' AND l.product_id = ANY($1::int[]) GROUP BY 1",
        ids,
    )
    sold_by = {r["product_id"]: r["n"] for r in sold}
    drift = sum(abs(left_by[p] + sold_by.get(p, 0) - 300) for p in ids)
    oversold = sum(1 for p in ids if left_by[p] < 0)
    errors = sum(r.status_code >= 500 for r in answers)
    print(
        f"2. 1,000 concurrent multi-line orders over 20 products: {after - before} deadlocks, {errors} 5xx, "
        f"{oversold} oversold, stock + sold drift {drift} ({counts(answers)}; "
        f"{RETRIED.get('503', 0)} sends were 503s retried with their key)"
    )

    (prod,) = await priced(conn, 1, 30)
    await conn.execute("UPDATE products SET stock_on_hand = 100 WHERE id = $1", prod)
    key, user = str(uuid.uuid4()), users[0]
    body = {"lines": [{"product_id": prod, "quantity": 2}]}
    answers = await post_all(url, [(user, key, body)] * 10)
    late = (await post_all(url, [(user, key, body)]))[0]
    made = await conn.fetchval(
        "SELECT count(DISTINCT o.id) FROM orders o JOIN order_lines l ON l.order_id = o.id "
        "WHERE o.user_id = $1 AND l.product_id = $2",
        user,
        prod,
    )
    ids_seen = {r.json()["id"] for r in answers if r.status_code == 201}
    print(
        f"3. one key sent 10 times at once: {made} order(s) made; answers {counts(answers)} "
        f"(one order id: {len(ids_seen) == 1}); late retry {late.status_code}, "
        f"Idempotent-Replayed: {late.headers.get('idempotent-replayed')}, "
        f"same order: {late.json()['id'] in ids_seen}"
    )


async def history_urls(url: str, user: int) -> list[str]:
    urls, cursor = [], None
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while True:
            path = ORDERS + "?page_size=50" + (f"&cursor={cursor}" if cursor else "")
            urls.append(path)
            doc = (await client.get(path, headers={"Authorization": f"Bearer {token(user)}"})).json()
            cursor = doc["next_cursor"]
            if cursor is None:
                return urls


async def fill_history(conn: asyncpg.Connection, user: int, product: int, n: int) -> None:
    """`n` orders of one line for `user`, made in SQL (the figure is about reading them)."""
    await conn.execute(
        """
        WITH o AS (
            INSERT INTO orders (user_id, currency, total, item_count)
            SELECT $1, 'SAR', 9.99 * 2, 2 FROM generate_series(1, $3) RETURNING id
        ), l AS (
            INSERT INTO order_lines (order_id, line_no, product_id, name, quantity, unit_price, line_total)
            SELECT id, 1, $2, 'bench', 2, 9.99, 19.98 FROM o
        )
        INSERT INTO order_outbox (order_id) SELECT id FROM o
        """,
        user,
        product,
        n,
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_by_one(url: str, send: Any, n: int = 300) -> str:
    """`n` requests one after another (`send(client, i)`): client latency and the server's own time and
    its PostgreSQL part (Server-Timing)."""
    client_ms, app_ms, db_ms = [], [], []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for i in range(n):
            started = time.perf_counter()
            resp = await send(client, i)
            client_ms.append((time.perf_counter() - started) * 1000)
            timing = resp.headers.get("server-timing", "")
            app = re.search(r"app;dur=([\d.]+)", timing)
            db = re.search(r"db;dur=([\d.]+)", timing)
            if app and db:
                app_ms.append(float(app.group(1)))
                db_ms.append(float(db.group(1)))
    return (
        f"client p50 {pct(client_ms, 0.5):.1f} / p99 {pct(client_ms, 0.99):.1f} ms; server p50 "
        f"{pct(app_ms, 0.5):.1f} / p99 {pct(app_ms, 0.99):.1f} ms, "
        f"of which PostgreSQL p50 {pct(db_ms, 0.5):.1f} ms"
    )


def wrk(args: list[str]) -> str:
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if "Requests/sec" not in out.stdout:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    return out.stdout


async def main(opts: argparse.Namespace) -> None:
    wrk_bin = ensure_wrk()
    name = "bench_orders_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(opts.admin_url)
    await admin.execute(f"CREATE DATABASE {name}")
    db_url = opts.admin_url.rsplit("/", 1)[0] + "/" + name
    env = {"DATABASE_URL": db_url, **key_env(), **({"REDIS_URL": opts.redis_url} if opts.redis_url else {})}
    env["REDIS_KEY_PREFIX"] = f"bo{uuid.uuid4().hex[:8]}:"
    env["SERVER_TIMING"] = "true"
    try:
        with LocalService(products=opts.products, processes=2, env=env) as svc:
            conn = await asyncpg.connect(db_url)
            try:
                users = await make_users(conn, 200)
                await correctness(svc.url, conn, users)
                ids = await priced(conn, 50, 100)
                await conn.execute(
                    "UPDATE products SET stock_on_hand = 100000000 WHERE id = ANY($1::int[])", ids
                )
                with tempfile.TemporaryDirectory() as tmp:
                    tokens, products = Path(tmp) / "tokens.txt", Path(tmp) / "products.txt"
                    tokens.write_text("\n".join(token(u) for u in users) + "\n")
                    products.write_text("\n".join(map(str, ids)) + "\n")
                    cmd = [wrk_bin, "-t2", f"-c{opts.connections}", f"-d{opts.duration}", "--latency"]
                    text = wrk([*cmd, "-s", str(LUA), svc.url, "--", str(tokens), str(products)])
                    res = parse_wrk("place", text)
                    print(
                        f"4. order placement, 2 processes, {opts.connections} connections: "
                        f"{res.rps:.0f} orders/s, "
                        f"p50 {res.p50_ms:.1f} ms, p99 {res.p99_ms:.1f} ms, errors/non-2xx {res.errors}"
                    )

                    async def order(client: httpx.AsyncClient, i: int) -> httpx.Response:
                        user = users[i % len(users)]
                        headers = {
                            "Authorization": f"Bearer {token(user)}",
                            "Idempotency-Key": str(uuid.uuid4()),
                        }
                        body = {"lines": [{"product_id": ids[i % len(ids)], "quantity": 1}]}
                        return await client.post(ORDERS, json=body, headers=headers)

                    print(f"   one order at a time: {await one_by_one(svc.url, order)}")
                    (reader,) = await make_users(conn, 1)
                    await fill_history(conn, reader, ids[0], 1000)
                    urls = await history_urls(svc.url, reader)
                    reader_auth = {"Authorization": f"Bearer {token(reader)}"}

                    async def page(client: httpx.AsyncClient, i: int) -> httpx.Response:
                        return await client.get(urls[i % len(urls)], headers=reader_auth)

                    print(f"   one history page at a time: {await one_by_one(svc.url, page, 400)}")
                    listing = Path(tmp) / "urls.txt"
                    listing.write_text("\n".join(urls) + "\n")
                    auth = f"Authorization: Bearer {token(reader)}"
                    pages = [str(PAGES_LUA), svc.url, "--", str(listing), "2"]
                    text = wrk(
                        [wrk_bin, "-t2", "-c8", f"-d{opts.duration}", "--latency", "-H", auth, "-s", *pages]
                    )
                    res = parse_wrk("history", text)
                    print(
                        f"5. history of a shopper with 1,000 orders, all {len(urls)} pages of 50 "
                        f"(2 connections): "
                        f"{res.rps:.0f} pages/s, p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms, "
                        f"errors/non-2xx {res.errors}"
                    )
            finally:
                await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL where a scratch database may be created (BENCH_ADMIN_URL)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"), help="default: embedded")
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--duration", default="10s", help="of each wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections placing orders")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
