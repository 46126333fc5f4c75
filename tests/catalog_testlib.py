"""Shared test helpers: real servers, per-test databases, the service as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

SEED_PRODUCTS = 300
TEMPLATE = "catalog_tpl_" + uuid.uuid4().hex[:8]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Services:
    """Connection URLs of the PostgreSQL and Redis servers the suite uses."""

    def __init__(self, admin_url: str, redis_url: str) -> None:
        self.admin_url = admin_url
        self.redis_url = redis_url

    def db_url(self, name: str) -> str:
        """URL of database `name` on the same server."""
        base, _, query = self.admin_url.partition("?")
        prefix = base.rsplit("/", 1)[0]
        return f"{prefix}/{name}" + (f"?{query}" if query else "")


def run(coro: Any) -> Any:
    """Run a coroutine to completion from sync test code."""
    return asyncio.run(coro)


async def admin_sql(services: Services, *statements: str) -> None:
    conn = await asyncpg.connect(services.admin_url)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


class Database:
    """A test's own database, copied from the template, with its own uploads folder."""

    def __init__(self, services: Services, name: str, uploads: Path) -> None:
        self.services, self.name, self.uploads = services, name, uploads
        self.url = services.db_url(name)

    async def execute(self, sql: str, *args: Any) -> str:
        """Run one statement on a fresh connection (committed on return)."""
        conn = await asyncpg.connect(self.url)
        try:
            return str(await conn.execute(sql, *args))
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of one query on a fresh connection."""
        conn = await asyncpg.connect(self.url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()


def make_database(services: Services, template: tuple[str, Path], folder: Path) -> Database:
    """Copy the template into a new database (with a new epoch) and copy its uploads."""
    name = "catalog_t_" + uuid.uuid4().hex[:10]
    uploads = folder / "uploads"
    shutil.copytree(template[1], uploads, symlinks=True)
    run(admin_sql(services, f"CREATE DATABASE {name} TEMPLATE {template[0]}"))
    db = Database(services, name, uploads)
    run(db.execute("UPDATE catalog_state SET epoch = gen_random_uuid()"))
    return db


def drop_database(db: Database) -> None:
    """Remove a test database."""
    run(admin_sql(db.services, f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)"))


class ServerProcess:
    """`python -m server serve` as a subprocess, driven over HTTP."""

    def __init__(self, db: Database, services: Services, workdir: Path, **env: Any) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST"))},
            "DATABASE_URL": db.url,
            "REDIS_URL": services.redis_url,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "PROCESSES": "2",
            "UPLOADS_DIR": str(db.uploads),
            "DATA_DIR": str(workdir / "data"),
            "IMAGE_REFRESH_INTERVAL_S": "0.2",
            "SERVER_TIMING": "true",
            # Functional tests send far more than a shopper's quota; tests/api/test_ratelimit.py turns it on.
            "RATE_LIMIT_ENABLED": "false",
            # Likewise the hashing rate cap (sign-in tests hash far faster than 8 a second);
            # tests/api/test_auth_limits.py sets one.
            "AUTH_HASH_MAX_PER_S": "0",
            # Exact-count tests must not flip to the local fallback because a loaded CI machine delayed a
            # Redis answer past the production timeouts (the stall cost is `make redis-stall`'s job).
            "RATE_LIMIT_REDIS_TIMEOUT_MS": "1000",
            "CACHE_REDIS_TIMEOUT_MS": "1000",
            "REDIS_KEY_PREFIX": f"t{db.name[-10:]}:",
            "LOG_LEVEL": "INFO",
            **{k: str(v) for k, v in env.items()},
        }
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> ServerProcess:
        """Start and wait until /ready is 200 with every worker serving."""

        def ready() -> bool:
            resp = httpx.get(self.base_url + "/ready", timeout=1)
            # Ready, and every worker serving (one answering is not all of them yet).
            procs = resp.json().get("processes") if resp.status_code == 200 else None
            return resp.status_code == 200 and (procs is None or procs["live"] >= procs["expected"])

        self.proc = launch([sys.executable, "-m", "server", "serve"], self.workdir, self.env, self.log_path)
        wait_ready(self.proc, ready, timeout, "server", self.log, self.stop)
        return self

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> float:
        """Signal the server; return seconds until it exited."""
        assert self.proc is not None
        started = time.monotonic()
        stop_tree(self.proc, sig, timeout)
        return time.monotonic() - started

    def client(self) -> httpx.Client:
        """An HTTP client bound to this server."""
        return httpx.Client(base_url=self.base_url, timeout=10)


def launch(argv: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a test subprocess with stdout and stderr appended to `log_path`."""
    with log_path.open("ab") as out:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    log: Callable[[], str],
    stop: Callable[[], object],
) -> None:
    """Poll `ready()` (HTTP errors count as not yet) until True; on exit or timeout stop and raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}:\n{log()}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop()
    raise RuntimeError(f"{what} not ready in {timeout}s:\n{log()}")


def stop_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Signal a server and wait; if it hangs, SIGKILL it and everything below it (no orphans)."""
    if proc.poll() is not None:
        return
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
        proc.kill()
        proc.wait()


def timing(resp: httpx.Response) -> tuple[int, int]:
    """(queries run, pid) from the Server-Timing header the suite enables."""
    header = resp.headers["server-timing"]
    queries = re.search(r'desc="(\d+) queries"', header)
    pid = re.search(r'proc;desc="(\d+)"', header)
    assert queries and pid, header
    return int(queries.group(1)), int(pid.group(1))
