"""Provider-block budgets over HTTP: clients rotating through one IPv6 /48 share one budget."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, drop_database, make_database

PRODUCTS = "/api/consumer/products"
# 10 per client per minute; the default block multiplier (16) gives every /48 160.
BLOCKS = {
    "RATE_LIMIT_ENABLED": "true",
    "RATE_LIMIT_CATALOG": "10/60s",
    "TRUSTED_PROXIES": "127.0.0.1/32,::1/128",
    "PROCESSES": "2",
}


@pytest.fixture
def db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Iterator[Database]:
    """A database for one test."""
    database = make_database(services, template_db, tmp_path)
    yield database
    drop_database(database)


def get_all(base_url: str, forwarded_for: list[str]) -> list[httpx.Response]:
    """One products GET per X-Forwarded-For value, over 16 keep-alive connections."""
    with httpx.Client(limits=httpx.Limits(max_connections=16)) as client, ThreadPoolExecutor(16) as pool:
        return list(
            pool.map(
                lambda xff: client.get(base_url + PRODUCTS, headers={"X-Forwarded-For": xff}), forwarded_for
            )
        )


def test_slash64s_of_one_slash48_share_its_budget(db: Database, services: Services, tmp_path: Path) -> None:
    srv = ServerProcess(db, services, tmp_path, **BLOCKS).start()
    try:
        # 150 /64s of 2001:db8:7::/48, twice each: every client is within its own 10, the /48 is not.
        started = time.monotonic()
        rotating = get_all(srv.base_url, [f"2001:db8:7:{i % 150:x}::1" for i in range(300)])
        refill = (time.monotonic() - started) * 160 / 60  # the /48's budget refills at 160 per minute
        allowed = sum(r.status_code == 200 for r in rotating)
        assert {r.status_code for r in rotating} == {200, 429}
        assert 160 <= allowed <= 160 + refill + 1, allowed  # 16 x 10 (each /64 was within its own 10)
        denied = next(r for r in rotating if r.status_code == 429)
        assert int(denied.headers["retry-after"]) >= 1
        assert denied.json()["code"] == "rate_limited"
        assert denied.headers["ratelimit"].startswith('"catalog";r=0;t=')
        # Another /48 has its own budget (and each of its clients its own 10).
        other = get_all(srv.base_url, ["2001:db8:8:1::1"] * 12 + ["2001:db8:8:2::1"] * 3)
        assert sum(r.status_code == 200 for r in other) == 13
        # IPv4 /24 budgets are off by default: 60 addresses of one /24 each get their own quota.
        ipv4 = get_all(srv.base_url, [f"198.18.0.{i}" for i in range(60)])
        assert all(r.status_code == 200 for r in ipv4)
    finally:
        srv.stop()


def test_ipv4_block_budget_when_enabled(db: Database, services: Services, tmp_path: Path) -> None:
    srv = ServerProcess(db, services, tmp_path, RATE_LIMIT_IPV4_BLOCK_MULTIPLIER="2", **BLOCKS).start()
    try:
        same24 = get_all(srv.base_url, [f"198.18.0.{i}" for i in range(60)])
        assert 20 <= sum(r.status_code == 200 for r in same24) <= 22  # 2 x 10 for the /24
        assert get_all(srv.base_url, ["198.18.1.1"])[0].status_code == 200  # the next /24 is another block
    finally:
        srv.stop()
