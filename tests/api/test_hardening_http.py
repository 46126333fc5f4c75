"""What the outside review broke in the HTTP wrapper, over the real server: unbounded memos, header lines
counted once per name, unreadable dates, HEAD lengths, validators and Vary, load shedding."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from catalog_testlib import Database, ServerProcess, Services, drop_database, make_database, run

PRODUCTS = "/api/consumer/products"
GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}


def an_image(database: Database) -> str:
    """The name of an active product's image file that exists."""
    for (zoho_id,) in run(database.fetch("SELECT zoho_item_id FROM products WHERE is_active ORDER BY id")):
        if (database.uploads / f"{zoho_id}.jpg").is_file():
            return f"/product-images/{zoho_id}.jpg"
    raise AssertionError("the seed made no images")


@pytest.mark.parametrize(
    "date",
    [
        "Mon, 01 Jan 2024 00:00:00 +99999999999999999999",
        "Mon, 01 Jan 2024 00:00:00 -99999999999999999999",
        "Mon, 99 Foo 99999999999 99:99:99 GMT",
        "not a date",
        "",
    ],
)
def test_an_unreadable_if_modified_since_is_ignored(api: httpx.Client, database: Database, date: str) -> None:
    resp = api.get(an_image(database), headers={"If-Modified-Since": date})
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"


def test_repeated_header_lines_all_count_towards_the_limit(api: httpx.Client) -> None:
    pad = [("X-Pad", "p" * 1024)] * 90
    resp = api.get(PRODUCTS, headers=pad)
    assert resp.status_code == 431
    assert resp.json()["code"] == "headers_too_large"
    assert api.get(PRODUCTS, headers=[("X-Pad", "p" * 1024)] * 5).status_code == 200


def test_a_huge_path_is_414_not_a_memo_entry(api: httpx.Client) -> None:
    resp = api.get("/nothing/" + "a" * 60_000)
    assert resp.status_code == 414 and resp.json()["code"] == "uri_too_long"


@pytest.mark.parametrize("headers", [GZIP, IDENTITY])
def test_head_reports_the_length_of_the_get(api: httpx.Client, headers: dict[str, str]) -> None:
    params = {"page_size": "100"}
    got = api.get(PRODUCTS, params=params, headers=headers)
    head = api.head(PRODUCTS, params=params, headers=headers)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == int(got.headers["content-length"])
    assert len(got.content) > 1000
    assert head.headers.get("content-encoding") == got.headers.get("content-encoding")
    assert head.headers["etag"] == got.headers["etag"]


def test_gzip_and_identity_have_different_strong_etags(api: httpx.Client) -> None:
    params = {"page_size": "100"}
    gz = api.get(PRODUCTS, params=params, headers=GZIP)
    plain = api.get(PRODUCTS, params=params, headers=IDENTITY)
    assert gz.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert gz.headers["etag"] != plain.headers["etag"]
    assert not gz.headers["etag"].startswith("W/") and not plain.headers["etag"].startswith("W/")
    again = api.get(PRODUCTS, params=params, headers={**GZIP, "If-None-Match": gz.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == gz.headers["etag"]
    # The identity validator does not validate the gzip representation.
    other = api.get(PRODUCTS, params=params, headers={**GZIP, "If-None-Match": plain.headers["etag"]})
    assert other.status_code == 200


def test_a_304_carries_vary(api: httpx.Client) -> None:
    first = api.get(PRODUCTS, headers=GZIP)
    second = api.get(PRODUCTS, headers={**GZIP, "If-None-Match": first.headers["etag"]})
    assert second.status_code == 304
    assert second.headers["vary"] == first.headers["vary"]
    assert "accept-encoding" in second.headers["vary"].lower()


@pytest.fixture(scope="module")
def cors_server(
    services: Services, template_db: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("cors")
    db = make_database(services, template_db, folder)
    srv = ServerProcess(db, services, folder, CORS_ORIGINS="https://shop.example").start()
    yield srv
    srv.stop()
    drop_database(db)


@pytest.mark.parametrize("origin", [None, "https://evil.example", "https://shop.example"])
def test_with_cors_on_every_answer_varies_on_origin(cors_server: ServerProcess, origin: str | None) -> None:
    headers = {"Origin": origin} if origin else {}
    with cors_server.client() as client:
        for path in (PRODUCTS, "/api/consumer/products/999999999", "/nowhere", "/health"):
            resp = client.get(path, headers=headers)
            assert "origin" in resp.headers.get("vary", "").lower(), (path, resp.headers)
        listed = client.get(PRODUCTS, headers={**headers, **GZIP})
        assert {v.strip().lower() for v in listed.headers["vary"].split(",")} == {"origin", "accept-encoding"}
        allowed = listed.headers.get("access-control-allow-origin")
        assert allowed == (origin if origin == "https://shop.example" else None)


def _worker_rss(server: ServerProcess) -> int:
    assert server.proc is not None
    total = 0
    for proc in psutil.Process(server.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def test_distinct_huge_inputs_do_not_grow_memory(
    services: Services, template_db: tuple[str, Path], tmp_path: Path
) -> None:
    """The review's two probes: 2,000 distinct 60 KB unknown paths and 4,000 distinct 15 KB
    X-Forwarded-For headers (through a trusted proxy) grew a worker by 110 + 60 MB. Budget: < 10 MB."""
    db = make_database(services, template_db, tmp_path)
    srv = ServerProcess(
        db, services, tmp_path, PROCESSES="1", TRUSTED_PROXIES="127.0.0.1/32", RATE_LIMIT_ENABLED="true"
    ).start()
    try:
        with srv.client() as client:
            for i in range(300):  # warm up: allocator arenas, connections, memos of normal traffic
                client.get(f"/warm/{i}")
                client.get(PRODUCTS, headers={"X-Forwarded-For": f"10.0.{i % 250}.{i % 200}"})
            before = _worker_rss(srv)
            for i in range(2000):
                resp = client.get(f"/{i:05d}" + "x" * 60_000)
                assert resp.status_code in (404, 414)
            middle = _worker_rss(srv)
            for i in range(4000):
                hops = ",".join(f"10.{(i >> 8) & 255}.{i & 255}.{j}" for j in range(1100))[:15_000]
                resp = client.get(PRODUCTS, headers={"X-Forwarded-For": hops})
                assert resp.status_code in (200, 429)
            after = _worker_rss(srv)
        grown_mb = (after - before) / 1e6
        print(
            f"worker RSS {before / 1e6:.1f} MB -> {middle / 1e6:.1f} MB (paths) -> "
            f"{after / 1e6:.1f} MB (headers): +{grown_mb:.1f} MB"
        )
        assert grown_mb < 10
    finally:
        srv.stop()
        drop_database(db)


def test_excess_requests_are_shed_with_503_while_health_answers(
    services: Services, template_db: tuple[str, Path], tmp_path: Path
) -> None:
    db = make_database(services, template_db, tmp_path)
    srv = ServerProcess(
        db, services, tmp_path, PROCESSES="1", MAX_INFLIGHT="2", CACHE_ENABLED="false", ROW_STORE_MB="0"
    ).start()

    async def hold_lock(release: asyncio.Event, held: asyncio.Event) -> None:
        conn = await asyncpg.connect(db.url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
                held.set()
                await release.wait()
        finally:
            await conn.close()

    async def scenario() -> tuple[list[httpx.Response], float, int]:
        release, held = asyncio.Event(), asyncio.Event()
        locker = asyncio.create_task(hold_lock(release, held))
        await held.wait()
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=20) as client:
            blocked = [
                asyncio.create_task(client.get(PRODUCTS, params={"page": str(i)})) for i in range(1, 3)
            ]
            await asyncio.sleep(0.5)  # both are in flight, waiting on the lock
            started = time.monotonic()
            shed = await asyncio.gather(*(client.get(PRODUCTS, params={"page": str(i)}) for i in range(3, 6)))
            shed_s = time.monotonic() - started
            health = (await client.get("/health")).status_code
            release.set()
            await locker
            return [*shed, *await asyncio.gather(*blocked)], shed_s, health

    try:
        answers, shed_s, health = run(scenario())
        shed, finished = answers[:3], answers[3:]
        assert [r.status_code for r in shed] == [503, 503, 503]
        assert all(r.headers["retry-after"] == "1" for r in shed)
        assert all(r.json()["code"] == "service_unavailable" for r in shed)
        assert shed_s < 2, "shed requests must not queue"
        assert health == 200
        assert [r.status_code for r in finished] == [200, 200]
    finally:
        srv.stop()
        drop_database(db)


def test_concurrent_spellings_are_served_consistently(api: httpx.Client) -> None:
    """Many spellings at once (one shared fill per key) all see the same body."""
    spellings = ["5", "5.0", "5.00", "05", "005.0"]
    with ThreadPoolExecutor(5) as pool:
        bodies = set(
            pool.map(
                lambda p: api.get(PRODUCTS, params={"min_price": p, "sort": "-price"}).content, spellings
            )
        )
    assert len(bodies) == 1
