"""Load runs against a rate-limited target: each Locust user is its own client (X-Forwarded-For from the
test ranges), greedy users' 429s are expected and checked, shoppers never see one."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from catalog_testlib import Database, ServerProcess, Services

ROOT = Path(__file__).resolve().parents[2]
HAS_LOCUST = importlib.util.find_spec("locust") is not None
needs_locust = pytest.mark.skipif(not HAS_LOCUST, reason="needs the `load` extra (locust)")


def load_addresses() -> ModuleType:
    """loadtests/addresses.py by path (`loadtests` here is this test folder's name too)."""
    spec = importlib.util.spec_from_file_location("load_addresses", ROOT / "loadtests" / "addresses.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_user_has_its_own_stable_address_from_the_test_ranges() -> None:
    client_address = load_addresses().client_address
    benchmarking, documentation = ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")
    addresses = [client_address(n, worker, 0.25) for worker in (0, 1) for n in range(1000)]
    assert len(set(addresses)) == len(addresses)  # distinct across users and workers
    assert addresses == [client_address(n, worker, 0.25) for worker in (0, 1) for n in range(1000)]
    parsed = [ipaddress.ip_address(a) for a in addresses]
    v6 = [a for a in parsed if a.version == 6]
    assert all(a in documentation for a in v6)
    assert all(a in benchmarking for a in parsed if a.version == 4)
    assert len(v6) == 500  # a quarter of each worker's users
    assert len({int(a) >> 80 for a in v6}) == len(v6)  # each IPv6 user in its own /48
    v4_24s = {int(a) >> 8 for a in parsed if a.version == 4}
    assert len(v4_24s) == 512  # IPv4 users spread over every /24 of the range first


@pytest.fixture(scope="module")
def limited_server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The server with default limits, trusting this machine as a proxy (as `make load` starts it)."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("srv"),
        RATE_LIMIT_ENABLED="true",
        TRUSTED_PROXIES="127.0.0.1/32,::1/128",
    ).start()
    yield proc
    proc.stop()


def run_load(server: ServerProcess, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m loadtests.run_load` against the server, lenient latency objectives (this is about
    correctness: a short run on a shared machine is mostly cold pages)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLO_", "LOCUST_", "PYTEST"))}
    env = {
        **clean,
        "SLO_MIN_SAMPLES": "100000",
        "SLO_P95_MS": "1000",
        "SLO_P99_MS": "2000",
        "SLO_MIN_RPS": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "loadtests.run_load", "--url", server.base_url, "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.slow
@needs_locust
def test_default_limits_greedy_users_refused_shoppers_never(
    limited_server: ServerProcess, tmp_path: Path
) -> None:
    common = ("--users", "12", "--spawn-rate", "12", "--duration", "8s")
    res = run_load(
        limited_server, tmp_path / "distinct", *common, "--", "--greedy-users", "2", "--greedy-rate", "40"
    )
    output = res.stdout + res.stderr
    assert res.returncode == 0, output
    assert "SLO gate passed" in res.stdout
    assert "/api/consumer/products (over quota)" in res.stdout
    assert "greedy 429 (expected, checked): " in output  # the limiter was exercised, every 429 complete
    assert "429 for a user within its budget" not in output
    # One shared address (no X-Forwarded-For): the same shoppers exceed one client's quota and fail the gate.
    shared = run_load(limited_server, tmp_path / "shared", *common, "--", "--no-forwarded-for")
    assert shared.returncode == 1, shared.stdout + shared.stderr
    assert "429 for a user within its budget (failure)" in shared.stdout + shared.stderr
