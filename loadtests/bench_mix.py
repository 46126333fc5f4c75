"""Shopper-mix benchmark: wrk walks a seeded list of many distinct URLs read from the service's own data.

    python -m loadtests.bench_mix [-d 10s] [--products 10000] [--urls 50000] [--seed 1] [--runs on,off,writer]
    python -m loadtests.bench_mix --side-by-side [--passes 2]    (after ../shared/peer/measure.sh up)

The list (mix_urls.py) mixes product list pages (category x sort x page, page_size 20-100, pages skewed to
the first few, some deep), details uniform over every active product, categories pages, searches (words of
product names and SKUs) and filters (in_stock, price ranges). Runs, each on a freshly started service
(mix_stack.py) after a warm-up on the same list: cache on, cache off (CACHE_ENABLED=false), cache on while
mix_writer.py commits 20 stock updates per second (one UPDATE per transaction) and checks each is served,
and on request each kind alone (kinds-on, kinds-off). With --side-by-side the seed's own stack (PEER_DIR)
runs the mix restricted to what it supports (no search or filters; sort name/price), alternating with ours on
the same PostgreSQL and Redis, and ratios ours/seed are printed. The server is pinned to the first core; wrk
(one thread per remaining core), the writer, PostgreSQL and Redis run on the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from loadtests.bench_http import ensure_wrk
from loadtests.mix_stack import (
    Side,
    ensure_database,
    flush_redis,
    ours_embedded,
    ours_on_peer,
    peer,
    split_cores,
)
from loadtests.mix_urls import (
    COMMON_MIX,
    COMMON_SORTS,
    FULL_MIX,
    FULL_SORTS,
    Catalog,
    build_urls,
    describe,
    get_json,
    kind_of,
    read_catalog,
    write_list,
)
from loadtests.mix_writer import Writer

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("bench_mix.lua")
GZIP = "Accept-Encoding: gzip"
WRITES_PER_S = 20.0
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


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


def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)?", duration)
    if not m:
        raise SystemExit(f"bench_mix: duration {duration!r}: use e.g. 10s")
    return float(m.group(1)) * (60 if m.group(2) == "m" else 1)


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
    flush_redis(side.redis_flush)
    server = side.server(cache, plan.logs / f"{side.name}.log").start(plan.server_cores)
    try:
        warm_up(server.url, url_list, plan.threads, plan.conns, plan.warmup)
        return _run(side, server.url, url_list, plan, label, writer_rate)
    finally:
        server.stop()


def measure_kinds(side: Side, cache: bool, url_list: Path, plan: Plan, prefix: str) -> list[Result]:
    """Start `side`, warm up on the whole list, then measure each kind's part of it in turn."""
    paths = url_list.read_text(encoding="ascii").split()
    parts: dict[str, list[str]] = {}
    for path in paths:
        parts.setdefault(kind_of(path), []).append(path)
    flush_redis(side.redis_flush)
    server = side.server(cache, plan.logs / f"{side.name}.log").start(plan.server_cores)
    try:
        warm_up(server.url, url_list, plan.threads, plan.conns, plan.warmup)
        results = []
        for kind, part in parts.items():
            listed = write_list([(kind, p) for p in part], url_list.with_name(f"{url_list.stem}-{kind}.txt"))
            label = f"{prefix}{kind} ({len(part) / len(paths):.0%}, {len(set(part)):,} URLs)"
            results.append(_run(side, server.url, listed, plan, label, 0.0))
        return results
    finally:
        server.stop()


def _run(side: Side, base: str, url_list: Path, plan: Plan, label: str, writer_rate: float) -> Result:
    """One measured run against a started server, with our cache's figures when they can be read."""
    # Our cache's counters, when one process answers every request (the seed's stack has none).
    counted = side.name == "ours" and side.env.get("PROCESSES") == "1"
    before = cache_counters(base) if counted else None
    writer = None
    if writer_rate:
        writer = Writer(side.dsn, writer_rate, _seconds(plan.duration), plan.seed, check_url=base)
    result = run_wrk(label, base, url_list, plan.threads, plan.conns, plan.duration, plan.logs / "wrk.txt")
    notes = [result.note]
    if writer is not None:
        w = writer.result()
        notes.append(
            f"writer {w['commits']:.0f} commits in {w['seconds']:.1f} s = {w['rate']:.1f}/s "
            f"(target {writer_rate:g}/s, max lateness {w['late_max_ms']:.0f} ms)"
        )
        if "fresh_p50_ms" in w:
            notes.append(
                f"served after p50 {w['fresh_p50_ms']:.0f} / p99 {w['fresh_p99_ms']:.0f} / max "
                f"{w['fresh_max_ms']:.0f} ms, {w['stale']:.0f} stale answers, {w['never_served']:.0f} never"
            )
    if before is not None:
        after = cache_counters(base)
        result = replace(result, hits=hit_share(before, after))
        if l2_errors := after["l2_errors"] - before["l2_errors"]:
            notes.append(f"{l2_errors} Redis cache errors (L2 skipped for a while after each)")
        if writer is not None:
            notes.append(f"catalog version +{after['version'] - before['version']}")
    result = replace(result, note="; ".join(notes))
    print(f"  {render_row(result)}", file=sys.stderr, flush=True)
    return result


def cache_counters(base: str) -> dict[str, int]:
    """Our cache's counters and catalog version from /ready (of the process that answers: PROCESSES=1)."""
    doc = get_json(f"{base}/ready")
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


_ROW = "{:<38} {:>9} {:>8} {:>8} {:>9} {:>8} {:>6}  {}"


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
        if not runs:
            continue
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
        default=list(DEFAULT_RUNS),
        help="our runs, in order (default on,off,writer; also kinds-on, kinds-off: each kind alone)",
    )
    p.add_argument("--writer-rate", type=float, default=WRITES_PER_S, help="commits/s of the writer run")
    p.add_argument("--side-by-side", action="store_true", help="also the seed's stack, same mix, ratios")
    p.add_argument(
        "--passes", type=int, default=1, help="side-by-side passes (ratios: median; 0: only our full mix)"
    )
    p.add_argument("--peer-dir", default=os.environ.get("PEER_DIR", str(ROOT.parent / "shared" / "peer")))
    p.add_argument("--scratch", default=os.environ.get("SCRATCH", "/tmp/peer"))
    p.add_argument("--redis-db", type=int, default=2, help="our Redis db on the peer's Redis (side by side)")
    p.add_argument("--out", type=Path, help="logs folder (default loadtests/reports/bench-mix-<timestamp>)")
    args = p.parse_args(argv)
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
            asyncio.run(ensure_database(scratch, "proj"))
            (scratch / "proj-uploads").mkdir(exist_ok=True)
            ours = ours_on_peer(scratch, args.products, args.processes, args.redis_db)
            return side_by_side(ours, seed_side, plan, args, conf)
        data_dir = Path(tmp) / "data"
        ours = ours_embedded(data_dir, args.products, args.processes)
        mix = url_list("ours", catalog_of(ours, plan), plan, args.urls, FULL_MIX, FULL_SORTS)
        results = our_runs(ours, mix, plan, args.runs, args.writer_rate, "")
        print(render(results, f"\nshopper mix, {conf}; our service, PROCESSES={args.processes}"), flush=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    _warn_failures(results)
    return 0


def _warn_failures(results: Sequence[Result]) -> None:
    if any(r.non_2xx or r.socket_errors for r in results):
        print(
            "bench_mix: some runs had non-2xx answers or socket errors (the server log says which): "
            "their figures include failures",
            file=sys.stderr,
        )


RUNS = ("on", "off", "writer", "kinds-on", "kinds-off")
DEFAULT_RUNS = RUNS[:3]


def our_runs(
    ours: Side, urls: Path, plan: Plan, runs: Sequence[str], rate: float, prefix: str
) -> list[Result]:
    """The selected runs of our service on `urls`: cache on, cache off, cache on with the writer, and each
    kind of request alone (cache on or off, one service start for all kinds)."""
    out = []
    for run in runs:
        if run.startswith("kinds-"):
            cache = run == "kinds-on"
            out += measure_kinds(ours, cache, urls, plan, f"{prefix}cache {'on' if cache else 'off'}: ")
        elif run == "on":
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
    if args.passes > 0:
        print(render_ratios(pairs), flush=True)
    _warn_failures(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
