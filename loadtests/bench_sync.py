"""Full Zoho sync of a large catalog: duration and peak RSS of the sync process, then an unchanged re-run.

Starts the fake Zoho (`python -m tests.fakes.zoho`, its own process, unthrottled) with --items items, a
scratch database (DATABASE_URL's server, else an embedded PostgreSQL), and runs `python -m server sync
--full` as a child process: its wall time, and its peak RSS from wait4 (the sync process alone, not the
fake). Then the same full run again (nothing changed: 0 rows, catalog version unchanged) and an
incremental one. Images: ZOHO_SYNC_IMAGES_PER_RUN per run (default 500), as in production.

    python -m loadtests.bench_sync [--items 50000] [--images 500]      (make bench-sync)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from loadtests.sync_demo import start_fake
from server.db.migrate import migrate
from server.embedded import EmbeddedPostgres


def _run_sync(env: dict[str, str], *args: str) -> tuple[float, float, str, int]:
    """(seconds, peak RSS MB, summary, exit code) of one `python -m server sync` process."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "sync", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the progress lines; the summary (with any error) is on stdout
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    return (
        seconds,
        usage.ru_maxrss / 1024,
        out.strip().splitlines()[-1] if out.strip() else "",
        proc.returncode,
    )


async def _scratch(admin_dsn: str) -> str:
    name = "bench_sync_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


async def _drop(admin_dsn: str, dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {dsn.rsplit('/', 1)[1]} WITH (FORCE)")
    finally:
        await conn.close()


async def catalog_version(dsn: str) -> int:
    """The catalog version of this database (catalog_state)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT version FROM catalog_state"))
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one line per run."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--images", type=int, default=500, help="ZOHO_SYNC_IMAGES_PER_RUN")
    ap.add_argument("--port", type=int, default=0, help="fake Zoho port (0: a free one)")
    args = ap.parse_args(argv)
    port = args.port or 18_000 + os.getpid() % 10_000
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    pg = None
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        pg = EmbeddedPostgres(work / "pg")
        pg.start()
        admin = pg.admin_url()
    fake, zoho_env = start_fake(args.items, port)
    dsn = asyncio.run(_scratch(admin))
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ZOHO_")},
            **zoho_env,
            "DATABASE_URL": dsn,
            "UPLOADS_DIR": str(work / "uploads"),
            "ZOHO_RATE_PER_MIN": "100000",  # the fake is unthrottled; Zoho's own 100/min makes this 2.5 min
            "ZOHO_MAX_CONCURRENCY": "5",
            "ZOHO_SYNC_IMAGES_PER_RUN": str(args.images),
            "LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)
        for label, run_args in (("full", ["--full"]), ("full, unchanged", ["--full"]), ("incremental", [])):
            before = asyncio.run(catalog_version(dsn))
            seconds, rss, summary, code = _run_sync(env, *run_args)
            bumped = asyncio.run(catalog_version(dsn)) - before
            calls = re.search(r"(\d+) calls", summary)
            print(
                f"{label:<16} {args.items:,} items: {seconds:6.1f} s, peak RSS {rss:5.0f} MB, "
                f"{calls.group(1) if calls else '?'} calls, catalog versions +{bumped}, exit {code}"
            )
            print(f"  {summary}")
    finally:
        fake.terminate()
        fake.wait(10)
        asyncio.run(_drop(admin, dsn))
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
