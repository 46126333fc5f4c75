"""Catalog latency while a full Zoho sync runs in the service, against the same load without it.

Starts the fake Zoho (`python -m tests.fakes.zoho`, its own process, unthrottled) with --items items and a
service (2 processes, 10,000 demo products) whose sync reads it, on a scratch database of DATABASE_URL's
server (and REDIS_URL's Redis when set, else the embedded one). Then, each with the same wrk load on the
products page (page_size=100, gzip) and the product detail:

1. baseline: no sync;
2. the first full sync, started with `POST /api/admin/sync` just before the load (inserts every item);
3. a full re-run (nothing changed: every item read, nothing written), the daily reconcile's usual case.

Prints p50/p99 of each phase, the p99 ratio to the baseline (goal: within 20 %), and whether the run lasted
the whole load window (a run that ends early measures less than it claims).

With --locust the load is `make load`'s instead (its Locust scenarios and 50 users, rate limits on: the
measure the issue names), alternating `alone` and `sync` phases --rounds times: the first sync phase is the
first import; before each later round every synced product is made to differ from Zoho (its stock moved by
one, then a pause for the catch-ups), so that round's full run rewrites all of them.

    python -m loadtests.bench_sync_load [--items 20000] [--duration 8s] [-c 16]      (make sync-load)
    python -m loadtests.bench_sync_load --locust [--phase 10s] [--rounds 3] [--users 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from loadtests.bench_http import GZIP, Result, wrk
from loadtests.bench_sync import catalog_version
from loadtests.run_load import aggregate, run_locust, seconds
from loadtests.service import LOAD_ENV, LocalService, parse_env
from loadtests.sync_demo import start_fake
from server.admin import keys
from server.settings import Settings

NICE_DEFAULT = Settings.model_fields["ZOHO_SYNC_NICE"].default


async def _scratch(admin_dsn: str) -> str:
    name = "bench_sync_load_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


async def _drop(admin_dsn: str, dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {dsn.rsplit('/', 1)[1]} WITH (FORCE)")
    finally:
        await conn.close()


async def _key(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        made, _ = await keys.create(conn, name="bench", scopes=["sync:run"])
    finally:
        await conn.close()
    return made.key


def _request(url: str, key: str, body: bytes | None = None) -> tuple[int, str, dict[str, Any]]:
    """(status, Location, JSON body) of one admin call."""
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.headers.get("Location") or "", json.loads(resp.read())


def _load(base: str, detail_id: int, threads: int, conns: int, duration: str) -> list[Result]:
    page = f"{base}/api/consumer/products?page=1&page_size=100"
    half = f"{float(duration.rstrip('s')) / 2:g}s"
    return [
        wrk(page, "products page", threads, conns, half, GZIP),
        wrk(f"{base}/api/consumer/products/{detail_id}", "product detail", threads, conns, half, GZIP),
    ]


def _first_id(base: str) -> int:
    with urllib.request.urlopen(f"{base}/api/consumer/products?page_size=1", timeout=10) as resp:
        return int(json.loads(resp.read())["items"][0]["id"])


def _freshness(base: str) -> str:
    """What one process's catalog freshness did so far (/ready): index catch-ups and the image map's loads."""
    with urllib.request.urlopen(f"{base}/ready", timeout=10) as resp:
        doc = json.loads(resp.read())
    cat = doc["catalog"]
    ix = cat.get("index") or {}
    return (
        f"pid {doc['pid']}: index rebuilds {ix.get('rebuilds')}, rank loads {ix.get('rank_loads')}, placings "
        f"{ix.get('rank_places')}, relabels {ix.get('rank_relabels')}, catch-ups {ix.get('catch_up_ms')} ms "
        "in all (longest "
        f"{ix.get('catch_up_max_ms')} ms); requests served behind {ix.get('served_behind')}, waited "
        f"{ix.get('waits')} (to SQL {ix.get('waits_to_sql')}); image map loads "
        f"{cat['map_loads']}, updates {cat.get('map_updates')}; list item store misses "
        f"{(ix.get('item_store') or {}).get('misses')}, refilled after catch-ups {ix.get('items_refilled')}"
    )


def _phase(
    base: str, key: str, detail_id: int, args: argparse.Namespace, wait: bool = True
) -> tuple[list[Result], str]:
    """Start a full run, load the API meanwhile (then wait for its end); (results, how the run fared)."""
    status, location, doc = _request(f"{base}/api/admin/sync", key, b'{"full": true}')
    assert status == 202, (status, doc)
    started = time.monotonic()
    results = _load(base, detail_id, args.threads, args.conns, args.duration)
    loaded_s = time.monotonic() - started
    while True:
        _, _, run = _request(base + location, key)
        if run["status"] != "running" or not wait:
            break
        time.sleep(0.2)
    took = _run_seconds(run) if run["finished_at"] else time.monotonic() - started
    note = (
        f"run #{run['id']} {run['status']}: {run['items_seen']:,} items seen, {run['items_changed']:,} "
        f"changed, {took:.1f} s ({'covered the whole load' if took >= loaded_s else 'ENDED BEFORE THE LOAD'})"
        + ("" if wait else " when the load ended")
        + f"\n  {_freshness(base)}"
    )
    return results, note


async def _make_differ(dsn: str) -> int:
    """Move the stock of every synced product by one (so the next full run rewrites each); rows changed.
    Then VACUUM the table, so that autovacuum does not clean up after this write during a later phase."""
    conn = await asyncpg.connect(dsn)
    try:
        done = await conn.execute(
            "UPDATE products SET stock_on_hand = stock_on_hand + 1 "
            "WHERE zoho_item_id IN (SELECT zoho_item_id FROM sync_items)"
        )
        await conn.execute("VACUUM (ANALYZE) products")
    finally:
        await conn.close()
    return int(done.split()[-1])


def _settle(base: str, dsn: str, processes: int = 2, timeout_s: float = 60.0) -> None:
    """Wait until every process's list index reflects the catalog as it is now (its catch-up of the last
    write done), so that no phase measures the one before."""
    version = asyncio.run(catalog_version(dsn))
    caught_up: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(caught_up) < processes and time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/ready", timeout=10) as resp:  # a new connection: either process
            doc = json.loads(resp.read())
        if (doc["catalog"].get("index") or {}).get("version", -1) >= version:
            caught_up.add(doc["pid"])
        else:
            time.sleep(0.2)


def _run_seconds(run: dict[str, Any]) -> float:
    """How long a finished run took, from its own record."""
    started = datetime.fromisoformat(run["started_at"])
    return (datetime.fromisoformat(run["finished_at"]) - started).total_seconds()


def _locust(base: str, out: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One phase of `make load` (stats reset after the ramp): its aggregate."""
    prefix = out / name
    run_locust(base, prefix, args.users, max(10.0, args.users / 2), seconds(args.phase), reset_stats=True)
    return {"phase": name, **aggregate(prefix)}


def _locust_rounds(base: str, key: str, dsn: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """alone / sync phases, --rounds times; each sync phase a full run started just before its load."""
    out = Path(tempfile.mkdtemp(prefix="bench-sync-load-"))
    results: list[dict[str, Any]] = []
    for n in range(1, args.rounds + 1):
        if n > 1:
            changed = asyncio.run(_make_differ(dsn))
            _settle(base, dsn)  # the catch-ups of that write, outside both phases
            print(f"round {n}: {changed:,} synced products made to differ from Zoho", flush=True)
        results.append(_locust(base, out, f"alone{n}", args))
        print(json.dumps(results[-1]), flush=True)
        status, location, doc = _request(f"{base}/api/admin/sync", key, b'{"full": true}')
        assert status == 202, (status, doc)
        started = time.monotonic()
        result = _locust(base, out, f"sync{n}", args)
        loaded_s = time.monotonic() - started
        while (run := _request(base + location, key)[2])["status"] == "running":
            time.sleep(0.5)
        took = _run_seconds(run)
        result["run"] = (
            f"#{run['id']} {run['status']}: {run['items_changed']:,} of {run['items_seen']:,} items changed, "
            f"{took:.1f} s for a {loaded_s:.1f} s load "
            f"({'covered all of it' if took >= loaded_s else 'ENDED BEFORE THE LOAD: use more --items'})"
        )
        result["fresh"] = _freshness(base)
        results.append(result)
        _settle(base, dsn)
        print(json.dumps(results[-1]), flush=True)
    return results


def _print_locust(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    alone = [r["p99_ms"] for r in results if r["phase"].startswith("alone")]
    during = [r["p99_ms"] for r in results if r["phase"].startswith("sync")]
    print(
        f"make load ({args.users} users, {args.phase} phases), fake Zoho {args.items:,} items, "
        f"ZOHO_RATE_PER_MIN={args.rate}"
    )
    for r in results:
        print(
            f"{r['phase']:<8} {r['rps']:>7,.0f} req/s  p50 {r['p50_ms']:5.0f} ms  p99 {r['p99_ms']:5.0f} ms"
            + (f"  run {r['run']}" if "run" in r else "")
        )
    ratio = (sum(during) / len(during)) / max(1e-9, sum(alone) / len(alone))
    first = during[0] / max(1e-9, alone[0])
    print(f"catalog p99 alone {alone} ms, during a full sync {during} ms: ratio {ratio:.2f}")
    print(f"first import alone: ratio {first:.2f}")
    print("goal: within 20 % (ratio <= 1.20): " + ("met" if ratio <= 1.2 else "NOT met"))


def main(argv: list[str] | None = None) -> int:
    """Run the three phases and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--duration", default="8s", help="wrk time per phase (split over the two URLs)")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-c", "--conns", type=int, default=16)
    ap.add_argument("--port", type=int, default=0, help="fake Zoho port (0: one from the pid)")
    ap.add_argument(
        "--rate",
        type=int,
        default=100_000,
        help="ZOHO_RATE_PER_MIN of the service: unthrottled by default (the worst case); 100 is Zoho's own "
        "limit (then only the first full run is measured, while it runs, without waiting for its end)",
    )
    ap.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE", help="more service settings")
    ap.add_argument("--locust", action="store_true", help="make load's Locust run instead of wrk")
    ap.add_argument("--phase", default="10s", help="--locust: length of each phase")
    ap.add_argument("--rounds", type=int, default=3, help="--locust: alone / sync rounds")
    ap.add_argument("--users", type=int, default=50, help="--locust: Locust users (make load's default)")
    args = ap.parse_args(argv)
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        raise SystemExit("bench_sync_load: set DATABASE_URL (a server where a scratch database can be made)")
    fake, zoho_env = start_fake(args.items, args.port or 19_000 + os.getpid() % 10_000)
    # The fake stands for Zoho, a remote service: its CPU (JSON for 200 items a page) is not the API's cost
    # on a real deployment, so it runs at the sync child's priority (ZOHO_SYNC_NICE), below the workers.
    extra = parse_env(args.env)
    os.setpriority(os.PRIO_PROCESS, fake.pid, int(extra.get("ZOHO_SYNC_NICE", NICE_DEFAULT)))
    dsn = asyncio.run(_scratch(admin))
    env = {
        **zoho_env,
        "ZOHO_RATE_PER_MIN": str(args.rate),
        "ZOHO_SYNC_INTERVAL_S": "0",
        "ZOHO_SYNC_FULL_AT": "",
        "ZOHO_SYNC_IMAGES_PER_RUN": "0",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    env["DATABASE_URL"] = dsn
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    if args.locust:
        env = {**LOAD_ENV, **env}  # as `make load` starts its service: rate limits on
    svc = LocalService(products=10_000, processes=2, env=env)
    try:
        svc.start()
        key = asyncio.run(_key(dsn))
        base = svc.url
        if args.locust:
            # Signed-in scenarios read the verification mails the service writes (as run_load.target does).
            os.environ["LOAD_MAIL_DIR"] = str(svc.data_dir / "mail") if svc.data_dir else ""
            _print_locust(_locust_rounds(base, key, dsn, args), args)
            return 0
        detail_id = _first_id(base)
        _load(base, detail_id, args.threads, args.conns, "2s")  # warm caches and connections
        rows: list[tuple[str, list[Result], str]] = [
            ("no sync", _load(base, detail_id, args.threads, args.conns, args.duration), "")
        ]
        paced = args.rate < 1000
        rows.append(("first full sync", *_phase(base, key, detail_id, args, wait=not paced)))
        if not paced:
            detail_id = _first_id(base)  # the first full run deactivated the demo products
            rows.append(("full re-run (unchanged)", *_phase(base, key, detail_id, args)))
    finally:
        svc.stop()
        fake.terminate()
        fake.wait(10)
        asyncio.run(_drop(admin, dsn))
    baseline = {r.name: r for r in rows[0][1]}
    print(
        f"wrk -t{args.threads} -c{args.conns}, {args.duration} per phase; fake Zoho {args.items:,} items, "
        f"ZOHO_RATE_PER_MIN={args.rate}"
    )
    for label, results, note in rows:
        for r in results:
            ratio = r.p99_ms / baseline[r.name].p99_ms
            print(
                f"{label:<24} {r.name:<14} {r.rps:>8,.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                f"p99 {r.p99_ms:6.2f} ms  p99 x{ratio:.2f}  errors {r.errors}"
            )
        if note:
            print(f"  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
