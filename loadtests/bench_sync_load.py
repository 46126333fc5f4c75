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
one, then a pause for the catch-ups), so that round's full run rewrites all of them. With --fresh every
round is a first import instead, each on a new database and service (warm-up, alone, sync). Every phase
starts after the greedy users' rate-limit buckets refilled (12 s). The verdict compares the p99
of all the alone phases' requests taken together with that of all the sync phases' (one phase's p99 moves
by a fifth with no sync at all); each round's ratio, the first import's among them, is printed beside it,
with what the host did in each phase: CPU and I/O pressure, PostgreSQL checkpoints, CPU seconds by process.

    python -m loadtests.bench_sync_load [--items 20000] [--duration 8s] [-c 16]      (make sync-load)
    python -m loadtests.bench_sync_load --locust [--phase 10s] [--rounds 3] [--users 50] [--fresh]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
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
from loadtests.run_load import aggregate, pooled_percentile, response_times, run_locust, seconds
from loadtests.service import LOAD_ENV, LocalService, parse_env
from loadtests.sync_demo import start_fake
from server.admin import keys
from server.settings import Settings

# The catalog policy's burst (100) at its sustained 10 req/s, and a margin.
REFILL_S = 12.0
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


def _psi_totals() -> dict[str, int]:
    """Linux's `some` stall totals (µs) of CPU and I/O ({} where /proc/pressure is missing)."""
    out: dict[str, int] = {}
    for kind in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{kind}") as f:
                out[kind] = int(f.readline().rsplit("total=", 1)[1])
        except (OSError, ValueError, IndexError):
            pass
    return out


async def _checkpoints(dsn: str) -> tuple[int, float, int]:
    """(checkpoints begun so far, ms they spent in fsync, buffers they wrote) from pg_stat_bgwriter. Their
    write time is not given: a checkpoint spreads its writes over most of checkpoint_timeout on purpose."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT checkpoints_timed + checkpoints_req AS n, checkpoint_sync_time AS ms, "
            "buffers_checkpoint AS written FROM pg_stat_bgwriter"
        )
    finally:
        await conn.close()
    return int(row["n"]), float(row["ms"]), int(row["written"])


def _role(cmdline: bytes, dbname: str) -> str:
    """Who a process is, for the CPU tally of a phase."""
    text = cmdline.replace(b"\0", b" ").decode(errors="replace")
    if text.startswith("postgres:"):
        return "postgres (run and catch-ups)" if dbname in text else "postgres (other)"
    for marker, role in (
        (" server sync", "sync run"),
        ("locust", "locust"),
        ("tests.fakes.zoho", "fake Zoho"),
        (" server", "service"),
        ("redis-server", "redis"),
        ("nginx", "nginx"),
    ):
        if marker in text:
            return role
    return "other"


def _cpu_by_role(dbname: str) -> dict[int, tuple[str, float]]:
    """Each process's role and CPU seconds so far (utime + stime)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        out[int(entry.name)] = (_role(cmdline, dbname), (int(fields[11]) + int(fields[12])) / tick)
    return out


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (Locust runs: it has left the tally by its end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_spent(before: dict[int, tuple[str, float]], dbname: str) -> str:
    """CPU seconds each role spent since `before` (a process started meanwhile counts from 0)."""
    spent: dict[str, float] = {}
    for pid, (role, cpu) in _cpu_by_role(dbname).items():
        prior = before.get(pid)
        spent[role] = spent.get(role, 0.0) + cpu - (prior[1] if prior and prior[0] == role else 0.0)
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{role} {s:.1f}" for role, s in ranked if s >= 0.1)


def _host(before: tuple[float, dict[str, int], tuple[int, float, int]], dsn: str) -> str:
    """What the host did during a phase begun at `before`: CPU and I/O pressure (share of the wall time some
    task waited), PostgreSQL checkpoints in it. A phase with no sync and much pressure is the host's own."""
    began, psi, (ckpts, ckpt_ms, written) = before
    wall = time.monotonic() - began
    now, (ckpts2, ckpt_ms2, written2) = _psi_totals(), asyncio.run(_checkpoints(dsn))
    shares = ", ".join(f"{k} {(now[k] - v) / 1e6 / wall:.0%}" for k, v in psi.items() if k in now)
    fsync = (ckpt_ms2 - ckpt_ms) / 1000
    return (
        f"pressure {shares or 'unknown'}; checkpoints begun {ckpts2 - ckpts}, "
        f"their buffers written {written2 - written:,}, fsync {fsync:.1f} s"
    )


def _locust(base: str, out: Path, name: str, args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    """One phase of `make load` (stats reset after the ramp): its aggregate, and what the host did."""
    prefix = out / name
    dbname = dsn.rsplit("/", 1)[1]
    before = (time.monotonic(), _psi_totals(), asyncio.run(_checkpoints(dsn)))
    cpu, load = _cpu_by_role(dbname), _children_cpu()
    run_locust(base, prefix, args.users, max(10.0, args.users / 2), seconds(args.phase), reset_stats=True)
    return {
        "phase": name,
        **aggregate(prefix),
        "times": response_times(prefix),
        "host": _host(before, dsn),
        "cpu_s": f"locust (the load) {_children_cpu() - load:.1f}, {_cpu_spent(cpu, dbname)}",
    }


def _show(result: dict[str, Any]) -> None:
    """A phase's figures as one JSON line, as they come (its requests' times left out)."""
    print(json.dumps({k: v for k, v in result.items() if k != "times"}), flush=True)


def _locust_rounds(
    base: str, key: str, dsn: str, args: argparse.Namespace, first: int, rounds: int
) -> list[dict[str, Any]]:
    """On one service: a warm-up, then alone / sync phases `rounds` times (numbered from `first`); each sync
    phase a full run started just before its load."""
    out = Path(tempfile.mkdtemp(prefix="bench-sync-load-"))
    results: list[dict[str, Any]] = []
    # Not measured: the service's first minutes of load fill its caches (the first alone phase's p99 was
    # twice the others'), which would flatter the first import's ratio.
    _show(_locust(base, out, "warm-up", args, dsn))
    for n in range(first, first + rounds):
        if n > first:
            changed = asyncio.run(_make_differ(dsn))
            _settle(base, dsn)  # the catch-ups of that write, outside both phases
            print(f"round {n}: {changed:,} synced products made to differ from Zoho", flush=True)
        # Every phase starts with the greedy users' rate-limit buckets full (the phase before emptied them):
        # otherwise the phase that follows another at once serves fewer of their cheap refusals.
        time.sleep(REFILL_S)
        results.append(_locust(base, out, f"alone{n}", args, dsn))
        _show(results[-1])
        time.sleep(REFILL_S)
        status, location, doc = _request(f"{base}/api/admin/sync", key, b'{"full": true}')
        assert status == 202, (status, doc)
        started = time.monotonic()
        result = _locust(base, out, f"sync{n}", args, dsn)
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
        _show(results[-1])
    return results


def _locust_services(admin: str, env: dict[str, str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """--locust: the rounds on one service and database, or with --fresh each round on a new one (every
    sync phase then a first import)."""
    env = {**LOAD_ENV, **env}  # as `make load` starts its service: rate limits on
    results: list[dict[str, Any]] = []
    for first, rounds in [(n, 1) for n in range(1, args.rounds + 1)] if args.fresh else [(1, args.rounds)]:
        dsn = asyncio.run(_scratch(admin))
        svc = LocalService(products=10_000, processes=2, env={**env, "DATABASE_URL": dsn})
        try:
            svc.start()
            # Signed-in scenarios read the verification mails the service writes (as run_load.target does).
            os.environ["LOAD_MAIL_DIR"] = str(svc.data_dir / "mail") if svc.data_dir else ""
            results += _locust_rounds(svc.url, asyncio.run(_key(dsn)), dsn, args, first, rounds)
        finally:
            svc.stop()
            asyncio.run(_drop(admin, dsn))
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
            + f"  {r['host']}\n         CPU s: {r['cpu_s']}"
            + (f"\n         run {r['run']}" if "run" in r else "")
        )
    rounds = [d / max(1e-9, a) for a, d in zip(alone, during, strict=True)]
    print(f"catalog p99 alone {alone} ms, during a full sync {during} ms")
    print(
        f"each round's ratio {', '.join(f'{r:.2f}' for r in rounds)}: median {statistics.median(rounds):.2f} "
        + ("(each a first import)" if args.fresh else f"(the first is the first import: {rounds[0]:.2f})")
    )
    # The verdict takes every request of the alone phases together, and every one of the sync phases: one
    # phase's p99 (its ~30 slowest requests) moves by a fifth between phases with no sync at all.
    pooled = {
        kind: pooled_percentile((r["times"] for r in results if r["phase"].startswith(kind)), 99)
        for kind in ("alone", "sync")
    }
    ratio = pooled["sync"] / max(1e-9, pooled["alone"])
    print(
        f"p99 of all the requests of the alone phases {pooled['alone']:.0f} ms, of the sync phases "
        f"{pooled['sync']:.0f} ms: ratio {ratio:.2f}"
    )
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
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="--locust: every round a first import, on a new database and service (the hardest full run)",
    )
    args = ap.parse_args(argv)
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        raise SystemExit("bench_sync_load: set DATABASE_URL (a server where a scratch database can be made)")
    fake, zoho_env = start_fake(args.items, args.port or 19_000 + os.getpid() % 10_000)
    # The fake stands for Zoho, a remote service: its CPU (JSON for 200 items a page) is not the API's cost
    # on a real deployment, so it runs at the sync child's priority (ZOHO_SYNC_NICE), below the workers.
    extra = parse_env(args.env)
    os.setpriority(os.PRIO_PROCESS, fake.pid, int(extra.get("ZOHO_SYNC_NICE", NICE_DEFAULT)))
    env = {
        **zoho_env,
        "ZOHO_RATE_PER_MIN": str(args.rate),
        "ZOHO_SYNC_INTERVAL_S": "0",
        "ZOHO_SYNC_FULL_AT": "",
        "ZOHO_SYNC_IMAGES_PER_RUN": "0",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    if args.locust:
        try:
            _print_locust(_locust_services(admin, env, args), args)
        finally:
            fake.terminate()
            fake.wait(10)
        return 0
    dsn = asyncio.run(_scratch(admin))
    env["DATABASE_URL"] = dsn
    svc = LocalService(products=10_000, processes=2, env=env)
    try:
        svc.start()
        key = asyncio.run(_key(dsn))
        base = svc.url
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
