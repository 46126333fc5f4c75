"""Helpers of the sync tests: a database copy, a fake Zoho, settings joining them, runs and catalog reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from catalog_testlib import Database
from fakes.zoho import FakeZoho
from sync.zoho_testlib import QUIET_RUN, unique_org, zoho_settings

from server.settings import Settings
from server.sync.engine import run_sync
from server.sync.job import Progress
from server.sync.runs import RunResult


@dataclass
class SyncEnv:
    """One test's database, fake Zoho and settings."""

    db: Database
    fake: FakeZoho
    settings: Settings

    def run(
        self,
        *,
        full: bool = False,
        progress: Callable[[Progress], None] | None = None,
        **overrides: Any,
    ) -> RunResult:
        """One run_sync to completion (overrides: settings for this run)."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return asyncio.run(self.arun(settings, full=full, progress=progress))

    async def arun(
        self, settings: Settings, *, full: bool, progress: Callable[[Progress], None] | None = None
    ) -> RunResult:
        """run_sync with a pool of its own."""
        pool = await asyncpg.create_pool(self.db.url, min_size=1, max_size=4)
        try:
            return await run_sync(settings, pool=pool, full=full, progress=progress)
        finally:
            await pool.close()

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of one query."""
        return asyncio.run(self.db.fetch(sql, *args))

    def value(self, sql: str, *args: Any) -> Any:
        """The first column of the first row of one query."""
        rows = self.fetch(sql, *args)
        return rows[0][0] if rows else None

    def version(self) -> int:
        """The catalog version."""
        return int(self.value("SELECT version FROM catalog_state"))

    def item_calls(self) -> int:
        """GET /items calls the fake has served (its log)."""
        return sum(1 for r in self.fake.api_log() if r.path.endswith("/items") and r.method == "GET")

    def image_calls(self) -> int:
        """GET /items/{id}/image calls the fake has served."""
        return sum(1 for r in self.fake.api_log() if r.path.endswith("/image"))


def make_env(db: Database, fake: FakeZoho, **overrides: Any) -> SyncEnv:
    """Settings for this database's uploads and this fake (its own organisation id, no rate wait)."""
    fake.organization_id = unique_org()
    values: dict[str, Any] = {
        "UPLOADS_DIR": str(db.uploads),
        **QUIET_RUN,
        **overrides,
    }
    return SyncEnv(db, fake, zoho_settings(fake, **values))


def fake_ids(env: SyncEnv) -> list[str]:
    """The fake's item ids."""
    with env.fake.catalog.lock:
        return list(env.fake.catalog.items)


def synced(env: SyncEnv, *, active: bool | None = None) -> int:
    """Products of ours that are items of the fake (optionally only active or inactive ones)."""
    sql = "SELECT count(*) FROM products WHERE zoho_item_id = ANY($1)"
    if active is not None:
        sql += " AND is_active = $2"
        return int(env.value(sql, fake_ids(env), active))
    return int(env.value(sql, fake_ids(env)))
