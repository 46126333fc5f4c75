"""The ordering Locust scenario against a rate-limited server: shoppers sign up, sign in, browse and order
with Idempotency-Keys, retrying on purpose; every retry is a replay of the same order and the gate passes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalog_testlib import Database, ServerProcess, Services, run

ROOT = Path(__file__).resolve().parents[2]
needs_locust = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="needs the `load` extra (locust)"
)


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Default limits, this machine trusted as a proxy (as `make load` starts the service)."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("srv"),
        RATE_LIMIT_ENABLED="true",
        TRUSTED_PROXIES="127.0.0.1/32,::1/128",
    ).start()
    yield proc
    proc.stop()


@pytest.mark.slow
@needs_locust
def test_ordering_users_place_orders_and_retries_replay(
    server: ServerProcess, database: Database, tmp_path: Path
) -> None:
    run(database.execute("UPDATE products SET stock_on_hand = 1000"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLO_", "LOCUST_", "PYTEST"))}
    env = {
        **clean,
        "SLO_MIN_SAMPLES": "100000",
        "SLO_P95_MS": "2000",
        "SLO_P99_MS": "4000",
        "SLO_MIN_RPS": "0",
    }
    only_orders = [
        "--shopper-weight",
        "0",
        "--returning-weight",
        "0",
        "--herd-weight",
        "0",
        "--greedy-users",
        "0",
    ]
    target = ["--url", server.base_url, "--out", str(tmp_path)]
    load = [*target, "--users", "4", "--spawn-rate", "4", "--duration", "10s"]
    locust = ["--orders-weight", "1", *only_orders, "--mail-dir", str(server.workdir / "data" / "mail")]
    res = subprocess.run(
        [sys.executable, "-m", "loadtests.run_load", *load, "--", *locust],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = res.stdout + res.stderr
    assert res.returncode == 0, output[-6000:]
    assert "SLO gate passed" in res.stdout
    assert "/api/consumer/orders" in res.stdout and "/api/auth/login" in res.stdout
    assert "429 for a user within its budget" not in output
    rows = run(database.fetch("SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM orders"))
    assert rows[0]["n"] > 0 and rows[0]["users"] >= 2, output[-3000:]
    # Every key made at most one order (retries and double sends replayed or refused, never duplicated).
    keys = run(
        database.fetch("SELECT count(*) AS n, count(DISTINCT order_id) AS orders FROM idempotency_keys")
    )
    assert keys[0]["n"] == keys[0]["orders"] == rows[0]["n"]
