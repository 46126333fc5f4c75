"""Shopper-mix benchmark: wrk walks a seeded list of many distinct URLs read from the service's own data.

    python -m loadtests.bench_mix [-d 10s] [--products 10000] [--urls 50000] [--seed 1]
    python -m loadtests.bench_mix --side-by-side     (after /work/shared/peer/measure.sh up)

The list mixes product list pages (category x sort x page, page_size 20-100, pages skewed to the first few,
some deep), details uniform over every active product, categories pages, searches (words of product names
and SKUs) and filters (in_stock, price ranges). Three runs, each on a freshly started service: cache on,
cache off (CACHE_ENABLED=false), and cache on while a separate process commits 20 stock updates per second
(one UPDATE per transaction; every commit moves the catalog version). With --side-by-side the seed's own
stack (PEER_DIR) runs the same mix restricted to what it supports (no search or filters; sort name/price),
alternating with ours, and ratios ours/seed are printed. The server is pinned to the first core, wrk (one
thread per remaining core), the writer, PostgreSQL and Redis to the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlencode

from loadtests.bench_http import ensure_wrk
from loadtests.service import free_port

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("bench_mix.lua")
PRODUCTS = "/api/consumer/products"
CATEGORIES = "/api/consumer/categories"
GZIP = "Accept-Encoding: gzip"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}

# Share of each kind of request. The side-by-side mix keeps only what the seed's stack serves, in the same
# proportions among themselves.
FULL_MIX = {"list": 0.45, "detail": 0.30, "categories": 0.08, "search": 0.10, "filter": 0.07}
COMMON_MIX = {"list": 0.54, "detail": 0.36, "categories": 0.10}
FULL_SORTS = ("name", "-name", "price", "-price", "newest")
COMMON_SORTS = ("name", "price")  # the seed's stack knows these two (and its default, by id)
LIST_PAGE_SIZES = (20, 24, 48, 50, 100)
LIST_PAGE_SIZE_WEIGHTS = (30, 15, 15, 25, 15)
FIRST_PAGES = (1, 2, 3, 4, 5)
FIRST_PAGE_WEIGHTS = (50, 18, 9, 5, 4)  # the remaining 14 %: a deep page, uniform past page 5
DEEP_SHARE = 0.14
ALL_CATEGORIES_SHARE = 0.3  # list pages without category_id

WRITES_PER_S = 20.0
_STOCK_UPDATE = "UPDATE products SET stock_on_hand = $1 WHERE id = $2"


# --- the URL list ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """What the URLs are made of, read from one service: every active id and some of its words."""

    product_ids: tuple[int, ...]
    skus: tuple[str, ...]
    words: tuple[str, ...]
    categories: tuple[tuple[int, int], ...]  # (id, product count), categories with products only
    prices: tuple[float, ...]  # sorted consumer prices
    total: int


def _get_json(url: str, timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def read_catalog(base: str) -> Catalog:
    """Every active product (pages of 200) and every category, through the public API of `base`."""
    items: list[dict] = []  # type: ignore[type-arg]
    page, pages = 1, 1
    while page <= pages:
        doc = _get_json(f"{base}{PRODUCTS}?page={page}&page_size=200&sort=name")
        items += doc["items"]
        pages, page = int(doc["pages"]), page + 1
    if not items:
        raise SystemExit(f"bench_mix: {base} has no products: seed the catalog first")
    categories = [
        (int(c["id"]), int(c["product_count"]))
        for c in _get_json(f"{base}{CATEGORIES}?page=1&page_size=200")["items"]
        if int(c.get("product_count") or 0) > 0
    ]
    words = {w.lower() for it in items for w in it["name"].split() if w.isalpha() and len(w) >= 4}
    return Catalog(
        product_ids=tuple(sorted(int(it["id"]) for it in items)),
        skus=tuple(sorted({it["sku"] for it in items if it.get("sku")})),
        words=tuple(sorted(words)),
        categories=tuple(sorted(categories)),
        prices=tuple(sorted(float(it["price"]) for it in items if it.get("price") is not None)),
        total=len(items),
    )


def _page(rnd: random.Random, pages: int) -> int:
    """Skewed to the first pages; DEEP_SHARE of draws a deep one (uniform past page 5)."""
    if pages > len(FIRST_PAGES) and rnd.random() < DEEP_SHARE:
        return rnd.randint(len(FIRST_PAGES) + 1, pages)
    page = rnd.choices(FIRST_PAGES, FIRST_PAGE_WEIGHTS)[0]
    return page if page <= pages else rnd.randint(1, pages)


def _price_range(rnd: random.Random, catalog: Catalog) -> dict[str, str]:
    prices = catalog.prices or (1.0, 100.0)
    lo, hi = sorted(rnd.sample(range(len(prices)), 2)) if len(prices) > 1 else (0, 0)
    shape = rnd.random()
    if shape < 0.2:
        return {"max_price": f"{math.ceil(prices[hi])}"}
    if shape < 0.4:
        return {"min_price": f"{math.floor(prices[lo])}"}
    return {"min_price": f"{math.floor(prices[lo])}", "max_price": f"{math.ceil(prices[hi])}"}


def _one(kind: str, rnd: random.Random, catalog: Catalog, sorts: Sequence[str]) -> str:
    """One request path of `kind`."""
    if kind == "detail":
        return f"{PRODUCTS}/{rnd.choice(catalog.product_ids)}"
    if kind == "categories":
        size = rnd.choice((20, 50, 100))
        pages = max(1, -(-len(catalog.categories) // size))
        page = 2 if pages > 1 and rnd.random() < 0.2 else 1
        return f"{CATEGORIES}?{urlencode({'page': page, 'page_size': size})}"
    size = rnd.choices(LIST_PAGE_SIZES, LIST_PAGE_SIZE_WEIGHTS)[0]
    query: dict[str, str | int] = {}
    count = catalog.total
    if kind == "list":
        if catalog.categories and rnd.random() >= ALL_CATEGORIES_SHARE:
            cat, count = rnd.choice(catalog.categories)
            query["category_id"] = cat
        query["sort"] = rnd.choice(sorts)
        query["page"] = _page(rnd, max(1, -(-count // size)))
    elif kind == "search":
        use_sku = catalog.skus and (not catalog.words or rnd.random() < 0.3)
        query["q"] = rnd.choice(catalog.skus) if use_sku else rnd.choice(catalog.words)
        query["sort"] = rnd.choice(sorts)
        query["page"] = 1 if rnd.random() < 0.85 else 2
        size = 20
    elif kind == "filter":
        shape = rnd.random()
        if shape < 0.35:
            query["in_stock"] = "true"
        elif shape < 0.7:
            query.update(_price_range(rnd, catalog))
        else:
            query["in_stock"] = "true"
            query.update(_price_range(rnd, catalog))
        if catalog.categories and rnd.random() < 0.5:
            query["category_id"] = rnd.choice(catalog.categories)[0]
        query["sort"] = rnd.choice(sorts)
        query["page"] = rnd.choices((1, 2, 3), (70, 20, 10))[0]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    query["page_size"] = size
    return f"{PRODUCTS}?{urlencode(query)}"


def build_urls(
    catalog: Catalog,
    count: int,
    seed: int = 1,
    mix: dict[str, float] | None = None,
    sorts: Sequence[str] = FULL_SORTS,
) -> list[tuple[str, str]]:
    """`count` (kind, path) pairs drawn with `seed`: the same catalog and seed give the same list."""
    shares = mix or FULL_MIX
    kinds, weights = list(shares), list(shares.values())
    rnd = random.Random(seed)
    drawn = rnd.choices(kinds, weights, k=count)
    return [(kind, _one(kind, rnd, catalog, sorts)) for kind in drawn]


def describe(urls: Sequence[tuple[str, str]]) -> str:
    """One line: requests, distinct URLs, share of each kind."""
    kinds = Counter(kind for kind, _ in urls)
    shares = ", ".join(f"{k} {n / len(urls):.0%}" for k, n in kinds.most_common())
    return f"{len(urls):,} requests, {len({p for _, p in urls}):,} distinct URLs ({shares})"


def write_list(urls: Sequence[tuple[str, str]], path: Path) -> Path:
    """The paths, one per line, for bench_mix.lua."""
    path.write_text("".join(p + "\n" for _, p in urls), encoding="ascii")
    return path


# --- pinning, servers -----------------------------------------------------------------------------------


def split_cores() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, load cores): the first allowed core for the server, the others for everything else;
    (None, None) when there is only one core or no affinity API (no pinning)."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return {cores[0]}, set(cores[1:])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                tree.setdefault(ppid, []).append(int(entry))
    return tree


def pin_tree(root: int, cores: set[int]) -> int:
    """Move every thread of `root` and of its Python descendants to `cores` (PostgreSQL and Redis children
    keep the load cores they were started on); returns the number of processes moved."""
    tree, todo, moved = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        with contextlib.suppress(OSError):
            if not Path(f"/proc/{pid}/comm").read_text().startswith(("python", "uvicorn")):
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cores)
            moved += 1
    return moved


class Server:
    """One server process group started for one run (inheriting the load cores), then moved to its core."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, ready_path: str, log: Path):
        self.name, self.cmd, self.env, self.cwd, self.log = name, cmd, env, cwd, log
        self.port = int(env["PORT"]) if "PORT" in env else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, server_cores: set[int] | None, timeout: float = 300) -> Server:
        """Start and wait until `ready_path` answers 200 (a first start may seed the catalog)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [a.replace("{port}", str(self.port)) for a in self.cmd],
                env={k: v.replace("{port}", str(self.port)) for k, v in self.env.items()}
                | {"PORT": str(self.port)},
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench_mix: {self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"bench_mix: {self.name} not ready within {timeout:.0f}s; see {self.log}")
            time.sleep(0.2)
        if server_cores:
            pin_tree(self.proc.pid, server_cores)
        return self

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL what is left after 20 s."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


# --- wrk ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One measured wrk run of the mix."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int  # wrk's "Non-2xx or 3xx responses" (no conditional requests are sent: all non-2xx)
    socket_errors: int
    hits: float | None = None  # our cache: share of lookups answered without a query (one process only)
    note: str = ""


def _latency(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(name: str, text: str) -> Result:
    """The figures of `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    return Result(
        name,
        float(rps.group(1)) if rps else 0.0,
        _latency(text, "50"),
        _latency(text, "99"),
        int(total.group(1)) if total else 0,
        int(non2xx.group(1)) if non2xx else 0,
        errors,
    )


def wrk_command(
    base: str, url_list: Path, threads: int, conns: int, duration: str, latency: bool
) -> list[str]:
    """wrk walking `url_list` (timeout 10 s: a slow cold page must not be cut off and asked again)."""
    cmd = [ensure_wrk(), f"-t{threads}", f"-c{max(conns, threads)}", f"-d{duration}", "--timeout", "10s"]
    cmd += ["-H", GZIP, "-s", str(LUA)] + (["--latency"] if latency else [])
    return [*cmd, base, "--", str(url_list), str(threads)]


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies of each core, from /proc/stat (empty where there is none)."""
    ticks: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in values[:8]]
                ticks[name] = (sum(v) - v[3] - v[4], sum(v))  # all but idle and iowait
    return ticks


def busy(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> str:
    """`cpu0 97% cpu1 64%` between two cpu_ticks() snapshots."""
    parts = []
    for name, (b1, t1) in after.items():
        b0, t0 = before.get(name, (0, 0))
        if t1 > t0:
            parts.append(f"{name} {100 * (b1 - b0) / (t1 - t0):.0f}%")
    return " ".join(parts)


def run_wrk(
    name: str, base: str, url_list: Path, threads: int, conns: int, duration: str, log: Path
) -> Result:
    """One measured wrk run (its output appended to `log`); the note says how busy each core was."""
    cpu0 = cpu_ticks()
    cmd = wrk_command(base, url_list, threads, conns, duration, True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    cpu = busy(cpu0, cpu_ticks())
    with log.open("a") as f:
        f.write(f"== {name}\n{out.stdout}{out.stderr}\n")
    if out.returncode != 0 or "Requests/sec" not in out.stdout:
        raise SystemExit(f"bench_mix: wrk failed: {out.stderr.strip() or out.stdout.strip()}")
    return replace(parse_wrk(name, out.stdout), note=cpu)


def warm_up(base: str, url_list: Path, threads: int, conns: int, duration: str) -> None:
    """An unmeasured run of the same list, then a pause for the server to finish what wrk abandoned."""
    if duration in ("", "0", "0s"):
        return
    subprocess.run(
        wrk_command(base, url_list, threads, conns, duration, False), capture_output=True, check=False
    )
    time.sleep(1)


# --- the writer -----------------------------------------------------------------------------------------


async def _write(dsn: str, rate: float, seconds: float, seed: int) -> dict[str, float]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM products WHERE is_active")]
        rnd = random.Random(seed)
        print("ready", flush=True)
        start = time.perf_counter()
        commits, late_max = 0, 0.0
        while True:
            due = start + commits / rate  # a fixed schedule: a slow commit is caught up, not dropped
            now = time.perf_counter()
            if due - start >= seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            else:
                late_max = max(late_max, now - due)
            # Autocommit: each statement is its own transaction, as an ERP sync would send them.
            await conn.execute(_STOCK_UPDATE, rnd.randint(0, 500), rnd.choice(ids))
            commits += 1
        elapsed = time.perf_counter() - start
        return {
            "commits": commits,
            "seconds": elapsed,
            "rate": commits / elapsed,
            "late_max_ms": late_max * 1e3,
        }
    finally:
        await conn.close()


def writer_main(dsn: str, rate: float, seconds: float, seed: int) -> int:
    """The writer process: prints `ready`, commits for `seconds`, prints its figures as JSON."""
    print(json.dumps(asyncio.run(_write(dsn, rate, seconds, seed))), flush=True)
    return 0


class Writer:
    """The writer as a separate process (inheriting the load cores)."""

    def __init__(self, dsn: str, rate: float, seconds: float, seed: int) -> None:
        cmd = [sys.executable, "-m", "loadtests.bench_mix", "--writer", dsn]
        cmd += ["--writer-rate", str(rate), "--writer-seconds", str(seconds), "--seed", str(seed)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise SystemExit(f"bench_mix: the writer did not start ({line or 'no output'})")

    def result(self) -> dict[str, float]:
        """Wait for the writer's figures."""
        out, _ = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0:
            raise SystemExit(f"bench_mix: the writer failed ({self.proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- the sides ------------------------------------------------------------------------------------------


def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)?", duration)
    if not m:
        raise SystemExit(f"bench_mix: duration {duration!r}: use e.g. 10s")
    return float(m.group(1)) * (60 if m.group(2) == "m" else 1)


@dataclass
class Side:
    """How to start one stack for a run, its database and its Redis databases to empty before a run."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    ready_path: str
    dsn: str
    redis_flush: tuple[str, ...] = ()

    def server(self, cache: bool, log: Path) -> Server:
        """A Server for one run with CACHE_ENABLED=`cache`."""
        return Server(
            self.name,
            self.cmd,
            {**self.env, "CACHE_ENABLED": str(cache).lower()},
            self.cwd,
            self.ready_path,
            log,
        )


# Rate limits stay on, as in production, with a policy wrk (one address) never reaches (as side_by_side.sh).
_OUT_OF_REACH = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_CATALOG": "100000000/60s;burst=1000000"}


def _base_env() -> dict[str, str]:
    dropped = ("DATABASE_URL", "REDIS_URL", "DATA_DIR", "UPLOADS_DIR", "PORT", "HOST", "PUBLIC_BASE_URL")
    return {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("CACHE_")}


def ours_embedded(data_dir: Path, products: int, processes: int) -> Side:
    """Our service on its embedded PostgreSQL/Redis in `data_dir` (seeded on the first start, reused)."""
    env = _base_env() | _OUT_OF_REACH
    env.update(DATA_DIR=str(data_dir), UPLOADS_DIR=str(data_dir / "uploads"), HOST="127.0.0.1")
    env.update(PROCESSES=str(processes), LOG_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "server", "serve", "--seed-if-empty", str(products)]
    return Side("ours", cmd, env, ROOT, "/ready", f"postgresql://postgres@/catalog?host={data_dir / 'pg'}")


def ours_on_peer(scratch: Path, products: int, processes: int, redis_db: int) -> Side:
    """Our service on the peer's PostgreSQL (database `proj`) and Redis (db `redis_db`): side_by_side.sh."""
    dsn = f"postgresql://postgres@/proj?host={scratch}&port=55433"
    env = _base_env() | _OUT_OF_REACH
    env.update(DATABASE_URL=dsn, REDIS_URL=f"redis://127.0.0.1:56379/{redis_db}", HOST="127.0.0.1")
    env.update(UPLOADS_DIR=str(scratch / "proj-uploads"), PROCESSES=str(processes), LOG_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "server", "serve", "--seed-if-empty", str(products)]
    return Side("ours", cmd, env, ROOT, "/ready", dsn, (f"redis://127.0.0.1:56379/{redis_db}",))


def peer(peer_dir: Path, scratch: Path) -> Side:
    """The seed's stack (uvicorn, one worker) from `peer_dir`, its venv and data under `scratch`."""
    uvicorn = scratch / "venv" / "bin" / "uvicorn"
    if not uvicorn.exists() or not (peer_dir / "app.py").exists():
        raise SystemExit(f"bench_mix: no peer: run {peer_dir}/measure.sh up first (PEER_DIR, SCRATCH)")
    dsn = f"postgresql://postgres@/peer?host={scratch}&port=55433"
    env = _base_env()
    env.update(
        DATABASE_URL=dsn, UPLOADS_DIR=str(scratch / "uploads"), PUBLIC_BASE_URL="http://127.0.0.1:{port}"
    )
    cmd = [str(uvicorn), "app:app", "--host", "127.0.0.1", "--port", "{port}", "--loop", "uvloop"]
    cmd += ["--http", "httptools", "--workers", "1", "--no-access-log", "--log-level", "warning"]
    # Its page cache (db 0) and limiter counters (db 1), emptied so every run starts cold like ours.
    flush = ("redis://127.0.0.1:56379/0", "redis://127.0.0.1:56379/1")
    return Side("seed", cmd, env, peer_dir, CATEGORIES, dsn, flush)


async def _ensure_database(scratch: Path, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@/postgres?host={scratch}&port=55433")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _flush(urls: Sequence[str]) -> None:
    import redis

    for url in urls:
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()


# --- runs -----------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What every run shares."""

    threads: int
    conns: int
    duration: str
    warmup: str
    server_cores: set[int] | None
    logs: Path
    seed: int


def measure(
    side: Side, cache: bool, url_list: Path, plan: Plan, label: str, writer_rate: float = 0.0
) -> Result:
    """Start `side`, warm up on the list, measure (with the writer when `writer_rate`), stop."""
    _flush(side.redis_flush)
    server = side.server(cache, plan.logs / f"{side.name}.log").start(plan.server_cores)
    try:
        warm_up(server.url, url_list, plan.threads, plan.conns, plan.warmup)
        # Our cache's counters, when one process answers every request (the seed's stack has none).
        counted = side.name == "ours" and side.env.get("PROCESSES") == "1"
        before = cache_counters(server.url) if counted else None
        writer = Writer(side.dsn, writer_rate, _seconds(plan.duration), plan.seed) if writer_rate else None
        result = run_wrk(
            label, server.url, url_list, plan.threads, plan.conns, plan.duration, plan.logs / "wrk.txt"
        )
        notes = [result.note]
        if writer is not None:
            w = writer.result()
            notes.append(
                f"writer {w['commits']:.0f} commits in {w['seconds']:.1f} s = {w['rate']:.1f}/s "
                f"(target {writer_rate:g}/s, max lateness {w['late_max_ms']:.0f} ms)"
            )
        if before is not None:
            after = cache_counters(server.url)
            result = replace(result, hits=hit_share(before, after))
            if l2_errors := after["l2_errors"] - before["l2_errors"]:
                notes.append(f"{l2_errors} Redis cache errors (L2 skipped for a while after each)")
            if writer is not None:
                notes.append(f"catalog version +{after['version'] - before['version']}")
        result = replace(result, note="; ".join(notes))
    finally:
        server.stop()
    print(f"  {render_row(result)}", file=sys.stderr, flush=True)
    return result


def cache_counters(base: str) -> dict[str, int]:
    """Our cache's counters and catalog version from /ready (of the process that answers: PROCESSES=1)."""
    doc = _get_json(f"{base}/ready")
    return {**doc.get("cache", {}), "version": int(doc.get("catalog", {}).get("version", 0))}


def hit_share(before: dict[str, int], after: dict[str, int]) -> float | None:
    """Share of cache lookups between the two snapshots that needed no query (None: no lookups)."""
    lookups = (after["l1_hits"] + after["l1_misses"]) - (before["l1_hits"] + before["l1_misses"])
    fills = after["fills"] - before["fills"]
    return 1 - fills / lookups if lookups > 0 else None


def catalog_of(side: Side, plan: Plan) -> Catalog:
    """Start `side` once (seeding it if empty) and read its catalog."""
    server = side.server(True, plan.logs / f"{side.name}.log").start(plan.server_cores)
    try:
        return read_catalog(server.url)
    finally:
        server.stop()


def url_list(
    name: str, catalog: Catalog, plan: Plan, count: int, mix: dict[str, float], sorts: Sequence[str]
) -> Path:
    """Draw the list for `catalog`, say what it holds, write it for wrk."""
    urls = build_urls(catalog, count, plan.seed, mix, sorts)
    print(f"{name}: {catalog.total:,} products, {len(catalog.categories)} categories; mix: {describe(urls)}")
    return write_list(urls, plan.logs / f"{name.replace(' ', '-')}-urls.txt")


_ROW = "{:<28} {:>9} {:>8} {:>8} {:>9} {:>8} {:>6}  {}"


def render_row(r: Result) -> str:
    """One table row."""
    return _ROW.format(
        r.name,
        f"{r.rps:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        f"{r.non_2xx:,}",
        r.socket_errors,
        "-" if r.hits is None else f"{r.hits:.0%}",
        r.note,
    )


def render(results: Sequence[Result], title: str) -> str:
    """Table: run, req/s, p50, p99, non-2xx, socket errors, our cache's hit share, note."""
    head = _ROW.format("run", "req/s", "p50 ms", "p99 ms", "non-2xx", "sock err", "hits", "")
    return "\n".join([title, head.rstrip(), *(render_row(r).rstrip() for r in results)])


def render_ratios(pairs: dict[str, list[tuple[Result, Result]]]) -> str:
    """Side-by-side table: seed and ours per pass, ratio of req/s (median over passes) and of p99."""
    lines = ["", "side by side (same mix, same machine, alternating; ratio = ours / seed):"]
    head = ("cache", "seed req/s (p99 ms)", "ours req/s (p99 ms)", "req/s ratio", "p99 ratio")
    lines.append("{:<6} {:>28} {:>28} {:>12} {:>10}".format(*head))
    for cache, runs in pairs.items():
        seed_s = " ".join(f"{s.rps:,.0f} ({s.p99_ms:.0f})" for s, _ in runs)
        ours_s = " ".join(f"{o.rps:,.0f} ({o.p99_ms:.0f})" for _, o in runs)
        rps = statistics.median(o.rps / s.rps for s, o in runs if s.rps)
        p99 = statistics.median(o.p99_ms / s.p99_ms for s, o in runs if s.p99_ms)
        lines.append(f"{cache:<6} {seed_s:>28} {ours_s:>28} {rps:>11.1f}x {p99:>9.2f}x")
    bad = [r for runs in pairs.values() for pair in runs for r in pair if r.non_2xx or r.socket_errors]
    if bad:
        lines.append("some runs had non-2xx answers or socket errors: see the rows above")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_mix", description=__doc__.splitlines()[0])
    p.add_argument("-d", "--duration", default="10s", help="each measured run (default 10s)")
    p.add_argument("--warmup", default="3s", help="unmeasured run of the same list before each (0: none)")
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("--products", type=int, default=10_000, help="seeded when the database is empty")
    p.add_argument(
        "--processes", type=int, default=1, help="our service's PROCESSES (all on the server core)"
    )
    p.add_argument("--urls", type=int, default=50_000, help="length of the URL list (drawn with repeats)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--runs",
        type=lambda v: [r for r in v.split(",") if r],
        default=list(RUNS),
        help="our runs, in order (default on,off,writer)",
    )
    p.add_argument("--writer-rate", type=float, default=WRITES_PER_S, help="commits/s of the writer run")
    p.add_argument("--side-by-side", action="store_true", help="also the seed's stack, same mix, ratios")
    p.add_argument("--passes", type=int, default=1, help="side-by-side passes (ratios: median)")
    p.add_argument("--peer-dir", default=os.environ.get("PEER_DIR", str(ROOT.parent / "shared" / "peer")))
    p.add_argument("--scratch", default=os.environ.get("SCRATCH", "/tmp/peer"))
    p.add_argument("--redis-db", type=int, default=2, help="our Redis db on the peer's Redis (side by side)")
    p.add_argument("--out", type=Path, help="logs folder (default loadtests/reports/bench-mix-<timestamp>)")
    p.add_argument("--writer", metavar="DSN", help=argparse.SUPPRESS)
    p.add_argument("--writer-seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.writer:
        return writer_main(args.writer, args.writer_rate, args.writer_seconds, args.seed)
    _seconds(args.duration)
    if unknown := set(args.runs) - set(RUNS):
        p.error(f"--runs: unknown {sorted(unknown)}; choose from {','.join(RUNS)}")
    ensure_wrk()
    server_cores, load_cores = split_cores()
    if load_cores:
        os.sched_setaffinity(0, load_cores)  # wrk, the writer and the started servers inherit these
    threads = len(load_cores) if load_cores else 1
    out = args.out or ROOT / "loadtests" / "reports" / f"bench-mix-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench_mix: server logs, URL lists and wrk output in {out}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-mix-") as tmp:
        plan = Plan(threads, args.connections, args.duration, args.warmup, server_cores, out, args.seed)
        pin = (
            f"server on core {sorted(server_cores)}, wrk/writer/PostgreSQL/Redis on {sorted(load_cores)}"
            if server_cores and load_cores
            else "not pinned (one core)"
        )
        conf = f"wrk -t{threads} -c{args.connections} -d{args.duration} (warm-up {args.warmup}), {pin}"
        if args.side_by_side:
            scratch = Path(args.scratch)
            seed_side = peer(Path(args.peer_dir).resolve(), scratch)
            asyncio.run(_ensure_database(scratch, "proj"))
            (scratch / "proj-uploads").mkdir(exist_ok=True)
            ours = ours_on_peer(scratch, args.products, args.processes, args.redis_db)
            return side_by_side(ours, seed_side, plan, args, conf)
        data_dir = Path(tmp) / "data"
        ours = ours_embedded(data_dir, args.products, args.processes)
        mix = url_list("ours", catalog_of(ours, plan), plan, args.urls, FULL_MIX, FULL_SORTS)
        results = our_runs(ours, mix, plan, args.runs, args.writer_rate, "")
        print(render(results, f"\nshopper mix, {conf}; our service, PROCESSES={args.processes}"), flush=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


RUNS = ("on", "off", "writer")


def our_runs(
    ours: Side, urls: Path, plan: Plan, runs: Sequence[str], rate: float, prefix: str
) -> list[Result]:
    """The selected runs of our service on `urls`: cache on, cache off, cache on with the writer."""
    out = []
    for run in runs:
        if run == "on":
            out.append(measure(ours, True, urls, plan, f"{prefix}cache on"))
        elif run == "off":
            out.append(measure(ours, False, urls, plan, f"{prefix}cache off"))
        else:
            out.append(measure(ours, True, urls, plan, f"{prefix}cache on + writer {rate:g}/s", rate))
    return out


def side_by_side(ours: Side, seed_side: Side, plan: Plan, args: argparse.Namespace, conf: str) -> int:
    """The seed's stack and ours alternating on the common mix, then our full mix with and without writer."""
    seed_list = url_list("seed", catalog_of(seed_side, plan), plan, args.urls, COMMON_MIX, COMMON_SORTS)
    catalog = catalog_of(ours, plan)
    common_list = url_list("ours common", catalog, plan, args.urls, COMMON_MIX, COMMON_SORTS)
    full_list = url_list("ours full", catalog, plan, args.urls, FULL_MIX, FULL_SORTS)
    pairs: dict[str, list[tuple[Result, Result]]] = {"on": [], "off": []}
    rows: list[Result] = []
    for n in range(1, args.passes + 1):
        for cache, key in ((True, "on"), (False, "off")):
            s = measure(seed_side, cache, seed_list, plan, f"seed, cache {key} #{n}")
            o = measure(ours, cache, common_list, plan, f"ours, cache {key} #{n}")
            pairs[key].append((s, o))
            rows += [s, o]
    rows += our_runs(ours, full_list, plan, args.runs, args.writer_rate, "ours full mix, ")
    print(
        render(
            rows,
            f"\nshopper mix side by side, {conf}; ours PROCESSES={args.processes}, seed 1 uvicorn worker",
        )
    )
    print(render_ratios(pairs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
