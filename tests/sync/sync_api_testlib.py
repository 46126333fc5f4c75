"""Helpers of the sync admin API tests: a server wired to a fake Zoho, runs started and watched over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from catalog_testlib import Database, ServerProcess, Services
from fakes.zoho import FakeZoho
from sync.zoho_testlib import QUIET_RUN, unique_org

PROBLEM = "application/problem+json"
SYNC = "/api/admin/sync"
RUNS = "/api/admin/sync/runs"


def sync_server(
    database: Database, services: Services, fake: FakeZoho, workdir: Path, *, new_org: bool = True, **env: Any
) -> ServerProcess:
    """A started server whose sync reads `fake` (a new organisation id unless another server shares the
    fake; schedule off unless `env` says)."""
    if new_org:
        fake.organization_id = unique_org()
    settings = {
        **fake.settings_env(),
        **QUIET_RUN,
        "ZOHO_SYNC_INTERVAL_S": "0",
        "ZOHO_SYNC_FULL_AT": "",
        **env,
    }
    return ServerProcess(database, services, workdir, **settings).start()


def wait_run(
    api: httpx.Client, location: str, headers: dict[str, str], deadline_s: float = 30
) -> dict[str, Any]:
    """Poll a run's Location until it is no longer running; its last document."""
    end = time.monotonic() + deadline_s
    while True:
        resp = api.get(location, headers=headers)
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        if doc["status"] != "running" or time.monotonic() > end:
            return doc
        time.sleep(0.05)


def all_runs(api: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every run, newest first (one page of 200)."""
    resp = api.get(RUNS, params={"page_size": 200}, headers=headers)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


def wait_idle(api: httpx.Client, headers: dict[str, str], deadline_s: float = 30) -> None:
    """Until no run is running."""
    end = time.monotonic() + deadline_s
    while any(r["status"] == "running" for r in all_runs(api, headers)) and time.monotonic() < end:
        time.sleep(0.05)


def check_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A problem+json answer with this status and code; its body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body: dict[str, Any] = resp.json()
    assert body["code"] == code and body["status"] == status
    assert body["detail"] and body["detail_ar"] and body["title_ar"]
    return body
