"""The demo catalog is deterministic and realistic."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import asyncpg
import pytest
from catalog_testlib import Services, run

from server.db.migrate import migrate
from server.seed import seed

_INDEXES = (
    "SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE tablename IN ('products', 'product_prices') ORDER BY indexname"
)


def _make(services: Services, name: str, uploads: Path, seed_value: int) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        admin = await asyncpg.connect(services.admin_url)
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        conn = await asyncpg.connect(services.db_url(name))
        try:
            await migrate(conn)
            indexes = await conn.fetch(_INDEXES)
            assert await seed(conn, products=500, seed_value=seed_value, uploads=uploads) == 500
            # The COPY runs without the secondary indexes; every one is back, as the migrations define it.
            assert await conn.fetch(_INDEXES) == indexes
            assert await seed(conn, products=500, seed_value=seed_value, uploads=uploads, if_empty=True) == 0
            with pytest.raises(SystemExit):
                await seed(conn, products=500, seed_value=seed_value, uploads=uploads)
            assert await conn.fetch(_INDEXES) == indexes
            rows = await conn.fetch(
                "SELECT p.zoho_item_id, p.sku, p.name, p.name_ar, p.stock_on_hand, p.category_id, "
                "array_agg(pp.price ORDER BY pp.price_list_id) FROM products p "
                "JOIN product_prices pp ON pp.product_id = p.id GROUP BY p.id ORDER BY p.id"
            )
            stats = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM price_lists) AS lists, "
                "(SELECT count(*) FROM products WHERE stock_on_hand = 0) AS zero, "
                "(SELECT count(*) FROM categories WHERE parent_id IS NOT NULL) AS nested, "
                "(SELECT count(*) FROM products WHERE name_ar ~ '[\u0600-\u06ff]') AS arabic"
            )
            assert (
                stats["lists"] == 3 and stats["zero"] > 20 and stats["nested"] > 10 and stats["arabic"] == 500
            )
        finally:
            await conn.close()
        files = sorted(uploads.glob("*.jpg"))
        assert 0.6 < len(files) / 500 < 0.8
        assert any(f.is_symlink() for f in files)
        assert all(f.read_bytes()[:3] == b"\xff\xd8\xff" for f in files[:50])
        # Plain files are hard links to the library's variants: a million-product seed writes no bytes twice.
        variants = {f.stat().st_ino for f in (uploads / "_library").glob("variant-*.jpg")}
        plain = [f for f in files if not f.is_symlink()]
        assert plain and all(f.stat().st_ino in variants for f in plain)
        digest = hashlib.sha256(repr([tuple(r) for r in rows]).encode())
        for f in files:
            digest.update(f.name.encode() + f.read_bytes())
        return digest.hexdigest(), name

    return run(go())


def test_same_seed_same_catalog(services: Services, tmp_path: Path) -> None:
    names = [f"seed_{uuid.uuid4().hex[:10]}" for _ in range(3)]
    try:
        a, _ = _make(services, names[0], tmp_path / "a", 3)
        b, _ = _make(services, names[1], tmp_path / "b", 3)
        c, _ = _make(services, names[2], tmp_path / "c", 4)
    finally:
        for name in names:
            run(_drop(services, name))
    assert a == b != c


async def _drop(services: Services, name: str) -> None:
    admin = await asyncpg.connect(services.admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
