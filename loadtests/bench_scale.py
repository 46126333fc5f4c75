"""Cold per-request latency on a large catalog: each list filter/sort, a deep page, categories, searches.

Sequential requests (one keep-alive connection, no concurrency), cache off: what one shopper waits for
when nothing is cached. For each URL: the client's median and p99, and the server's own split from
Server-Timing (app = the whole handler, db = its queries), so a slow line shows whether PostgreSQL or the
process is the cost. `varied` draws a new filter (category x minimum price x sort x page) per request, so
no filter is answered twice; `first search` sends a search term no request sent before (one of the
274 pieces of 3 to 6 characters of the demo catalog's English and Arabic words: each matches thousands of
products, and none is in the process's memo of search hits yet). Without --url it starts a throw-away
service (embedded PostgreSQL/Redis, PROCESSES=1, CACHE_ENABLED=false, SERVER_TIMING=true) seeded with
--products, and also reports the time to ready, the index build and the RSS per process.

    python -m loadtests.bench_scale [--products 1000000] [--requests 200] [--url URL]
"""

from __future__ import annotations

import argparse
import functools
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from loadtests.service import LocalService
from server import seed
from server.catalog.search import normalise, searchable

PRODUCTS = "/api/consumer/products"
_TIMING = re.compile(r"(db|app);dur=([0-9.]+)")


def fixed_urls(department: int) -> dict[str, str]:
    """The issue's cold-path lines (offset 100,000 for the deep page)."""
    return {
        "list default": f"{PRODUCTS}?page_size=50",
        "sort=-price": f"{PRODUCTS}?sort=-price&page_size=50",
        "sort=newest": f"{PRODUCTS}?sort=newest&page_size=50",
        "in_stock+min_price=10": f"{PRODUCTS}?in_stock=true&min_price=10&page_size=50",
        "category (department)": f"{PRODUCTS}?category_id={department}&page_size=50",
        "deep page (offset 100k)": f"{PRODUCTS}?page=2001&page_size=50",
        "categories": "/api/consumer/categories",
        "q=juice (repeated)": f"{PRODUCTS}?q=juice&page_size=50",
    }


def common_terms(rng: random.Random) -> list[str]:
    """Every 3- to 6-character piece of the demo catalog's product words (server/seed.py), shuffled."""
    words = {normalise(w) for pair in (*seed._ADJECTIVES, *seed._NOUNS) for w in pair}
    terms = {w[i : i + n] for w in words for n in range(3, 7) for i in range(len(w) - n + 1)}
    ordered = sorted(t for t in terms if " " not in t and searchable(t))
    rng.shuffle(ordered)
    return ordered


def first_searches(rng: random.Random) -> Callable[[], str]:
    """A term never sent before per request (after 274 requests, the same terms with another sort)."""
    terms = common_terms(rng)
    sorts = ["name", "-name", "price", "-price", "newest"]
    count = iter(range(10**9))

    def url() -> str:
        k = next(count)
        return f"{PRODUCTS}?q={terms[k % len(terms)]}&sort={sorts[k // len(terms) % 5]}&page_size=50"

    return url


def varied(categories: list[int], rng: random.Random) -> Callable[[], str]:
    """A new filter per request: category x minimum price x sort x page."""
    sorts = ["name", "-name", "price", "-price", "newest"]

    def url() -> str:
        return (
            f"{PRODUCTS}?category_id={rng.choice(categories)}&min_price={rng.randint(1, 4000)}"
            f"&sort={rng.choice(sorts)}&page={rng.randint(1, 20)}&page_size=50"
        )

    return url


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def measure(
    client: httpx.Client, next_url: Callable[[], str], requests: int, budget_s: float
) -> dict[str, float]:
    """Median and p99 (ms) of the client's latency and of Server-Timing's app and db durations, over
    `requests` requests or `budget_s` seconds, whichever ends first (a slow SQL line would take minutes)."""
    client.get(next_url())  # the first of a kind prepares its statements: not what a shopper meets
    wall: list[float] = []
    server: dict[str, list[float]] = {"app": [], "db": []}
    deadline = time.monotonic() + budget_s
    while len(wall) < requests and time.monotonic() < deadline:
        started = time.perf_counter()
        resp = client.get(next_url())
        wall.append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"{resp.request.url}: HTTP {resp.status_code} {resp.text[:200]}")
        for name, dur in _TIMING.findall(resp.headers.get("server-timing", "")):
            server[name].append(float(dur))
    out = {"n": len(wall), "p50": statistics.median(wall), "p99": pct(wall, 0.99)}
    for name, values in server.items():
        if values:
            out[f"{name}_p50"], out[f"{name}_p99"] = statistics.median(values), pct(values, 0.99)
    return out


def tree_rss_mb(pid: int) -> dict[int, float]:
    """RSS (MB) of a process and its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        rss = re.search(r"VmRSS:\s+(\d+) kB", status)
        out[p] = int(rss.group(1)) / 1024 if rss else 0.0
    return out


def run(url: str, requests: int, budget_s: float, seed: int) -> None:
    """Print one line per URL kind."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as client:
        ready = client.get("/ready").json()
        index = ready.get("index")
        if index:
            print(f"index: {index['products']:,} products, {index['memory_bytes'] / 1e6:.0f} MB in the core")
        cats = client.get("/api/consumer/categories", params={"page_size": 200}).json()["items"]
        departments = [c["id"] for c in cats if c["parent_id"] is None] or [c["id"] for c in cats]
        all_categories = [c["id"] for c in cats]
        heads = ("p50 ms", "p99 ms", "app p50", "app p99", "db p50", "db p99")
        print(f"{'request':<26}{'n':>6}" + "".join(f"{h:>9}" for h in heads))
        kinds: dict[str, Callable[[], str]] = {
            name: functools.partial(str, u) for name, u in fixed_urls(departments[0]).items()
        }
        kinds["varied filters"] = varied(all_categories, rng)
        kinds["first search (new term)"] = first_searches(rng)
        for name, next_url in kinds.items():
            m = measure(client, next_url, requests, budget_s)
            print(
                f"{name:<26}{m['n']:>6.0f}{m['p50']:>9.1f}{m['p99']:>9.1f}"
                + "".join(
                    f"{m.get(k, float('nan')):>9.1f}" for k in ("app_p50", "app_p99", "db_p50", "db_p99")
                ),
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running service (else one is started and seeded)")
    parser.add_argument("--products", type=int, default=1_000_000, help="catalog size of a started service")
    parser.add_argument("--requests", type=int, default=200, help="requests per URL kind")
    parser.add_argument("--budget", type=float, default=30, help="seconds at most per URL kind")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.url:
        run(args.url, args.requests, args.budget, args.seed)
        return 0
    env = {"CACHE_ENABLED": "false", "CATALOG_INDEX": "true", "SERVER_TIMING": "true"}
    service = LocalService(products=args.products, processes=1, env=env)
    started = time.monotonic()
    # Seeding 1M products takes minutes (COPY, progress in the service's log).
    service.start(timeout=max(180, args.products / 1000))
    try:
        print(f"service ready {time.monotonic() - started:.1f} s after start (seeding included)")
        assert service.proc is not None and service.data_dir is not None
        rss = tree_rss_mb(service.proc.pid)
        print("RSS per process (MB): " + ", ".join(f"{pid}: {mb:.0f}" for pid, mb in sorted(rss.items())))
        for line in (service.data_dir / "server.log").read_text(errors="replace").splitlines():
            if "catalog index built" in line or "seeded" in line:
                print(line.split("rid=-", 1)[-1].strip())
        run(service.url, args.requests, args.budget, args.seed)
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
