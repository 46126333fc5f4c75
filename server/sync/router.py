"""Admin routes of the Zoho sync: start a run (202 + Location), list runs, read one (scope `sync:run`).

The runs execute in the background of the serving process (server/sync/service.py); their records are
read from `sync_runs`, so any process or instance answers for any run.
"""

from __future__ import annotations

import orjson

from server.admin.router import admin_auth
from server.catalog.schemas import page_meta
from server.errors import NotFound
from server.http import Call, Reply, Route
from server.params import PAGE, PAGE_SIZE
from server.state import AppState
from server.sync import runs, schemas
from server.sync.service import SyncService, run_doc, run_json

SYNC_RUN = "sync:run"


def _no_run(run_id: int) -> NotFound:
    return NotFound(f"No sync run with id {run_id}.", f"لا يوجد تشغيل مزامنة بالمعرّف {run_id}.")


def routes(state: AppState, service: SyncService | None = None) -> list[Route]:
    """The sync endpoints; registers the service's start-up hook and /ready section with `state`."""
    sync = service or SyncService(state.settings)
    state.on_start.append(sync.start)
    state.ready_sections["sync"] = sync.report

    async def start(call: Call) -> Reply:
        run_id = await sync.trigger(full=bool(call.body.get("full", False)))
        async with state.res.pool.acquire() as conn:
            doc = await run_doc(conn, run_id)
        if doc is None:  # pragma: no cover - the run recorded itself before trigger returned
            raise _no_run(run_id)
        return Reply(orjson.dumps(doc), status=202, headers={"Location": doc["href"]}, conditional=False)

    async def list_runs(call: Call) -> Reply:
        page, size = call.params["page"], call.params["page_size"]
        async with state.res.pool.acquire() as conn:
            rows, total = await runs.list_runs(conn, limit=size, offset=(page - 1) * size)
        doc = {"items": [run_json(r) for r in rows], **page_meta(page, size, total)}
        return Reply(orjson.dumps(doc))

    async def get_run(call: Call) -> Reply:
        run_id = call.params["id"]
        async with state.res.pool.acquire() as conn:
            doc = await run_doc(conn, run_id)
        if doc is None:
            raise _no_run(run_id)
        return Reply(orjson.dumps(doc))

    auth = admin_auth(state, SYNC_RUN)
    common = {"tag": "admin", "group": "admin", "auth": auth, "head": False}
    return [
        Route(
            "POST",
            "/api/admin/sync",
            start,
            body=schemas.SYNC_START,
            summary="Start a Zoho sync run in the background (409 while one runs, 503 without credentials)",
            errors=(409, 503),
            response_schema=schemas.SYNC_STARTED_SCHEMA,
            **common,  # type: ignore[arg-type]
        ),
        Route(
            "GET",
            "/api/admin/sync/runs",
            list_runs,
            (PAGE, PAGE_SIZE),
            summary="Sync runs, newest first",
            response_schema=schemas.SYNC_RUN_PAGE_SCHEMA,
            **common,  # type: ignore[arg-type]
        ),
        Route(
            "GET",
            "/api/admin/sync/runs/:id",
            get_run,
            (schemas.RUN_ID,),
            summary="One sync run (poll it while it runs: counts are written after every page)",
            errors=(404, 422),
            response_schema=schemas.SYNC_RUN_SCHEMA,
            **common,  # type: ignore[arg-type]
        ),
    ]
