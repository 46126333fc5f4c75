"""/health and /ready over the real server: cached probes, details for trusted networks only, debounced
database failures, degraded states, failing background tasks."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, drop_database, make_database, run
from lifecycle_testlib import TableLock

PRODUCTS = "/api/consumer/products"


@pytest.fixture
def fresh_db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Iterator[Database]:
    """A database for one test."""
    db = make_database(services, template_db, tmp_path)
    yield db
    drop_database(db)


def _queries(resp: httpx.Response) -> int:
    found = re.search(r'desc="(\d+) queries"', resp.headers["server-timing"])
    assert found, resp.headers["server-timing"]
    return int(found.group(1))


def test_ready_probes_are_cached(server: ServerProcess) -> None:
    """300 calls from one client run about one probe per READY_CACHE_MS (1 s) per process, not 300."""
    with server.client() as client:
        client.get("/ready")
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.get("/ready"), range(300)))
        elapsed = time.monotonic() - started
    assert [r.status_code for r in answers] == [200] * 300
    queries = sum(_queries(r) for r in answers)  # the database queries these answers ran (Server-Timing)
    processes = 2  # the module server's PROCESSES; each process has its own probe cache
    print(f"\n300 /ready calls in {elapsed:.2f}s ran {queries} database queries")
    assert queries <= processes * (int(elapsed) + 2)


def test_ready_details_only_for_trusted_networks(
    fresh_db: Database, services: Services, tmp_path: Path
) -> None:
    srv = ServerProcess(fresh_db, services, tmp_path, PROCESSES=1, TRUSTED_PROXIES="127.0.0.1/32").start()
    try:
        with srv.client() as client:
            local = client.get("/ready").json()  # a direct call from loopback: inside the default networks
            assert local["status"] == "ready" and "pid" in local and "database" in local
            via_proxy = client.get("/ready", headers={"X-Forwarded-For": "203.0.113.9"})
            assert via_proxy.status_code == 200 and via_proxy.json() == {"status": "ready"}
            inside = client.get("/ready", headers={"X-Forwarded-For": "127.0.0.1"}).json()
            assert "pid" in inside  # the proxy forwards a request that started inside the network
            forged = client.get("/ready", headers={"X-Forwarded-For": "not-an-ip"})
            assert forged.json() == {"status": "ready"}
    finally:
        srv.stop()
    srv = ServerProcess(fresh_db, services, tmp_path, PROCESSES=1, READY_DETAIL_NETWORKS="10.0.0.0/8").start()
    try:
        resp = httpx.get(srv.base_url + "/ready")
        assert resp.status_code == 200 and resp.json() == {"status": "ready"}
    finally:
        srv.stop()


def test_a_slow_database_degrades_before_it_makes_the_process_unavailable(
    fresh_db: Database, services: Services, tmp_path: Path
) -> None:
    """Two requests blocked on a table lock hold the whole pool: the probe cannot get a connection within
    its budget. One failed probe is 'degraded' (200); a failure lasting READY_DB_FAIL_AFTER_S is 503; the
    process is ready again as soon as the database answers."""
    srv = ServerProcess(
        fresh_db,
        services,
        tmp_path,
        PROCESSES=1,
        DB_POOL_MIN=1,
        DB_POOL_MAX=2,
        CACHE_ENABLED="false",
        ROW_STORE_MB="0",
        READY_CACHE_MS=0,
        READY_DB_TIMEOUT_MS=200,
        READY_DB_FAIL_AFTER_S=1.5,
    ).start()
    lock = TableLock(fresh_db)
    try:
        with ThreadPoolExecutor(2) as pool:
            blocked = [
                pool.submit(httpx.get, f"{srv.base_url}{PRODUCTS}?page_size={n}", timeout=15) for n in (2, 3)
            ]
            lock.wait_for_waiters(2)
            first = httpx.get(srv.base_url + "/ready")
            assert first.status_code == 200, first.text
            doc = first.json()
            assert doc["status"] == "degraded" and "database probe failed" in doc["reasons"]
            assert doc["database"]["error"] == "TimeoutError"
            deadline = time.monotonic() + 10
            while (resp := httpx.get(srv.base_url + "/ready")).status_code != 503:
                assert time.monotonic() < deadline, resp.text
                time.sleep(0.1)
            assert resp.json()["status"] == "unavailable"
            assert httpx.get(srv.base_url + "/health").status_code == 200  # liveness: no I/O
            lock.release()
            assert [f.result().status_code for f in blocked] == [200, 200]
        back = httpx.get(srv.base_url + "/ready")
        assert back.status_code == 200 and back.json()["status"] == "ready", back.text
    finally:
        lock.release()
        srv.stop()


def test_a_failing_background_task_is_logged_restarted_and_reported(
    fresh_db: Database, services: Services, tmp_path: Path
) -> None:
    """The LISTEN watchdog meets an error it does not expect (the catalog_state row is gone: the state
    query returns nothing). It must log the traceback, show up in /ready as failing (degraded, not 503),
    keep retrying, and recover once the row is back."""
    srv = ServerProcess(fresh_db, services, tmp_path, PROCESSES=1).start()
    try:
        epoch, version = run(fresh_db.fetch("SELECT epoch, version FROM catalog_state"))[0]
        reconnects = httpx.get(srv.base_url + "/ready").json()["catalog"]["reconnects"]
        run(fresh_db.execute("DELETE FROM catalog_state"))
        run(
            fresh_db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = 'catalog-listen'",
                fresh_db.name,
            )
        )
        deadline = time.monotonic() + 10
        while True:
            resp = httpx.get(srv.base_url + "/ready")
            task = resp.json()["tasks"]["listener-watchdog"]
            if task["failures"] >= 2:
                break
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.1)
        doc = resp.json()
        assert resp.status_code == 200 and doc["status"] == "degraded", doc
        assert task["failing"] and task["last_error"] == "AssertionError"
        assert "background task listener-watchdog failing" in doc["reasons"]
        assert "Traceback" in srv.log() and "background task listener-watchdog failed" in srv.log()
        run(fresh_db.execute("INSERT INTO catalog_state (epoch, version) VALUES ($1, $2)", epoch, version))
        deadline = time.monotonic() + 15
        while (doc := httpx.get(srv.base_url + "/ready").json())["status"] != "ready":
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        assert doc["catalog"]["listening"] and doc["catalog"]["reconnects"] > reconnects
        assert doc["tasks"]["listener-watchdog"]["failing"] is False
    finally:
        srv.stop()
