"""Rate limits over HTTP (shared by processes and instances), CORS, and size limits."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, drop_database, make_database

from server.embedded import EmbeddedRedis

PRODUCTS = "/api/consumer/products"
CLOSE = {"Connection": "close"}
LIMITED = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_CATALOG": "100/60s", "PROCESSES": "2"}


@pytest.fixture
def db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Iterator[Database]:
    """A database for one test."""
    database = make_database(services, template_db, tmp_path)
    yield database
    drop_database(database)


def burst(base_url: str, n: int, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """n requests over 16 keep-alive connections (the kernel spreads them over both processes), fast
    enough that the quota's refill (one request per 0.6 s at 100/60s) adds at most a couple."""
    started = time.monotonic()
    with httpx.Client(limits=httpx.Limits(max_connections=16)) as client, ThreadPoolExecutor(16) as pool:
        out = list(
            pool.map(
                lambda i: client.get(f"{base_url}{PRODUCTS}?page={i % 3 + 1}", headers=headers or {}),
                range(n),
            )
        )
    assert time.monotonic() - started < 3, "too slow to test a per-minute quota"
    return out


def check_limited(responses: list[httpx.Response], quota: int) -> None:
    """About `quota` 200s; every 429 a complete problem with Retry-After and RateLimit headers."""
    allowed = [r for r in responses if r.status_code == 200]
    denied = [r for r in responses if r.status_code == 429]
    assert len(allowed) + len(denied) == len(responses)
    assert quota * 0.95 <= len(allowed) <= quota * 1.05, len(allowed)
    for resp in allowed[:5]:
        assert resp.headers["ratelimit-policy"] == '"catalog";q=100;w=60'
        assert re.fullmatch(r'"catalog";r=\d+;t=\d+', resp.headers["ratelimit"])
    for resp in denied:
        assert int(resp.headers["retry-after"]) >= 1
        assert resp.headers["ratelimit-policy"] == '"catalog";q=100;w=60'
        assert re.fullmatch(r'"catalog";r=0;t=\d+', resp.headers["ratelimit"])
        body = resp.json()
        assert (
            body["code"] == "rate_limited"
            and body["status"] == 429
            and body["title_ar"]
            and body["detail_ar"]
        )
        assert resp.headers["content-type"] == "application/problem+json"


def test_quota_is_shared_by_processes(db: Database, services: Services, tmp_path: Path) -> None:
    srv = ServerProcess(db, services, tmp_path, **LIMITED).start()
    try:
        check_limited(burst(srv.base_url, 300), 100)
        # Health is not limited; images have their own group.
        assert all(r.status_code == 200 for r in (httpx.get(srv.base_url + "/health") for _ in range(5)))
        assert "ratelimit" not in httpx.get(srv.base_url + "/health").headers
    finally:
        srv.stop()


def test_two_instances_share_one_quota(db: Database, services: Services, tmp_path: Path) -> None:
    a = ServerProcess(db, services, tmp_path / "a", **LIMITED)
    b = ServerProcess(db, services, tmp_path / "b", **LIMITED)
    b.env["REDIS_KEY_PREFIX"] = a.env["REDIS_KEY_PREFIX"]  # one deployment, two instances
    for srv in (a, b):
        srv.workdir.mkdir(parents=True, exist_ok=True)
        srv.log_path = srv.workdir / "server.log"
        srv.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            halves = list(pool.map(lambda s: burst(s.base_url, 150), (a, b)))
        check_limited(halves[0] + halves[1], 100)
        assert any(r.status_code == 200 for r in halves[0]) and any(r.status_code == 200 for r in halves[1])
    finally:
        a.stop()
        b.stop()


def test_forged_forwarded_for_from_untrusted_peer_changes_nothing(
    db: Database, services: Services, tmp_path: Path
) -> None:
    srv = ServerProcess(db, services, tmp_path, **LIMITED).start()
    try:
        started = time.monotonic()
        with httpx.Client(limits=httpx.Limits(max_connections=16)) as client, ThreadPoolExecutor(16) as pool:
            forged = list(
                pool.map(
                    lambda i: client.get(
                        f"{srv.base_url}{PRODUCTS}", headers={"X-Forwarded-For": f"10.0.{i // 250}.{i % 250}"}
                    ),
                    range(200),
                )
            )
        refill = (time.monotonic() - started) / 0.6  # 100/60s: one more request every 0.6 s
        # Each forged address would have had its own quota: 200 allowed. One client's quota it is.
        assert sum(r.status_code == 200 for r in forged) <= 100 + refill + 2
    finally:
        srv.stop()


def test_trusted_proxy_forwarded_for_identifies_clients(
    db: Database, services: Services, tmp_path: Path
) -> None:
    srv = ServerProcess(db, services, tmp_path, TRUSTED_PROXIES="127.0.0.1/32", **LIMITED).start()
    try:
        first = burst(srv.base_url, 120, {"X-Forwarded-For": "203.0.113.7"})
        assert sum(r.status_code == 200 for r in first) <= 105
        other = httpx.get(f"{srv.base_url}{PRODUCTS}", headers={"X-Forwarded-For": "203.0.113.8"})
        assert other.status_code == 200  # another client behind the same proxy has its own quota
    finally:
        srv.stop()


def test_redis_down_means_local_limits_and_no_5xx(db: Database, services: Services, tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    srv = ServerProcess(db, services, tmp_path, REDIS_URL=f"unix://{redis.socket}", **LIMITED).start()
    try:
        redis.stop()
        responses = burst(srv.base_url, 200)
        assert {r.status_code for r in responses} <= {200, 429}
        allowed = sum(r.status_code == 200 for r in responses)
        # Each process enforces quota/processes locally: about the quota in total, never unlimited.
        assert 40 <= allowed <= 110, allowed
        states = {
            httpx.get(srv.base_url + "/ready", headers=CLOSE).json()["rate_limit"]["degraded"]
            for _ in range(8)
        }
        assert True in states
    finally:
        srv.stop()
        redis.stop()


@pytest.fixture(scope="module")
def cors_server(
    services: Services, template_db: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server that allows one browser origin."""
    folder = tmp_path_factory.mktemp("cors")
    database = make_database(services, template_db, folder)
    srv = ServerProcess(database, services, folder, CORS_ORIGINS="https://shop.example").start()
    yield srv
    srv.stop()
    drop_database(database)


def test_cors_preflight_allowed_origin(cors_server: ServerProcess) -> None:
    resp = httpx.options(
        f"{cors_server.base_url}{PRODUCTS}",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "If-None-Match, X-Request-ID, X-Evil",
        },
    )
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == "https://shop.example"
    assert "GET" in resp.headers["access-control-allow-methods"]
    allowed = resp.headers["access-control-allow-headers"]
    assert "if-none-match" in allowed and "x-request-id" in allowed and "x-evil" not in allowed
    assert int(resp.headers["access-control-max-age"]) > 0
    get = httpx.get(f"{cors_server.base_url}{PRODUCTS}", headers={"Origin": "https://shop.example"})
    assert get.headers["access-control-allow-origin"] == "https://shop.example"
    assert "ETag" in get.headers["access-control-expose-headers"]
    assert "Origin" in get.headers["vary"]


def test_cors_rejects_other_origins(cors_server: ServerProcess) -> None:
    resp = httpx.options(
        f"{cors_server.base_url}{PRODUCTS}",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "GET",
        },
    )
    assert resp.status_code == 403
    assert "access-control-allow-origin" not in resp.headers
    assert resp.json()["code"] == "origin_not_allowed"
    get = httpx.get(f"{cors_server.base_url}{PRODUCTS}", headers={"Origin": "https://evil.example"})
    assert get.status_code == 200 and "access-control-allow-origin" not in get.headers


def test_plain_options_lists_methods(cors_server: ServerProcess) -> None:
    resp = httpx.options(f"{cors_server.base_url}{PRODUCTS}")
    assert resp.status_code == 204 and resp.headers["allow"] == "GET, HEAD, OPTIONS"


def test_oversized_headers_and_query_are_refused(cors_server: ServerProcess) -> None:
    big_header = httpx.get(f"{cors_server.base_url}{PRODUCTS}", headers={"X-Junk": "x" * 20_000})
    assert big_header.status_code == 431 and big_header.json()["code"] == "headers_too_large"
    long_query = httpx.get(f"{cors_server.base_url}{PRODUCTS}?q={'x' * 5000}")
    assert long_query.status_code == 414 and long_query.json()["code"] == "uri_too_long"
