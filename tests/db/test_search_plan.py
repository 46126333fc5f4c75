"""The `q` search and its trigram index cannot drift apart: EXPLAIN of the repo's own statement must use
the index on `search_text` (name, SKU and Arabic name, normalised), in the custom and in the generic plan."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from catalog_testlib import Database, Services, drop_database, make_database, run

from server.catalog import repo

TRIGRAM_INDEXES = {"products_search_trgm_idx"}


@pytest.fixture
def db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Database:
    """A fresh copy of the template database."""
    database = make_database(services, template_db, tmp_path)
    yield database  # type: ignore[misc]
    drop_database(database)


async def plan(conn: asyncpg.Connection, flt: repo.ProductFilter, *, with_count: bool | None) -> str:
    """The plan of the list statement exactly as the service sends it (same SQL, same parameters); with
    `with_count=None`, of the search hits the in-memory index pages (repo.SEARCH_HITS)."""
    if with_count is None:
        assert flt.q is not None
        rows = await conn.fetch("EXPLAIN (COSTS OFF) " + repo.SEARCH_HITS, repo._like_pattern(flt.q))
    else:
        sql, args = repo.list_statement(flt, with_count=with_count)
        rows = await conn.fetch("EXPLAIN (COSTS OFF) " + sql, "consumer", 50, 0, *args)
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("with_count", [True, False, None])
@pytest.mark.parametrize("q", ["milk", "حليب", "حَلِيب", "sku-00001", "SKU-٠٠٠٠١"])
def test_search_uses_the_trigram_index(db: Database, q: str, with_count: bool | None) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            present = {
                r[0]
                for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'products'")
            }
            if not present >= TRIGRAM_INDEXES:
                pytest.skip("this PostgreSQL has no pg_trgm (the embedded server): no trigram indexes")
            # On 300 rows any plain scan is cheapest; the question is which indexes the statement *can*
            # use. So this copy of the catalog keeps only the trigram indexes on products, and only
            # bitmap scans are allowed: a search arm without a matching index leaves the sequential scan.
            others = await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'products' "
                "AND indexdef NOT LIKE '%gin_trgm_ops%' AND indexdef LIKE '%WHERE is_active%'"
            )
            for (name,) in others:
                await conn.execute(f"DROP INDEX {name}")
            await conn.execute("SET enable_indexscan = off")
            await conn.execute("SET enable_indexonlyscan = off")
            await conn.execute("SET enable_seqscan = off")
            text = await plan(conn, repo.ProductFilter(q=q), with_count=with_count)
            # Generic plans too: after five executions a prepared statement may switch to one.
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            generic = await plan(conn, repo.ProductFilter(q=q), with_count=with_count)
        finally:
            await conn.close()
        for name, shown in (("custom", text), ("generic", generic)):
            used = {i for i in TRIGRAM_INDEXES if f"Bitmap Index Scan on {i}" in shown}
            assert used == TRIGRAM_INDEXES, f"{name} plan uses {sorted(used)}:\n{shown}"
            assert "Seq Scan on products" not in shown, shown

    run(go())
