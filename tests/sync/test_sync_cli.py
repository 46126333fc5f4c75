"""`python -m server sync [--full]` as a process: summary line, exit codes, and a run SIGKILLed mid-sweep."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from catalog_testlib import Database, Services, drop_database, make_database
from fakes.zoho import FakeZoho
from sync.sync_testlib import SyncEnv, make_env, synced
from sync.zoho_testlib import QUIET_RUN

from server.sync.runs import LOCK_KEY


@pytest.fixture
def env(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Iterator[SyncEnv]:
    db: Database = make_database(services, template_db, tmp_path)
    try:
        with FakeZoho(items=1000) as fake:
            yield make_env(db, fake)
    finally:
        drop_database(db)


def _cli_env(env: SyncEnv, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST", "ZOHO_"))}
    return {
        **base,
        **env.fake.settings_env(),
        "ZOHO_ORGANIZATION_ID": env.fake.organization_id,
        "DATABASE_URL": env.db.url,
        "UPLOADS_DIR": str(env.db.uploads),
        **QUIET_RUN,
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def _sync(env: SyncEnv, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "sync", *args],
        cwd=tmp_path,
        env=_cli_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_summary_and_exit_codes(env: SyncEnv, tmp_path: Path) -> None:
    done = _sync(env, tmp_path, "--full")
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("sync #1 full: succeeded") and "1000 seen, 1000 changed" in summary
    assert env.fake.client_secret not in done.stdout + done.stderr
    assert synced(env) == 1000

    env.fake.daily_limit = env.fake.api_calls + 1  # categories pass, the first item page gets code 45
    paused = _sync(env, tmp_path)
    assert paused.returncode == 3 and ": paused" in paused.stdout

    async def locked() -> subprocess.CompletedProcess[str]:
        other = await asyncpg.connect(env.db.url)
        try:
            await other.fetchval("SELECT pg_advisory_lock($1)", LOCK_KEY)
            return await asyncio.to_thread(_sync, env, tmp_path)
        finally:
            await other.close()

    busy = asyncio.run(locked())
    assert busy.returncode == 4 and "already running" in busy.stdout


def test_run_killed_mid_sweep_resumes(env: SyncEnv, tmp_path: Path) -> None:
    """SIGKILL in the middle of a full sweep: whole pages only; the next run marks it and resumes."""
    env.fake.latency_s = 0.15
    log = (tmp_path / "sync.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "sync", "--full"],
        cwd=tmp_path,
        env=_cli_env(env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while synced(env) < 400 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    landed = synced(env)
    assert landed % 200 == 0 and 400 <= landed < 1000
    assert env.value("SELECT status FROM sync_runs") == "running"  # nobody could record its end
    env.fake.latency_s = 0
    result = env.run()
    assert result.status == "succeeded" and result.resumed and result.kind == "full"
    assert synced(env) == 1000
    assert env.value("SELECT error FROM sync_runs WHERE id = 1").startswith("interrupted")


@pytest.mark.parametrize(("start", "nice", "expected"), [(0, 10, 10), (0, 19, 19), (12, 5, 12), (0, 0, 0)])
def test_runs_at_the_sync_nice_value(start: int, nice: int, expected: int) -> None:
    # In a process of its own: a nice value once raised cannot be lowered again without privileges.
    code = (
        "import os\n"
        f"os.setpriority(os.PRIO_PROCESS, 0, {start})\n"
        "from server.sync.cli import lower_priority\n"
        f"lower_priority({nice})\n"
        "print(os.getpriority(os.PRIO_PROCESS, 0))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(done.stdout) == expected  # raised to ZOHO_SYNC_NICE, never lowered
