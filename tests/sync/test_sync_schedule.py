"""The service's own sync schedule, over HTTP against real servers and the fake Zoho: a full run first (none
was ever made), then an incremental one every ZOHO_SYNC_INTERVAL_S, one slot at a time across two instances,
never overlapping a manual run; visible in /ready without secrets; off (and 503 on POST) without
credentials."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from admin_testlib import bearer, create_key
from catalog_testlib import Database, ServerProcess, Services
from fakes.zoho import FakeZoho
from sync.sync_api_testlib import SYNC, all_runs, check_problem, sync_server, wait_run

from server.sync.schedule import REFRESH_S

INTERVAL_S = 2.0  # a run takes about a second (its own process starts)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeZoho]:
    with FakeZoho(items=300) as fake:
        yield fake


@pytest.fixture(scope="module")
def instances(
    database: Database, services: Services, fake: FakeZoho, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    """Two instances (two processes each) of the service on one database, both scheduling."""
    env = {"ZOHO_SYNC_INTERVAL_S": str(INTERVAL_S), "ZOHO_SYNC_FULL_AT": "00:00"}
    first = sync_server(database, services, fake, tmp_path_factory.mktemp("a"), **env)
    try:
        second = sync_server(database, services, fake, tmp_path_factory.mktemp("b"), new_org=False, **env)
    except BaseException:
        first.stop()
        raise
    yield [first, second]
    second.stop()
    first.stop()


@pytest.fixture(scope="module")
def key(database: Database) -> dict[str, str]:
    return bearer(create_key(database, "sync operator", "sync:run"))


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _runs_oldest_first(api: httpx.Client, key: dict[str, str]) -> list[dict[str, Any]]:
    return list(reversed(all_runs(api, key)))


def _wait_for(check: Any, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def _no_overlap(runs: list[dict[str, Any]]) -> None:
    for before, after in itertools.pairwise(runs):
        assert before["finished_at"] is not None, before
        assert _at(after["started_at"]) >= _at(before["finished_at"]), (before, after)


def test_schedule_runs_full_first_then_incremental_slots(
    instances: list[ServerProcess], key: dict[str, str]
) -> None:
    with instances[0].client() as api:
        assert _wait_for(lambda: len(_runs_oldest_first(api, key)) >= 5, 30)
        time.sleep(0.5)
        runs = [r for r in _runs_oldest_first(api, key) if r["status"] != "running"]
    assert [r["kind"] for r in runs[:2]] == ["full", "incremental"], runs
    assert all(r["kind"] == "incremental" for r in runs[1:])  # the day's full slot was taken once
    assert all(r["status"] == "succeeded" for r in runs), runs
    _no_overlap(runs)
    # One slot per interval across both instances. A run's start follows its claim by the time its
    # connections take (varies on a busy machine), so starts are only about an interval apart; without the
    # claim, the other instance would start its run right after each one ends (a few milliseconds).
    starts = [_at(r["started_at"]) for r in runs]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= INTERVAL_S * 0.5, gaps
    assert len(starts) - 1 <= (starts[-1] - starts[0]).total_seconds() / INTERVAL_S + 1, gaps
    assert runs[1]["items_changed"] == 0  # the full run took everything; nothing changed since


def test_ready_shows_the_schedule_without_secrets(
    instances: list[ServerProcess], key: dict[str, str], fake: FakeZoho
) -> None:
    for proc in instances:
        with proc.client() as api:
            for _ in range(4):  # either process of the instance
                # A process that does not claim slots reads the plan every few seconds (REFRESH_S).
                end = time.monotonic() + REFRESH_S + 2
                while (resp := api.get("/ready")).json()["sync"].get("last_run") is None:
                    assert time.monotonic() < end, resp.text
                    time.sleep(0.1)
                assert resp.status_code == 200
                sync = resp.json()["sync"]
                assert 0 <= sync["checked_s_ago"] <= REFRESH_S + 1
                assert sync["configured"] is True and "missing" not in sync
                sched = sync["schedule"]
                assert (
                    sched["enabled"] and sched["interval_s"] == INTERVAL_S and sched["full_at"] == "00:00 UTC"
                )
                assert sched["next_incremental_at"] is not None
                next_full = _at(sched["next_full_at"])
                assert next_full.hour == 0 and next_full.minute == 0
                assert (next_full - _at(sched["next_incremental_at"])).total_seconds() > 0
                assert sync["last_run"]["status"] in ("running", "succeeded")
                for secret in (fake.client_secret, fake.refresh_token):
                    assert secret not in resp.text


def test_a_manual_run_and_the_schedule_never_overlap(
    instances: list[ServerProcess], key: dict[str, str], fake: FakeZoho
) -> None:
    with instances[1].client() as api:
        _manual_run_between_slots(api, key, fake)


def _manual_run_between_slots(api: httpx.Client, key: dict[str, str], fake: FakeZoho) -> None:
    fake.latency_s = 0.8  # the manual full run lasts a few intervals
    try:
        for _ in range(200):  # between two scheduled runs
            resp = api.post(SYNC, json={"full": True}, headers=key)
            if resp.status_code == 202:
                break
            check_problem(resp, 409, "sync_already_running")
            time.sleep(0.05)
        assert resp.status_code == 202, resp.text
        manual = wait_run(api, resp.headers["location"], key)
    finally:
        fake.latency_s = 0.0
    assert manual["status"] == "succeeded" and manual["kind"] == "full"
    assert (_at(manual["finished_at"]) - _at(manual["started_at"])).total_seconds() > 1.5 * INTERVAL_S
    # The schedule goes on after it.
    assert _wait_for(lambda: all_runs(api, key)[0]["id"] > manual["id"], 10)
    time.sleep(0.3)
    runs = [r for r in _runs_oldest_first(api, key) if r["status"] != "running"]
    _no_overlap(runs)
    during = [
        r
        for r in runs
        if r["id"] != manual["id"]
        and _at(manual["started_at"]) <= _at(r["started_at"]) <= _at(manual["finished_at"])
    ]
    assert during == []


def test_without_credentials_no_schedule_and_503(
    server: ServerProcess, database: Database, key: dict[str, str]
) -> None:
    """The suite's default server on the same database: no Zoho settings."""
    with server.client() as api:
        resp = api.post(SYNC, json={"full": True}, headers=key)
        body = check_problem(resp, 503, "service_unavailable")
        assert "ZOHO_CLIENT_ID" in body["detail"] and "ZOHO_REFRESH_TOKEN" in body["detail_ar"]
        assert int(resp.headers["retry-after"]) > 0
        sync = api.get("/ready").json()["sync"]
        assert sync["configured"] is False and sync["schedule"]["enabled"] is False
        assert "ZOHO_CLIENT_SECRET" in sync["missing"]
        assert sync["running_here"] == [] and "last_run" not in sync
