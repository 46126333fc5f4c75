"""The stacks bench_mix.py measures: our service (embedded, or on the seed stack's PostgreSQL and Redis) and
the seed's own FastAPI stack, each started for one run and pinned: the server on the first core, everything
else (wrk, the writer, PostgreSQL, Redis) on the others."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis

from loadtests.mix_urls import CATEGORIES
from loadtests.service import free_port


def split_cores() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, load cores): the first allowed core for the server, the others for everything else;
    (None, None) when there is only one core or no affinity API (no pinning)."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return {cores[0]}, set(cores[1:])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                tree.setdefault(ppid, []).append(int(entry))
    return tree


def pin_tree(root: int, cores: set[int]) -> int:
    """Move every thread of `root` and of its Python descendants to `cores` (PostgreSQL and Redis children
    keep the load cores they were started on); returns the number of processes moved."""
    tree, todo, moved = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        with contextlib.suppress(OSError):
            if not Path(f"/proc/{pid}/comm").read_text().startswith(("python", "uvicorn")):
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cores)
            moved += 1
    return moved


class Server:
    """One server process group started for one run (inheriting the load cores), then moved to its core."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, ready_path: str, log: Path):
        self.name, self.cmd, self.env, self.cwd, self.log = name, cmd, env, cwd, log
        self.port = int(env["PORT"]) if "PORT" in env else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, server_cores: set[int] | None, timeout: float = 300) -> Server:
        """Start and wait until `ready_path` answers 200 (a first start may seed the catalog)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [a.replace("{port}", str(self.port)) for a in self.cmd],
                env={k: v.replace("{port}", str(self.port)) for k, v in self.env.items()}
                | {"PORT": str(self.port)},
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench_mix: {self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"bench_mix: {self.name} not ready within {timeout:.0f}s; see {self.log}")
            time.sleep(0.2)
        if server_cores:
            pin_tree(self.proc.pid, server_cores)
        return self

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL what is left after 20 s."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


@dataclass
class Side:
    """How to start one stack for a run, its database and its Redis databases to empty before a run."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    ready_path: str
    dsn: str
    redis_flush: tuple[str, ...] = ()

    def server(self, cache: bool, log: Path) -> Server:
        """A Server for one run with CACHE_ENABLED=`cache`."""
        return Server(
            self.name,
            self.cmd,
            {**self.env, "CACHE_ENABLED": str(cache).lower()},
            self.cwd,
            self.ready_path,
            log,
        )


# Rate limits stay on, as in production, with a policy wrk (one address) never reaches (as side_by_side.sh).
_OUT_OF_REACH = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_CATALOG": "100000000/60s;burst=1000000"}


def _base_env() -> dict[str, str]:
    dropped = ("DATABASE_URL", "REDIS_URL", "DATA_DIR", "UPLOADS_DIR", "PORT", "HOST", "PUBLIC_BASE_URL")
    return {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("CACHE_")}


def ours_embedded(data_dir: Path, products: int, processes: int) -> Side:
    """Our service on its embedded PostgreSQL/Redis in `data_dir` (seeded on the first start, reused)."""
    env = _base_env() | _OUT_OF_REACH
    env.update(DATA_DIR=str(data_dir), UPLOADS_DIR=str(data_dir / "uploads"), HOST="127.0.0.1")
    env.update(PROCESSES=str(processes), LOG_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "server", "serve", "--seed-if-empty", str(products)]
    data_dir.mkdir(parents=True, exist_ok=True)
    # Not from the repo root: `server` must be the installed package (compiled core), as LocalService does.
    return Side(
        "ours", cmd, env, data_dir, "/ready", f"postgresql://postgres@/catalog?host={data_dir / 'pg'}"
    )


def ours_on_peer(scratch: Path, products: int, processes: int, redis_db: int) -> Side:
    """Our service on the peer's PostgreSQL (database `proj`) and Redis (db `redis_db`): side_by_side.sh."""
    dsn = f"postgresql://postgres@/proj?host={scratch}&port=55433"
    env = _base_env() | _OUT_OF_REACH
    env.update(DATABASE_URL=dsn, REDIS_URL=f"redis://127.0.0.1:56379/{redis_db}", HOST="127.0.0.1")
    env.update(UPLOADS_DIR=str(scratch / "proj-uploads"), PROCESSES=str(processes), LOG_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "server", "serve", "--seed-if-empty", str(products)]
    return Side("ours", cmd, env, scratch, "/ready", dsn, (f"redis://127.0.0.1:56379/{redis_db}",))


def peer(peer_dir: Path, scratch: Path) -> Side:
    """The seed's stack (uvicorn, one worker) from `peer_dir`, its venv and data under `scratch`."""
    uvicorn = scratch / "venv" / "bin" / "uvicorn"
    if not uvicorn.exists() or not (peer_dir / "app.py").exists():
        raise SystemExit(f"bench_mix: no peer: run {peer_dir}/measure.sh up first (PEER_DIR, SCRATCH)")
    dsn = f"postgresql://postgres@/peer?host={scratch}&port=55433"
    env = _base_env()
    env.update(
        DATABASE_URL=dsn, UPLOADS_DIR=str(scratch / "uploads"), PUBLIC_BASE_URL="http://127.0.0.1:{port}"
    )
    cmd = [str(uvicorn), "app:app", "--host", "127.0.0.1", "--port", "{port}", "--loop", "uvloop"]
    cmd += ["--http", "httptools", "--workers", "1", "--no-access-log", "--log-level", "warning"]
    # Its page cache (db 0) and limiter counters (db 1), emptied so every run starts cold like ours.
    flush = ("redis://127.0.0.1:56379/0", "redis://127.0.0.1:56379/1")
    return Side("seed", cmd, env, peer_dir, CATEGORIES, dsn, flush)


async def ensure_database(scratch: Path, name: str) -> None:
    """Create database `name` on the seed stack's PostgreSQL unless it exists (as side_by_side.sh)."""
    conn = await asyncpg.connect(f"postgresql://postgres@/postgres?host={scratch}&port=55433")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def flush_redis(urls: Sequence[str]) -> None:
    """Empty each Redis database (FLUSHDB) named by `urls`."""
    for url in urls:
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()
