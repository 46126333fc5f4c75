"""The sync engine against the fake Zoho over HTTP and a real database: incremental runs, the watermark with a
filter Zoho ignores, reconcile, kill and resume, the lock, pauses, and the sync_runs records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import fakes.zoho
import pytest
from catalog_testlib import Database, Services, drop_database, make_database
from fakes.zoho import FakeZoho
from sync.sync_testlib import SyncEnv, fake_ids, make_env, synced

from server.sync.job import Progress
from server.sync.runs import LOCK_KEY, RunResult


@pytest.fixture
def db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Iterator[Database]:
    database = make_database(services, template_db, tmp_path)
    yield database
    drop_database(database)


@pytest.fixture
def env(db: Database) -> Iterator[SyncEnv]:
    with FakeZoho(items=1000) as fake:
        yield make_env(db, fake)


def test_incremental_picks_up_exactly_the_changed_items(env: SyncEnv) -> None:
    first = env.run(full=True)
    assert first.status == "succeeded", first.error
    assert synced(env) == 1000
    ids = fake_ids(env)
    for n, item_id in enumerate(ids[:100]):
        env.fake.catalog.update_item(item_id, stock=1000 + n)
    env.fake.clear_log()
    before = env.version()
    started = time.monotonic()
    result = env.run()
    elapsed = time.monotonic() - started
    print(
        f"\nincremental run, 100 of 1,000 items changed: {elapsed * 1000:.0f} ms, {result.counts.calls} calls"
    )
    assert result.status == "succeeded" and result.kind == "incremental"
    assert result.counts.items_changed == 100
    assert result.counts.items_seen <= 101  # the changed ones, and the one at the old watermark's second
    assert env.item_calls() == 1
    assert env.version() == before + 1  # one products statement; the rates did not change
    stocks = env.fetch("SELECT stock_on_hand FROM products WHERE zoho_item_id = ANY($1)", ids[:100])
    assert sorted(r[0] for r in stocks) == list(range(1000, 1100))
    assert result.watermark_after is not None and result.watermark_after > first.watermark_after


def analyzed(env: SyncEnv) -> int:
    """How many times products was analyzed by a statement (not by autovacuum)."""
    return int(env.value("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'products'"))


def test_unchanged_rerun_writes_nothing(env: SyncEnv) -> None:
    start = analyzed(env)
    assert env.run(full=True).status == "succeeded"
    # The import wrote over 1,000 rows: the run refreshed the planner's statistics (statistics reach
    # other sessions when the run's session ends: poll).
    deadline = time.monotonic() + 10
    while analyzed(env) == start and time.monotonic() < deadline:
        time.sleep(0.05)
    assert analyzed(env) > start
    once = analyzed(env)
    before = env.version()
    feed = env.value("SELECT count(*) FROM catalog_changes")
    for full in (True, False):
        result = env.run(full=full)
        assert result.status == "succeeded"
        assert result.counts.catalog_rows() == 0
    assert env.version() == before
    assert env.value("SELECT count(*) FROM catalog_changes") == feed
    assert analyzed(env) == once  # nothing written: nothing to analyze


def test_writes_are_paced_to_their_share_of_the_run(env: SyncEnv) -> None:
    # Share 0.25: after each batch a pause three times as long as its write (the fake's 1,000 items are
    # 5 item pages and the price books' writes).
    paced = env.run(full=True, ZOHO_SYNC_WRITE_SHARE=0.25)
    assert paced.status == "succeeded" and paced.counts.items_changed > 0
    assert paced.paused_s > 0 and "writes paced" in paced.summary()
    # The pauses are 3/4 of the time spent writing and pausing, so the run lasted at least 4/3 of them.
    assert paced.seconds >= paced.paused_s * 4 / 3 * 0.95
    unpaced = env.run(full=True, ZOHO_SYNC_WRITE_SHARE=1.0)
    assert unpaced.status == "succeeded" and unpaced.paused_s == 0


def test_ignored_filter_still_stops_at_the_watermark(env: SyncEnv) -> None:
    assert env.run(full=True).status == "succeeded"
    env.fake.ignore_modified_filter = True
    changed = fake_ids(env)[500:505]
    for item_id in changed:
        env.fake.catalog.update_item(item_id, name=f"Renamed {item_id}")
    env.fake.clear_log()
    result = env.run()
    assert result.counts.items_changed == 5
    # The fake answered with the whole list (5 pages), newest first: the first page already reached the
    # watermark, so no other page was asked for.
    assert env.item_calls() == 1
    names = env.fetch("SELECT name FROM products WHERE zoho_item_id = ANY($1)", changed)
    assert {r[0] for r in names} == {f"Renamed {i}" for i in changed}


def test_item_gone_from_zoho_is_deactivated_by_full_runs_only(env: SyncEnv) -> None:
    assert env.run(full=True).status == "succeeded"
    gone = fake_ids(env)[10:13]
    for item_id in gone:
        env.fake.catalog.delete_item(item_id)
    assert env.run().counts.items_deactivated == 0
    rows = env.fetch("SELECT is_active FROM products WHERE zoho_item_id = ANY($1)", gone)
    assert [r[0] for r in rows] == [True, True, True]
    result = env.run(full=True)
    assert result.counts.items_deactivated == 3
    rows = env.fetch("SELECT is_active FROM products WHERE zoho_item_id = ANY($1)", gone)
    assert [r[0] for r in rows] == [False, False, False]  # still there, inactive


def test_invalid_records_are_counted_and_never_written(env: SyncEnv) -> None:
    ids = fake_ids(env)
    cat = env.fake.catalog
    with cat.lock:
        cat.items[ids[0]]["name"] = ""
        cat.items[ids[1]]["status"] = "archived"
        cat.items[ids[2]]["rate"] = "-3"
        cat.items[ids[3]]["last_modified_time"] = "yesterday"
        cat.items[ids[4]]["available_stock"] = "lots"
        cat.version += 1
    result = env.run(full=True)
    assert result.status == "succeeded"
    assert result.counts.items_invalid == 5
    assert synced(env) == 995
    assert env.value("SELECT count(*) FROM products WHERE zoho_item_id = ANY($1)", ids[:5]) == 0
    assert env.fetch("SELECT items_invalid FROM sync_runs WHERE id = $1", result.run_id)[0][0] == 5


def test_invalid_record_of_a_known_item_does_not_deactivate_it(env: SyncEnv) -> None:
    assert env.run(full=True).status == "succeeded"
    item_id = fake_ids(env)[7]
    env.fake.catalog.update_item(item_id, status="archived")
    result = env.run(full=True)
    assert result.counts.items_invalid == 1 and result.counts.items_deactivated == 0
    assert env.value("SELECT is_active FROM products WHERE zoho_item_id = $1", item_id) is True


def test_cancelled_mid_run_leaves_whole_pages_and_resumes(env: SyncEnv) -> None:
    """A run cancelled after its second page: whole pages only, a cursor; the next run resumes there."""

    async def cancelled_run() -> RunResult | None:
        task: asyncio.Task[RunResult] | None = None

        def progress(event: Progress) -> None:
            if event.phase == "items" and event.done >= 400 and task is not None:
                task.cancel()

        task = asyncio.ensure_future(env.arun(env.settings, full=True, progress=progress))
        try:
            return await task
        except asyncio.CancelledError:
            return None

    assert asyncio.run(cancelled_run()) is None
    landed = synced(env)
    assert landed % 200 == 0 and 400 <= landed < 1000  # whole pages, never a part of one
    run = env.fetch("SELECT status, error FROM sync_runs ORDER BY id DESC LIMIT 1")[0]
    assert tuple(run) == ("failed", "cancelled")
    cursor = env.value("SELECT sweep_cursor FROM sync_state")
    assert cursor is not None and env.value("SELECT items_watermark FROM sync_state") is None
    env.fake.clear_log()
    result = env.run()  # an incremental start resumes the unfinished full sweep
    assert result.status == "succeeded" and result.kind == "full" and result.resumed
    assert synced(env) == 1000
    pages_left = (1000 - landed) // 200
    assert env.item_calls() == pages_left + 1  # one page of overlap
    assert env.value("SELECT sweep_cursor FROM sync_state") is None
    assert env.value("SELECT items_watermark FROM sync_state") is not None


def test_failure_mid_sweep_keeps_applied_pages_and_resumes(
    env: SyncEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert env.run(full=True).status == "succeeded"
    for item_id in fake_ids(env)[:450]:
        env.fake.catalog.update_item(item_id, unit="box")
    # Categories, item pages 1 and 2 answer; page 3 fails (no retries in these settings).
    original = fakes.zoho.route

    def failing_route(*args: Any) -> tuple[int, Any, str]:
        path, query = args[4], args[5]
        if path.endswith("/items") and query.get("page") == "3":
            return 500, {"code": 500, "message": "Internal error."}, ""
        return original(*args)  # type: ignore[no-any-return]

    monkeypatch.setattr(fakes.zoho, "route", failing_route)
    failed = env.run()
    assert failed.status == "failed" and "500" in (failed.error or "")
    assert failed.counts.items_changed == 400  # pages 1 and 2, whole
    boxes = "SELECT count(*) FROM products WHERE unit = 'box' AND zoho_item_id = ANY($1)"
    assert env.value(boxes, fake_ids(env)) == 400
    monkeypatch.setattr(fakes.zoho, "route", original)
    resumed = env.run()
    assert resumed.status == "succeeded" and resumed.resumed
    assert env.value(boxes, fake_ids(env)) == 450


def test_two_concurrent_runs_one_is_already_running(env: SyncEnv) -> None:
    env.fake.latency_s = 0.02

    async def both() -> list[RunResult]:
        return list(
            await asyncio.gather(env.arun(env.settings, full=True), env.arun(env.settings, full=True))
        )

    statuses = sorted(r.status for r in asyncio.run(both()))
    assert statuses == ["already_running", "succeeded"]
    assert env.value("SELECT count(*) FROM sync_runs") == 1


def test_lock_held_elsewhere_means_already_running(env: SyncEnv) -> None:
    async def go() -> RunResult:
        other = await asyncpg.connect(env.db.url)  # another process's session
        try:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
            return await env.arun(env.settings, full=False)
        finally:
            await other.close()

    result = asyncio.run(go())
    assert result.status == "already_running" and result.run_id is None
    assert "already running" in result.summary()
    assert env.run().status == "succeeded"  # the lock went with that session


def test_paused_on_zoho_daily_limit_resumes_next_day(env: SyncEnv) -> None:
    env.fake.daily_limit = 3  # categories, item pages 1 and 2; page 3 gets code 45
    paused = env.run(full=True)
    assert paused.status == "paused"
    assert "45" in (paused.error or "")
    assert synced(env) == 400
    row = env.fetch("SELECT status, finished_at, calls FROM sync_runs WHERE id = $1", paused.run_id)[0]
    assert row["status"] == "paused" and row["finished_at"] is not None and row["calls"] == 4
    # Until the day ends the budget refuses calls: the next run pauses at once, writing nothing.
    assert env.run().status == "paused"
    # A new day (Zoho's counter and ours reset).
    env.fake.daily_limit = None
    asyncio.run(env.db.execute("DELETE FROM zoho_api_calls"))
    resumed = env.run()
    assert resumed.status == "succeeded" and resumed.resumed and resumed.kind == "full"
    assert synced(env) == 1000


def test_sync_runs_records_each_run(env: SyncEnv) -> None:
    events: list[Progress] = []
    first = env.run(full=True, progress=events.append)
    # The first event already names the run (what POST /api/admin/sync needs for its Location).
    assert events[0].phase == "start" and {e.run_id for e in events} == {first.run_id}
    phases = [e.phase for e in events]
    assert phases.index("categories") < phases.index("items") < phases.index("price books")
    second = env.run()
    rows = env.fetch("SELECT * FROM sync_runs ORDER BY id")
    assert [r["id"] for r in rows] == [first.run_id, second.run_id]
    one, two = rows
    assert (one["kind"], one["status"], two["kind"], two["status"]) == (
        "full",
        "succeeded",
        "incremental",
        "succeeded",
    )
    assert one["items_seen"] == 1000 and one["items_changed"] == 1000
    assert one["categories_changed"] >= 6 and one["prices_changed"] == 3000  # the rate and two books
    assert one["calls"] == first.counts.calls > 5
    assert one["watermark_before"] is None and one["watermark_after"] == two["watermark_before"]
    assert one["finished_at"] >= one["started_at"]
    assert two["items_changed"] == 0 and two["error"] is None


def test_killed_run_is_marked_interrupted_by_the_next(env: SyncEnv) -> None:
    asyncio.run(env.db.execute("INSERT INTO sync_runs (kind) VALUES ('full')"))  # a run whose process died
    result = env.run()
    rows = env.fetch("SELECT status, error FROM sync_runs ORDER BY id")
    assert rows[0]["status"] == "failed" and "interrupted" in rows[0]["error"]
    assert result.status == "succeeded"
