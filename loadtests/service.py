"""A throw-away instance of the service for load runs: embedded PostgreSQL/Redis in a temp DATA_DIR, a free
port, a seeded catalog; stopped (and its folder removed) on exit. Rate limits are off unless the caller's
env turns them on (Locust runs do, with LOAD_ENV; the wrk benchmarks load from one address and do not)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

# Never inherited from the caller's shell: a load run must not touch a real database by accident.
_DROPPED = ("DATABASE_URL", "REDIS_URL", "DATA_DIR", "UPLOADS_DIR", "PORT", "HOST", "PUBLIC_BASE_URL")


# The environment of a service started for Locust: default rate limits on, and the load generator (this
# machine) trusted as a proxy, so each simulated user's X-Forwarded-For address is its own client.
LOAD_ENV = {"RATE_LIMIT_ENABLED": "true", "TRUSTED_PROXIES": "127.0.0.1/32,::1/128"}


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url`/ready until 200; raise RuntimeError on timeout or when `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"service exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout:.0f}s")


class LocalService:
    """`python -m server serve --seed-if-empty N` on the embedded default, as a context manager."""

    def __init__(
        self,
        products: int = 10_000,
        processes: int = 2,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.products, self.processes = products, processes
        self.extra_env = dict(env or {})
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> LocalService:
        """Start and wait for /ready (the first start seeds the catalog: a few seconds per 10k products)."""
        self.data_dir = Path(tempfile.mkdtemp(prefix="catalog-load-"))
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
        env.update(
            DATA_DIR=str(self.data_dir),
            UPLOADS_DIR=str(self.data_dir / "uploads"),
            HOST="127.0.0.1",
            PORT=str(self.port),
            PROCESSES=str(self.processes),
            RATE_LIMIT_ENABLED="false",
            LOG_LEVEL="INFO",  # to a file: start, stop and slow requests, for the post-mortem
        )
        env.update(self.extra_env)
        log = self.log_path or self.data_dir / "server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(
            f"service: starting on {self.url} ({self.processes} processes, {self.products} products"
            + (f", {' '.join(f'{k}={v}' for k, v in self.extra_env.items())}" if self.extra_env else "")
            + f"), log {log}",
            file=sys.stderr,
            flush=True,
        )
        with log.open("ab") as out:
            # Own session: Ctrl-C in the terminal reaches us, and we stop the service in order.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--seed-if-empty", str(self.products)],
                env=env,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_ready(self.url, timeout, self.proc)
        except BaseException:
            self.stop()
            raise RuntimeError(f"service did not start; see {log}") from None
        return self

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (the service stops its processes and embedded servers), SIGKILL the group if stuck."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def parse_env(pairs: list[str]) -> dict[str, str]:
    """['K=V', ...] -> {'K': 'V'}; SystemExit naming a malformed pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out
