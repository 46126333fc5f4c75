"""`python -m server sync [--full]`: one run from the command line.

A progress bar on a terminal (a line per 10 pages otherwise), a one-line summary on stdout, and the exit
code: 0 succeeded, 1 failed, 3 paused (the daily call budget is spent; the next run resumes), 4 another run
holds the lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from typing import TextIO

import asyncpg

from server.metrics.trace import parse_traceparent, trace_var
from server.settings import Settings
from server.sync.engine import run_sync
from server.sync.job import Progress

EXIT_CODES = {"succeeded": 0, "failed": 1, "paused": 3, "already_running": 4}


class ProgressBar:
    """Renders Progress events on a stream: a redrawn line on a terminal, sparse lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._phase = ""
        self._events = 0

    def __call__(self, event: Progress) -> None:
        """Show one event."""
        self._events += 1
        elapsed = time.monotonic() - self.started
        c = event.counts
        if event.total:
            width = 24
            filled = width * min(event.done, event.total) // event.total
            bar = f"[{'#' * filled}{'-' * (width - filled)}] {event.done:,}/{event.total:,}"
        else:
            bar = f"{event.done:,}"
        line = (
            f"sync #{event.run_id} {event.phase:<11} {bar}  changed {c.items_changed:,}  "
            f"calls {c.calls:,}  {elapsed:6.1f} s"
        )
        if self.tty:
            end = "\n" if event.phase != self._phase and self._phase else ""
            self.stream.write(end + "\r" + line + "\x1b[K")
        elif event.phase != self._phase or self._events % 10 == 0:
            self.stream.write(line + "\n")
        self._phase = event.phase
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line."""
        if self.tty and self._phase:
            self.stream.write("\n")
            self.stream.flush()


ANNOUNCE = "sync-run"  # `--announce`: "sync-run <id>" on stdout once the run is recorded
_PR_SET_PDEATHSIG = 1


def lower_priority(nice: int) -> None:
    """Yield the CPU to the workers serving requests (ZOHO_SYNC_NICE): a run's Python work (parsing Zoho's
    pages, planning batches) is never urgent."""
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, 0, nice)


def as_service_child() -> None:
    """A run started by the service: SIGINT (a clean, recorded stop) when the worker that started it dies,
    and no line per Zoho call in the service's log (httpx logs each at INFO)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


async def sync_command(
    settings: Settings, dsn: str, *, full: bool, announce: bool = False, traceparent: str | None = None
) -> int:
    """Migrate, run one sync, print its summary; returns the exit code. `announce` (the service starting a
    run in a child process): print the run's id as soon as it is recorded, and no progress bar.
    `traceparent`: the trace of the request that started the run, sent on every Zoho call (W3C)."""
    lower_priority(settings.ZOHO_SYNC_NICE)
    if announce:
        as_service_child()
    if traceparent is not None and parse_traceparent(traceparent) is not None:
        trace_var.set(traceparent)
    import redis.asyncio as aioredis

    from server.db.migrate import migrate

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    redis = aioredis.Redis.from_url(settings.REDIS_URL.get_secret_value()) if settings.REDIS_URL else None
    # The run's own connection, the client's token and daily-count reads, and room to spare.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, command_timeout=300)
    bar = ProgressBar(sys.stderr)
    announced: list[int] = []

    def progress(event: Progress) -> None:
        if not announce:
            bar(event)
        elif not announced:
            announced.append(event.run_id)
            print(f"{ANNOUNCE} {event.run_id}", flush=True)

    try:
        result = await run_sync(settings, pool=pool, redis=redis, full=full, progress=progress)
    finally:
        bar.close()
        await pool.close()
        if redis is not None:
            await redis.aclose()
    print(result.summary(), flush=True)
    return EXIT_CODES.get(result.status, 1)
