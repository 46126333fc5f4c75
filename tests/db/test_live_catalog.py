"""LiveCatalog's own memory and its name ranks: no name text kept (the search texts only, in one buffer),
a rename found by its hash, new names placed between their neighbours' ranks in the order a fresh build
gives."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from catalog_testlib import Database, Services, drop_database, make_database, run

from server.catalog import repo
from server.catalog.live import LiveCatalog

EXTRA = 20_000
SORTS = ("name", "-name", "price", "-price", "newest")


@pytest.fixture(scope="module")
def big(
    services: Services, template_db: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """The template's catalog plus EXTRA products with long distinct names (ids with a gap)."""
    db = make_database(services, template_db, tmp_path_factory.mktemp("live"))
    run(
        db.execute(
            "INSERT INTO products (id, zoho_item_id, sku, name, category_id, stock_on_hand)"
            " SELECT 1000 + g, 'live-' || g, 'SKU-LIVE-' || g,"
            " 'A rather long product name, number ' || g, (SELECT min(id) FROM categories), g % 4"
            f" FROM generate_series(1, {EXTRA}) g"
        )
    )
    yield db
    drop_database(db)


async def _built(db: Database) -> LiveCatalog:
    conn = await asyncpg.connect(db.url)
    try:
        live = LiveCatalog("consumer")
        await live.rebuild(conn)
        return live
    finally:
        await conn.close()


def _orders(live: LiveCatalog) -> dict[str, list[int]]:
    return {sort: live.index.query(sort, 0, 10**6)[0] for sort in SORTS}


def test_keeps_no_names(big: Database) -> None:
    # Python memory the catalog keeps besides the index and the search texts: the dicts of names and ranks
    # it used to hold took ~250 bytes a product; two arrays by id take 16 an id (plus the connection's
    # buffers). The search texts: their bytes, a separator and 16 bytes of arrays each, and growth slack.
    run(_built(big))  # first-use allocations (codecs, statement caches) are not the catalog's
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        live = run(_built(big))
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    top = run(big.fetch("SELECT max(id) FROM products"))[0][0]
    assert len(live.index) > EXTRA
    held = live.index.memory_bytes + live.search.memory_bytes
    assert kept - held < 32 * top + 300_000, (kept, live.index.memory_bytes, live.search.memory_bytes, top)
    texts, count = run(big.fetch("SELECT sum(octet_length(search_text) + 1), count(*) FROM products"))[0]
    assert len(live.search) == count
    assert texts <= live.search.memory_bytes <= 1.5 * texts + 16 * count + 4 * top + 65_536


def test_rename_reloads_ranks_and_catch_up_matches_rebuild(big: Database) -> None:
    live = run(_built(big))
    loads = live.rank_loads
    first = run(big.fetch("SELECT min(id) FROM products WHERE is_active"))[0][0]
    # Same name written again, and a stock change: no rank reload.
    run(big.execute("UPDATE products SET name = name, stock_on_hand = 7 WHERE id = $1", first))

    async def catch_up() -> None:
        conn = await asyncpg.connect(big.url)
        try:
            await live.catch_up(conn)
        finally:
            await conn.close()

    run(catch_up())
    assert live.rank_loads == loads
    assert _orders(live) == _orders(run(_built(big)))
    # A rename to the first name in the order, and a new product: ranks reloaded, orders as a fresh build.
    run(big.execute("UPDATE products SET name = '  first of all' WHERE id = 1000 + $1", EXTRA // 2))
    run(
        big.execute(
            "INSERT INTO products (id, zoho_item_id, sku, name, stock_on_hand)"
            " VALUES (500000, 'live-new', 'SKU-LIVE-NEW', 'Middle name', 3)"
        )
    )
    run(catch_up())
    assert live.rank_loads == loads  # placed between their neighbours' ranks, no reload
    assert live.rank_places == 1
    fresh = run(_built(big))
    assert _orders(live) == _orders(fresh)
    assert _orders(live)["name"][0] == 1000 + EXTRA // 2
    assert 500000 in live.index


def test_product_and_price_changes_catch_up_in_one_statement(big: Database) -> None:
    live = run(_built(big))

    async def scenario() -> None:
        conn = await asyncpg.connect(big.url)
        statements: list[str] = []
        try:
            await live.catch_up(conn)  # nothing to do; asyncpg learns the statement's types once
            quick = live.quick
            ids = [
                r[0] for r in await conn.fetch("SELECT id FROM products WHERE is_active ORDER BY id LIMIT 3")
            ]
            await conn.execute(
                "UPDATE products SET stock_on_hand = stock_on_hand + 3 WHERE id = ANY($1)", ids
            )
            await conn.execute("UPDATE products SET is_active = false WHERE id = $1", ids[0])
            await conn.execute(
                "UPDATE product_prices SET price = price + 1 WHERE product_id = $1"
                " AND price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer')",
                ids[1],
            )
            applied, loads = live.applied, live.rank_loads
            conn.add_query_logger(lambda q: statements.append(q.query))
            await live.catch_up(conn)
            await asyncio.sleep(0.05)  # asyncpg calls query loggers soon after, not at once
            assert len(statements) == 1, statements  # no BEGIN/COMMIT, no second query
            assert live.quick == quick + 1 and live.rank_loads == loads and live.applied == applied + 3
            fresh = await _built(big)
            assert _orders(live) == _orders(fresh)
            assert not live.is_listed(ids[0]) and live.is_listed(ids[1])
            assert live.index.count(in_stock=True) == fresh.index.count(in_stock=True)
            # A category change needs the full path (names, tree) in one transaction.
            await conn.execute(
                "UPDATE categories SET name = name || ' x' WHERE id = (SELECT min(id) FROM categories)"
            )
            statements.clear()
            await live.catch_up(conn)
            await asyncio.sleep(0.05)
            assert len(statements) > 1 and live.quick == quick + 1
            assert live.category_loads == 1
        finally:
            await conn.close()

    run(scenario())


def test_a_change_naming_more_than_a_chunk_is_read_by_the_cursor_path(big: Database) -> None:
    # One UPDATE of EXTRA (20,000) products: the quick path's single value would be decoded in one go (the
    # event loop held ~0.3 s), so it hands over to the transactional path, which reads through a cursor
    # (asyncpg's query loggers do not see a cursor's statement).
    assert EXTRA > repo.INDEX_CHUNK
    live = run(_built(big))

    async def scenario() -> None:
        conn = await asyncpg.connect(big.url)
        statements: list[str] = []
        try:
            quick, applied, rebuilds = live.quick, live.applied, live.rebuilds
            await conn.execute("UPDATE products SET stock_on_hand = stock_on_hand + 1 WHERE id > 1000")
            conn.add_query_logger(lambda q: statements.append(q.query))
            await live.catch_up(conn)
            await asyncio.sleep(0.05)  # asyncpg calls query loggers soon after, not at once
            assert (live.quick, live.applied, live.rebuilds) == (quick, applied + 1, rebuilds)
            # The quick statement (no rows: `fits` false), then the transactional path.
            assert repo.CATCH_UP in statements
            assert "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;" in statements
            fresh = await _built(big)
            assert _orders(live) == _orders(fresh)
            assert live.index.count(in_stock=True) == fresh.index.count(in_stock=True)
        finally:
            await conn.close()

    run(scenario())


def _catch_up(live: LiveCatalog, db: Database) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            await live.catch_up(conn)
        finally:
            await conn.close()

    run(go())


# Names that land everywhere in the order: before the first, after the last, between two neighbours, equal to
# an existing name and to each other, many into one gap (ordered and reversed), and ones an earlier step made.
INSERTED_NAMES = [
    [
        "  aaa first",
        "zzzz last",
        "A rather long product name, number 15",
        "A rather long product name, number 15",
    ],
    [f"A rather long product name, number 150{k}" for k in range(10)],
    [f"A rather long product name, number 1500{k}x" for k in reversed(range(10))],
    ["Mango", "mango", "MANGO", "Mango ", "Mango", "é", "e", "E", "ü", "ألبان", "zzzz last"],
    [f"Between {k:04d}" for k in range(300)],
]


async def _insert(db: Database, rows: list[tuple[int, str, str]], step: int) -> None:
    conn = await asyncpg.connect(db.url)
    try:
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO products (id, zoho_item_id, name, stock_on_hand) VALUES ($1, $2, $3, 1)", rows
            )
            # A renamed product, and one deactivated or listed again (renamed while away, every other time).
            await conn.execute("UPDATE products SET name = $1 WHERE id = $2", f"Mango {step}", 1000 + step)
            await conn.execute("UPDATE products SET is_active = NOT is_active WHERE id = 1100")
            if step % 2 == 0:
                await conn.execute("UPDATE products SET name = name || '!' WHERE id = 1100")
    finally:
        await conn.close()


def test_inserted_names_are_placed_like_a_fresh_build(big: Database) -> None:
    live = run(_built(big))
    loads, placed = live.rank_loads, live.rank_places
    next_id = 600_000
    for step, names in enumerate(INSERTED_NAMES):
        rows = [(next_id + k, f"ins-{step}-{k}", name) for k, name in enumerate(names)]
        next_id += len(names)
        run(_insert(big, rows, step))
        _catch_up(live, big)
        assert _orders(live) == _orders(run(_built(big))), step
    assert live.rank_loads == loads
    assert live.rank_places == placed + len(INSERTED_NAMES)


def test_new_products_caught_up_in_one_statement_are_searchable(big: Database) -> None:
    live = run(_built(big))
    quick = live.quick

    async def insert() -> None:
        conn = await asyncpg.connect(big.url)
        try:
            await conn.executemany(
                "INSERT INTO products (id, zoho_item_id, name, sku, stock_on_hand)"
                " VALUES ($1, $2, $3, $4, 1)",
                [(650_000 + k, f"srch-{k}", f"Quokka Lantern {k}", f"QK-{k}") for k in range(3)],
            )
        finally:
            await conn.close()

    run(insert())  # ids above every earlier test's (600_000 + ...) and below the next test's (700_000 + ...)
    _catch_up(live, big)
    assert live.quick == quick + 1  # the one-statement path, which now carries new products' texts
    assert sorted(live.search.search(b"quokka lantern")) == [650_000, 650_001, 650_002]
    assert sorted(live.search.search(b"qk-1")) == [650_001]


def test_a_full_gap_is_widened_in_memory_not_reloaded(big: Database) -> None:
    live = run(_built(big))
    loads, quick, relabels = live.rank_loads, live.quick, live.rank_relabels
    # The same gap halved again and again: each new name sorts just below the one before (as a sync's
    # batches did, names arriving in descending order within a prefix).
    for step in range(70):  # each halves the gap: ~47 bits at this size, then it has no room
        run(
            big.execute(
                "INSERT INTO products (id, zoho_item_id, name) VALUES ($1, $2, $3)",
                700_000 + step,
                f"gap-{step}",
                "A rather long product name, number 1" + "0" * (70 - step),
            )
        )
        _catch_up(live, big)
        if step % 10 == 9:
            assert _orders(live) == _orders(run(_built(big))), step
    assert live.rank_relabels > relabels  # the gap ran out: the names around it were spread anew
    assert live.rank_loads == loads  # and no rank was read again from SQL
    assert live.quick >= quick + 70  # inserts alone: placed in the one-statement catch-up
    assert _orders(live) == _orders(run(_built(big)))


def test_new_names_caught_up_in_one_statement_are_placed_like_a_fresh_build(big: Database) -> None:
    # The one-statement catch-up's own neighbour look-up (repo.NEIGHBOUR_ROWS in CATCH_UP), on inserts alone:
    # names equal to existing ones and to each other, runs with nothing between them (whose neighbour below
    # comes from the row before, not from a probe), names before the first and after the last.
    live = run(_built(big))
    loads, quick = live.rank_loads, live.quick
    next_id = 800_000
    for step, names in enumerate([*INSERTED_NAMES, [f"Between {k:04d}" for k in reversed(range(0, 300, 7))]]):
        rows = [(next_id + k, f"one-{step}-{k}", name) for k, name in enumerate(names)]
        next_id += len(names)

        async def insert(rows: list[tuple[int, str, str]] = rows) -> None:
            conn = await asyncpg.connect(big.url)
            try:
                await conn.executemany(
                    "INSERT INTO products (id, zoho_item_id, name, stock_on_hand) VALUES ($1, $2, $3, 1)",
                    rows,
                )
            finally:
                await conn.close()

        run(insert())
        _catch_up(live, big)
        assert live.quick == quick + step + 1, step  # the one-statement path placed them
        assert _orders(live) == _orders(run(_built(big))), step
    assert live.rank_loads == loads


def test_both_neighbour_queries_agree_with_a_plain_reading(big: Database) -> None:
    # NAME_NEIGHBOURS (two probes a name, NEIGHBOUR_ROWS) against the three probes it replaced, on names that
    # exist twice, in runs, first and last, and products of the set that are inactive.
    plain = """
        SELECT c.id, c.name = lag(c.name) OVER (ORDER BY c.name, c.id),
               (SELECT p.id FROM products p WHERE p.is_active AND p.name < c.name
                ORDER BY p.name DESC, p.id DESC LIMIT 1),
               (SELECT p.id FROM products p WHERE p.is_active AND p.name = c.name AND p.id <> ALL($1::int[])
                ORDER BY p.name, p.id LIMIT 1),
               (SELECT p.id FROM products p WHERE p.is_active AND p.name > c.name
                ORDER BY p.name, p.id LIMIT 1)
        FROM products c WHERE c.id = ANY($1::int[]) AND c.is_active ORDER BY c.name, c.id
    """

    async def go() -> None:
        conn = await asyncpg.connect(big.url)
        try:
            queries = [
                "SELECT id FROM products ORDER BY id DESC LIMIT 400",
                "SELECT id FROM products WHERE id % 97 = 0",
                "SELECT id FROM products ORDER BY name, id LIMIT 50",
                "SELECT id FROM products ORDER BY name DESC, id DESC LIMIT 50",
                # names held twice or more, and inactive products with a few active ones
                "SELECT id FROM products"
                " WHERE name IN (SELECT name FROM products GROUP BY 1 HAVING count(*) > 1)",
                "(SELECT id FROM products WHERE NOT is_active LIMIT 20)"
                " UNION ALL (SELECT id FROM products LIMIT 20)",
            ]
            sets = [[r[0] for r in await conn.fetch(q)] for q in queries]
            assert all(sets[:4]) and len(sets[0]) == 400
            for ids in sets:
                got = [tuple(r) for r in await repo.name_neighbours(conn, ids)]
                assert got == [tuple(r) for r in await conn.fetch(plain, ids)]
        finally:
            await conn.close()

    run(go())
