"""The process model: start, readiness, SIGTERM/SIGINT with no orphans, embedded servers, refusals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from catalog_testlib import Database, ServerProcess, Services, drop_database, make_database, stop_tree


@pytest.fixture
def fresh_db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Iterator[Database]:
    """A database for one test."""
    db = make_database(services, template_db, tmp_path)
    yield db
    drop_database(db)


def _tree(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "processes"),
    [
        (signal.SIGTERM, 1),
        (signal.SIGINT, 1),
        (signal.SIGTERM, 2),
        (signal.SIGINT, 2),
    ],
)
def test_signal_stops_everything_within_5s(
    fresh_db: Database, services: Services, tmp_path: Path, sig: int, processes: int
) -> None:
    srv = ServerProcess(fresh_db, services, tmp_path, PROCESSES=processes).start()
    assert srv.proc is not None
    tree = _tree(srv.proc.pid)
    assert len(tree) >= 2 + (processes if processes > 1 else 0)
    pids = {httpx.get(srv.base_url + "/ready").json()["pid"] for _ in range(10)}
    assert len(pids) == processes
    elapsed = srv.stop(sig)
    assert srv.proc.returncode == 0, srv.log()
    assert elapsed < 5.0, f"took {elapsed:.2f}s"
    time.sleep(0.2)
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"orphans: {alive}"
    assert srv.log().count("process stopped") == processes  # every worker ran its shutdown handler


@pytest.mark.slow
def test_embedded_default_starts_and_stops_its_own_servers() -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="catalog-test-embedded-"))  # see conftest.services
    tmp_path.chmod(0o755)
    from catalog_testlib import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        PORT=str(port),
        PROCESSES="1",
        DATA_DIR=str(tmp_path / "data"),
        UPLOADS_DIR=str(tmp_path / "data" / "uploads"),
    )
    log = tmp_path / "log.txt"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--seed-if-empty", "150"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail(log.read_text())
        doc = httpx.get(f"http://127.0.0.1:{port}/api/consumer/products").json()
        assert doc["total"] > 100
        assert any(i["has_image"] for i in doc["items"])
        assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
        assert (tmp_path / "data" / "redis" / "redis.sock").exists()
        deadline = time.monotonic() + 10  # the supervisor prints the URLs once the port accepts
        while "/docs" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "/docs" in log.read_text()
        tree = _tree(proc.pid)
        embedded = [
            p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])
        ]
        assert embedded, "embedded postgres/redis should run under DATA_DIR"
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert proc.returncode == 0
        time.sleep(0.5)
        leftover = [p for p in [*tree, *embedded] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not leftover, leftover
    finally:
        if proc.poll() is None:  # a failed assertion: stop it properly (it owns the embedded servers)
            stop_tree(proc)
        shutil.rmtree(tmp_path, ignore_errors=True)


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=tmp_path,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "99999"),
        ("PORT", "abc"),
        ("DB_POOL_MAX", "0"),
        ("PROCESSES", "0"),
        ("TRUSTED_PROXIES", "nope"),
        ("CORS_ORIGINS", "ftp://x"),
        ("PUBLIC_BASE_URL", "not a url"),
        ("DATABASE_URL", "mysql://x"),
        ("IMAGE_REFRESH_INTERVAL_S", "-1"),
        ("LOG_LEVEL", "LOUD"),
        ("READY_DETAIL_NETWORKS", "nope"),
        ("READY_CACHE_MS", "-1"),
        ("READY_DB_FAIL_AFTER_S", "1000"),
    ],
)
def test_bad_setting_fails_at_start_naming_the_variable(tmp_path: Path, name: str, value: str) -> None:
    result = _cli(["serve"], tmp_path, **{name: value})
    assert result.returncode == 2
    assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_are_masked(tmp_path: Path) -> None:
    result = _cli(
        ["settings"],
        tmp_path,
        ZOHO_CLIENT_SECRET="s3cr3t-value",
        DATABASE_URL="postgresql://app:hunter2@db.example/catalog",
        ZOHO_REFRESH_TOKEN="tok-123",
    )
    assert result.returncode == 0
    assert (
        "s3cr3t-value" not in result.stdout
        and "hunter2" not in result.stdout
        and "tok-123" not in result.stdout
    )
    assert "ZOHO_CLIENT_SECRET=***" in result.stdout and "app:***@db.example" in result.stdout


def test_pure_build_is_refused_unless_allowed(tmp_path: Path) -> None:
    result = _cli(
        ["serve"],
        tmp_path,
        CORE_EXT_NO_EXTENSIONS="1",
        ALLOW_PURE_PYTHON="false",
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
    )
    assert result.returncode == 3
    assert "ALLOW_PURE_PYTHON" in result.stderr


def test_port_in_use_is_refused(tmp_path: Path, server: ServerProcess) -> None:
    result = _cli(["serve"], tmp_path, PORT=str(server.port), DATABASE_URL="postgresql://x@127.0.0.1:1/none")
    assert result.returncode == 2 and "in use" in result.stderr


def test_database_loss_is_503_problem(fresh_db: Database, services: Services, tmp_path: Path) -> None:
    # Readiness without its cache and debounce flips at the first failed probe (tests/api/test_health.py
    # covers the defaults, which wait for a failure to last).
    srv = ServerProcess(
        fresh_db, services, tmp_path, PROCESSES=1, READY_CACHE_MS=0, READY_DB_FAIL_AFTER_S=0
    ).start()
    try:
        drop_database(fresh_db)
        resp = httpx.get(srv.base_url + "/api/consumer/products?page_size=3")
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["code"] == "service_unavailable" and body["detail_ar"]
        assert "asyncpg" not in resp.text and "Traceback" not in resp.text
        assert httpx.get(srv.base_url + "/ready").status_code == 503
        assert httpx.get(srv.base_url + "/health").status_code == 200
    finally:
        srv.stop()
