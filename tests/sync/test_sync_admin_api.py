"""`POST /api/admin/sync` and the runs over HTTP, against the real server and the fake Zoho: 202 with the
run's Location, the run finishing in the background and its products served, 409 while a run holds the
lock, scopes, paging, input errors."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from admin_testlib import bearer, create_key
from catalog_testlib import Database, ServerProcess, Services, run
from fakes.zoho import FakeZoho
from prometheus_client.parser import text_string_to_metric_families
from sync.sync_api_testlib import RUNS, SYNC, all_runs, check_problem, sync_server, wait_idle, wait_run

ITEMS = 400  # two pages of items


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeZoho]:
    with FakeZoho(items=ITEMS) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, fake: FakeZoho, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = sync_server(database, services, fake, tmp_path_factory.mktemp("srv"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def key(database: Database) -> dict[str, str]:
    return bearer(create_key(database, "sync operator", "sync:run"))


def test_start_answers_202_with_location_and_the_run_is_served(
    api: httpx.Client, key: dict[str, str], fake: FakeZoho, database: Database
) -> None:
    resp = api.post(SYNC, json={"full": True}, headers=key)
    assert resp.status_code == 202, resp.text
    doc = resp.json()
    location = resp.headers["location"]
    assert re.fullmatch(r"/api/admin/sync/runs/\d+", location)
    assert doc["href"] == location and location.endswith(f"/{doc['id']}")
    assert doc["kind"] == "full" and doc["status"] in ("running", "succeeded")
    assert resp.headers["cache-control"] == "no-store"
    done = wait_run(api, location, key)
    assert done["status"] == "succeeded", done
    assert done["items_seen"] == ITEMS and done["items_changed"] == ITEMS and done["finished_at"]
    # The synced products are what the public API serves.
    with fake.catalog.lock:
        item_id, item = next(iter(fake.catalog.items.items()))
        name = item["name"]
    product_id = run(database.fetch("SELECT id FROM products WHERE zoho_item_id = $1", item_id))[0]["id"]
    end = time.monotonic() + 5
    while (served := api.get(f"/api/consumer/products/{product_id}")).status_code != 200:
        assert time.monotonic() < end, served.text
        time.sleep(0.05)
    assert served.json()["name"] == name and served.json()["zoho_item_id"] == item_id


def test_no_body_starts_an_incremental_run(api: httpx.Client, key: dict[str, str]) -> None:
    wait_idle(api, key)
    resp = api.post(SYNC, headers=key)
    assert resp.status_code == 202, resp.text
    assert resp.json()["kind"] == "incremental"
    done = wait_run(api, resp.headers["location"], key)
    assert done["status"] == "succeeded" and done["items_changed"] == 0, done


def test_a_run_started_by_a_request_continues_its_trace(
    api: httpx.Client, key: dict[str, str], fake: FakeZoho
) -> None:
    wait_idle(api, key)
    fake.clear_log()
    trace_id = "5c2f0e6b9d8a4f3e8c7b6a5d4e3f2a1b"
    headers = {**key, "traceparent": f"00-{trace_id}-1122334455667788-01"}
    resp = api.post(SYNC, headers=headers)
    assert resp.status_code == 202, resp.text
    ours = resp.headers["traceparent"]
    assert ours.split("-")[1] == trace_id
    wait_run(api, resp.headers["location"], key)
    sent = {r.traceparent for r in fake.api_log()}
    assert sent == {ours}  # every Zoho call: our trace, our span as the parent


def test_runs_in_metrics(api: httpx.Client, key: dict[str, str], database: Database) -> None:
    wait_idle(api, key)
    families = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
    runs = {(s.labels["kind"], s.labels["status"]): s.value for s in families["sync_runs"].samples}
    rows = run(
        database.fetch("SELECT kind, status, count(*) AS n, sum(calls) AS calls FROM sync_runs GROUP BY 1, 2")
    )
    assert runs == {(r["kind"], r["status"]): float(r["n"]) for r in rows}
    calls = sum(s.value for s in families["sync_zoho_calls"].samples)
    assert calls == sum(r["calls"] for r in rows) > 0
    seen = {(s.labels["kind"], s.labels["outcome"]): s.value for s in families["sync_items"].samples}
    assert seen[("full", "seen")] >= ITEMS


def test_409_while_a_run_holds_the_lock(api: httpx.Client, key: dict[str, str], fake: FakeZoho) -> None:
    wait_idle(api, key)
    fake.latency_s = 1.0  # each Zoho answer: the full run lasts several seconds
    try:
        first = api.post(SYNC, json={"full": True}, headers=key)
        assert first.status_code == 202, first.text
        before = len(all_runs(api, key))
        # Two processes serve: whichever answers, its own flag or the advisory lock says "running".
        for _ in range(2):  # each refused start costs a child process's start (about a second)
            body = check_problem(
                api.post(SYNC, json={"full": False}, headers=key), 409, "sync_already_running"
            )
            assert "runs" in body["detail"]
        assert len(all_runs(api, key)) == before  # refused starts leave no record
        done = wait_run(api, first.headers["location"], key)
        assert done["status"] == "succeeded", done
    finally:
        fake.latency_s = 0.0
    again = api.post(SYNC, json={"full": False}, headers=key)
    assert again.status_code == 202, again.text
    wait_run(api, again.headers["location"], key)


def test_keys_and_scopes(api: httpx.Client, database: Database, key: dict[str, str]) -> None:
    writer = bearer(create_key(database, "catalog writer", "catalog:write"))
    for method, path in (("POST", SYNC), ("GET", RUNS), ("GET", f"{RUNS}/1")):
        check_problem(api.request(method, path), 401, "unauthorized")
        bad = api.request(method, path, headers=bearer("cat_0123456789ab_" + "x" * 43))
        check_problem(bad, 401, "unauthorized")
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        denied = api.request(method, path, headers=writer)
        check_problem(denied, 403, "forbidden")
        assert 'scope="sync:run"' in denied.headers["www-authenticate"]


def test_runs_are_paged_newest_first(api: httpx.Client, key: dict[str, str]) -> None:
    wait_idle(api, key)
    every = all_runs(api, key)
    assert len(every) >= 4
    ids = [r["id"] for r in every]
    assert ids == sorted(ids, reverse=True)
    first = api.get(RUNS, headers=key).json()
    assert (first["page"], first["page_size"], first["total"]) == (1, 50, len(every))
    second = api.get(RUNS, params={"page": 2, "page_size": 1}, headers=key)
    assert second.status_code == 200
    assert second.headers["cache-control"].startswith("private")
    page = second.json()
    assert [r["id"] for r in page["items"]] == [ids[1]]
    assert page["pages"] == len(every) and page["total"] == len(every)
    beyond = api.get(RUNS, params={"page": len(every) + 1, "page_size": 1}, headers=key).json()
    assert beyond["items"] == [] and beyond["total"] == len(every)
    one = api.get(f"{RUNS}/{ids[-1]}", headers=key)
    assert one.status_code == 200 and one.json() == every[-1]
    etag = one.headers["etag"]
    assert api.get(f"{RUNS}/{ids[-1]}", headers={**key, "If-None-Match": etag}).status_code == 304
    check_problem(api.get(f"{RUNS}/999999999", headers=key), 404, "not_found")
    check_problem(api.get(f"{RUNS}/abc", headers=key), 422, "validation_failed")
    invalid = check_problem(api.get(RUNS, params={"page_size": 201}, headers=key), 422, "validation_failed")
    assert [e["field"] for e in invalid["errors"]] == ["query.page_size"]


def test_bad_bodies(api: httpx.Client, key: dict[str, str]) -> None:
    wrong = check_problem(api.post(SYNC, json={"full": "yes"}, headers=key), 422, "validation_failed")
    assert [e["field"] for e in wrong["errors"]] == ["body.full"]
    unknown = check_problem(api.post(SYNC, json={"fll": True}, headers=key), 422, "validation_failed")
    assert [e["field"] for e in unknown["errors"]] == ["body.fll"]
    headers = {**key, "Content-Type": "application/json"}
    check_problem(api.post(SYNC, content=b"{", headers=headers), 400, "bad_request")
    text = {**key, "Content-Type": "text/plain"}
    check_problem(api.post(SYNC, content=b"full", headers=text), 415, "unsupported_media_type")
    assert not any(r["status"] == "running" for r in all_runs(api, key))


def test_shutdown_stops_a_running_sync_cleanly(
    database: Database,
    services: Services,
    fake: FakeZoho,
    key: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A server stopped while its run goes on: the run ends recorded (cancelled), no child is left."""
    proc = sync_server(database, services, fake, tmp_path_factory.mktemp("stop"), new_org=False)
    fake.latency_s = 0.5
    try:
        with proc.client() as api:
            wait_idle(api, key)
            resp = api.post(SYNC, json={"full": True}, headers=key)
            assert resp.status_code == 202, resp.text
            run_id = resp.json()["id"]
        assert proc.stop() < 10
    finally:
        fake.latency_s = 0.0
    row = run(database.fetch("SELECT status, error, finished_at FROM sync_runs WHERE id = $1", run_id))[0]
    assert (row["status"], row["error"]) == ("failed", "cancelled"), dict(row)
    assert row["finished_at"] is not None
    assert _sync_children_of(database) == []


def _sync_children_of(database: Database) -> list[int]:
    """Sync processes still running on this test's database (other suites and benchmarks on the machine
    run their own, on other databases)."""
    found = subprocess.run(["pgrep", "-f", "server sync --announce"], capture_output=True, text=True)
    ours = []
    for pid in map(int, found.stdout.split()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if f"DATABASE_URL={database.url}".encode() in environ:
            ours.append(pid)
    return ours
