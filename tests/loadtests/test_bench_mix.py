"""The shopper-mix benchmark (loadtests/bench_mix.py): the URL list's shape, its validity against the real
service, the wrk Lua script walking it, and the writer's schedule. Shapes and counts, never timings."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services

ROOT = Path(__file__).resolve().parents[2]
WRITER = (sys.executable, "-m", "loadtests.mix_writer")
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")


def load(name: str = "bench_mix") -> ModuleType:
    """loadtests.<name> of this tree (the repo root is not on sys.path under pytest; `loadtests` here is
    also this test folder's name, a namespace portion that the regular package outranks)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module(f"loadtests.{name}")
    assert Path(module.__file__ or "").parent == ROOT / "loadtests"
    return module


def synthetic_catalog(bm: ModuleType) -> Any:
    """1,000 products with gaps in their ids, 30 categories of various sizes, words, SKUs, prices."""
    ids = tuple(range(7, 7 + 3 * 1000, 3))
    categories = tuple((100 + n, 5 + 17 * n) for n in range(30))
    return bm.Catalog(
        product_ids=ids,
        skus=tuple(f"SKU-{i:05d}" for i in ids),
        words=("apple", "basmati", "cardamom", "dates", "lentils", "olive", "saffron", "tahini"),
        categories=categories,
        prices=tuple(sorted(0.5 + (i % 400) * 1.25 for i in ids)),
        total=len(ids),
    )


def test_the_mix_has_its_shares_spread_and_page_skew() -> None:
    bm = load("mix_urls")
    catalog = synthetic_catalog(bm)
    urls = bm.build_urls(catalog, 20_000, seed=3)
    assert len(urls) == 20_000
    kinds = Counter(kind for kind, _ in urls)
    for kind, share in bm.FULL_MIX.items():
        assert abs(kinds[kind] / len(urls) - share) < 0.015, (kind, kinds[kind])
    assert len({path for _, path in urls}) > 4_000  # many distinct URLs, not a handful of hot ones

    details = Counter(int(path.rsplit("/", 1)[1]) for kind, path in urls if kind == "detail")
    assert set(details) <= set(catalog.product_ids)
    assert len(details) > 0.98 * len(catalog.product_ids)  # uniform over ALL ids: ~6 draws each
    assert max(details.values()) < 20

    lists = [parse_qs(urlsplit(path).query) for kind, path in urls if kind == "list"]
    assert all(20 <= int(q["page_size"][0]) <= 100 for q in lists)
    pages = Counter(int(q["page"][0]) for q in lists)
    assert 0.4 < pages[1] / len(lists) < 0.6  # skewed to the first pages
    assert 0.05 < sum(n for p, n in pages.items() if p > 5) / len(lists) < 0.2  # some deep ones
    assert {q["sort"][0] for q in lists} == set(bm.FULL_SORTS)
    counts = dict(catalog.categories)
    for q in lists:
        if "category_id" in q:  # never past the category's last page
            size, cat = int(q["page_size"][0]), int(q["category_id"][0])
            assert int(q["page"][0]) <= max(1, -(-counts[cat] // size))
    assert 0.6 < sum("category_id" in q for q in lists) / len(lists) < 0.8

    searches = [parse_qs(urlsplit(path).query)["q"][0] for kind, path in urls if kind == "search"]
    assert {s for s in searches if s in catalog.words} and {s for s in searches if s in catalog.skus}
    filters = [parse_qs(urlsplit(path).query) for kind, path in urls if kind == "filter"]
    assert all("in_stock" in q or "min_price" in q or "max_price" in q for q in filters)
    assert any("in_stock" in q for q in filters) and any("min_price" in q for q in filters)

    assert all(bm.kind_of(path) == kind for kind, path in urls)  # per-kind runs split the list back
    assert urls == bm.build_urls(catalog, 20_000, seed=3)  # deterministic
    assert urls != bm.build_urls(catalog, 20_000, seed=4)


def test_the_side_by_side_mix_uses_only_what_the_seed_stack_serves() -> None:
    bm = load("mix_urls")
    urls = bm.build_urls(synthetic_catalog(bm), 5_000, 1, bm.COMMON_MIX, bm.COMMON_SORTS)
    assert {kind for kind, _ in urls} == {"list", "detail", "categories"}
    for _, path in urls:
        query = parse_qs(urlsplit(path).query)
        assert set(query) <= {"page", "page_size", "category_id", "sort"}, path
        assert query.get("sort", ["name"])[0] in ("name", "price")


@pytest.fixture(scope="module")
def one_process(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The server with one process: /ready's cache counters then see every request."""
    proc = ServerProcess(database, services, tmp_path_factory.mktemp("srv"), PROCESSES="1").start()
    yield proc
    proc.stop()


def test_the_catalog_is_read_whole_and_every_generated_url_answers_200(
    one_process: ServerProcess, database: Database
) -> None:
    bm = load("mix_urls")
    catalog = bm.read_catalog(one_process.base_url)
    active = asyncio.run(database.fetch("SELECT id FROM products WHERE is_active ORDER BY id"))
    assert catalog.product_ids == tuple(r["id"] for r in active)
    assert catalog.categories and catalog.words and catalog.skus and catalog.prices
    urls = bm.build_urls(catalog, 400, seed=5)
    assert {kind for kind, _ in urls} == set(bm.FULL_MIX)
    with httpx.Client(base_url=one_process.base_url, timeout=30) as client:
        statuses = {path: client.get(path).status_code for _, path in urls}
    assert {p: s for p, s in statuses.items() if s != 200} == {}


@needs_wrk
def test_wrk_walks_the_whole_list_and_counts_non_2xx(
    one_process: ServerProcess, database: Database, tmp_path: Path
) -> None:
    bm = load()
    ids = [r["id"] for r in asyncio.run(database.fetch("SELECT id FROM products WHERE is_active LIMIT 60"))]
    listed = bm.write_list([("detail", f"/api/consumer/products/{i}") for i in ids], tmp_path / "ok.txt")
    # A commit that changes every listed product: nothing cached before counts for them (their row versions
    # moved), so every listed URL must miss once.
    version = bm.cache_counters(one_process.base_url)["version"]
    asyncio.run(
        database.execute("UPDATE products SET stock_on_hand = stock_on_hand + 1 WHERE id = ANY($1)", ids)
    )
    deadline = time.monotonic() + 10
    before = bm.cache_counters(one_process.base_url)
    while before["version"] == version and time.monotonic() < deadline:
        time.sleep(0.01)
        before = bm.cache_counters(one_process.base_url)
    assert before["version"] != version
    ok = bm.run_wrk("ok", one_process.base_url, listed, 2, 4, "1s", tmp_path / "wrk.txt")
    after = bm.cache_counters(one_process.base_url)
    assert ok.requests > len(ids) and ok.non_2xx == 0 and ok.socket_errors == 0
    # Each listed product was asked for: one cache miss per distinct URL (a script repeating one URL: 1).
    assert after["l1_misses"] - before["l1_misses"] >= len(ids)
    missing = bm.write_list([("detail", "/api/consumer/products/2000000000")], tmp_path / "missing.txt")
    gone = bm.run_wrk("missing", one_process.base_url, missing, 1, 2, "1s", tmp_path / "wrk.txt")
    assert gone.requests > 0 and gone.non_2xx == gone.requests  # 404s are counted


def test_the_writer_commits_on_its_fixed_schedule_and_every_commit_is_served(
    one_process: ServerProcess, database: Database
) -> None:
    load("mix_writer")  # this tree's, run below as its own process as the benchmark runs it
    before = asyncio.run(database.fetch("SELECT id, stock_on_hand FROM products WHERE is_active"))
    args = ["--rate", "40", "--seconds", "0.5", "--seed", "2", "--check-url", one_process.base_url]
    out = subprocess.run(
        [*WRITER, database.url, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split()[0] == "ready"
    figures = json.loads(out.stdout.splitlines()[-1])
    assert figures["commits"] == 20  # 40/s for 0.5 s, none dropped
    assert figures["never_served"] == 0  # the service showed every committed stock (checked per commit)
    after = dict(asyncio.run(database.fetch("SELECT id, stock_on_hand FROM products WHERE is_active")))
    assert sum(after[r["id"]] != r["stock_on_hand"] for r in before) > 0


@needs_wrk
def test_make_bench_mix_end_to_end_on_a_small_catalog(tmp_path: Path) -> None:
    args = ["--products", "200", "--urls", "2000", "-d", "1s", "--warmup", "0", "--runs", "on,writer"]
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_mix", *args, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split("  ")[0].strip(): line for line in out.stdout.splitlines()}
    assert "cache on" in rows and "cache on + writer 20/s" in rows, out.stdout
    assert "writer 20 commits" in rows["cache on + writer 20/s"]  # 20/s for the 1 s run
    assert "0 never" in rows["cache on + writer 20/s"]
    assert re.search(r"mix: 2,000 requests, [\d,]+ distinct URLs \(list", out.stdout)
    assert (tmp_path / "ours-urls.txt").read_text().count("\n") == 2000
    assert "Requests/sec" in (tmp_path / "wrk.txt").read_text()
