"""Catalog latency under `make load` while 200 sign-ins are kept in flight, against the same load alone.

Starts a service (2 processes, rate limits on as for every Locust run, the load generator trusted as a proxy)
unless --url is given, then alternates phases of the same Locust run (`make load`'s scenarios and users):
`alone`, then `flood`, --rounds times. In a flood phase another process keeps --logins sign-ins in flight,
each with a fresh email and a fresh X-Forwarded-For address (a credential-stuffing botnet: neither the
per-address limit nor the per-account throttle slows it), honouring `Retry-After` on 503 and 429 as a
well-behaved client does. Prints each phase's catalog p50/p99 and throughput (Locust's aggregate, stats reset
after the ramp), the CPU the service used over it by kind (`cores`: server event loops, hashing children),
the flood's answers by status, its sign-in latency and its own CPU, and the p99 ratio (goal: ≤ 1.2).

    python -m loadtests.bench_logins [--url URL] [--phase 20s] [--rounds 2] [--logins 200]  # bench-logins
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from loadtests.run_load import ROOT, aggregate, locust_env, run_locust, seconds, target
from loadtests.service import parse_env

LOGIN = "/api/auth/login"


def _address(rng: random.Random) -> str:
    # 198.18.0.0/15 (benchmarking, RFC 2544): a new client address for every sign-in.
    n = rng.getrandbits(17)
    return f"198.{18 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, float | None]:
    """One request on a kept-alive connection: (status, Retry-After or None)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    await reader.readexactly(int(fields.get("content-length", "0")))
    retry = fields.get("retry-after")
    return status, float(retry) if retry is not None else None


async def _flood(url: str, logins: int, duration_s: float) -> dict[str, object]:
    # Raw asyncio streams, one kept-alive connection per sign-in in flight: the flood stands in for
    # clients on other machines, so it must cost this machine as little as it can (httpx cost 4x more).
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    rng = random.Random()
    statuses: Counter[int] = Counter()
    answered: list[float] = []  # seconds, sign-ins the server answered (401 here: unknown emails)
    stop = time.monotonic() + duration_s

    def request() -> bytes:
        email, password = f"u{rng.getrandbits(48):x}@example.com", f"p-{rng.getrandbits(64):x}"
        body = json.dumps({"email": email, "password": password}).encode()
        return (
            f"POST {LOGIN} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"X-Forwarded-For: {_address(rng)}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def one() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, int(port))
                status, retry = await _exchange(*conn, request())
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                statuses[0] += 1
                if conn is not None:
                    conn[1].close()
                conn = None
                await asyncio.sleep(0.5)
                continue
            statuses[status] += 1
            if status in (503, 429):
                await asyncio.sleep(retry if retry is not None else 1.0)
            else:
                answered.append(time.perf_counter() - start)
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(one() for _ in range(logins)))
    answered.sort()

    def pct(q: float) -> float:
        return round(answered[min(len(answered) - 1, int(q * len(answered)))] * 1000, 1) if answered else 0.0

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),  # the flood client's own CPU
        "statuses": dict(sorted(statuses.items())),
        "answered": len(answered),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(answered[-1] * 1000, 1) if answered else 0.0,
    }


def _service(url: str) -> psutil.Process | None:
    """The top process of the service listening on `url`'s port (None when it is not found here)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        conns = psutil.net_connections("tcp")
    except psutil.Error:  # not allowed to list other processes' sockets: no CPU figures
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            proc = psutil.Process(conn.pid)
            while (parent := proc.parent()) is not None and "server" in " ".join(parent.cmdline()):
                proc = parent
            return proc
    return None


def _cpu(top: psutil.Process | None) -> dict[str, float]:
    """CPU seconds so far of the service's processes: server (the event loops), hash (argon2 children),
    other (its embedded PostgreSQL and Redis, when it started them)."""
    out = {"server": 0.0, "hash": 0.0, "other": 0.0}
    if top is None:
        return out
    for proc in [top, *top.children(recursive=True)]:
        try:
            times, cmd = proc.cpu_times(), " ".join(proc.cmdline())
        except psutil.Error:
            continue
        kind = "hash" if "hashd" in cmd else "server" if "python" in cmd else "other"
        out[kind] += times.user + times.system
    return out


def _phase(url: str, out: Path, name: str, args: argparse.Namespace) -> dict[str, object]:
    flood: subprocess.Popen[bytes] | None = None
    if name.startswith("flood"):
        cmd = [sys.executable, "-m", "loadtests.bench_logins", "--flood", url, "--logins", str(args.logins)]
        cmd += ["--flood-s", str(seconds(args.phase) + 6)]
        flood = subprocess.Popen(cmd, cwd=ROOT, env=locust_env(), stdout=subprocess.PIPE)
        time.sleep(2)  # the flood at full strength before the measured load starts
    prefix = out / name
    top = _service(url)
    cpu0, t0 = _cpu(top), time.monotonic()
    run_locust(url, prefix, args.users, max(10.0, args.users / 2), seconds(args.phase), reset_stats=True)
    cpu1, wall = _cpu(top), time.monotonic() - t0
    result: dict[str, object] = {"phase": name, **aggregate(prefix)}
    # Cores used over the phase (ramp included), by kind: where a flood's cost lands.
    result["cores"] = {k: round((cpu1[k] - cpu0[k]) / wall, 2) for k in cpu0}
    if flood is not None:
        stdout, _ = flood.communicate(timeout=120)
        result["flood"] = json.loads(stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the phases; print one line per phase and the ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running service (default: start one)")
    p.add_argument("--products", type=int, default=10_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--service-env", action="append", default=[], help="KEY=VALUE for a started service")
    p.add_argument("--users", type=int, default=50, help="Locust users (make load's default)")
    p.add_argument("--phase", default="20s", help="length of each phase")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--logins", type=int, default=200, help="sign-ins kept in flight during a flood")
    p.add_argument("--flood", metavar="URL", help=argparse.SUPPRESS)  # the flood process itself
    p.add_argument("--flood-s", type=float, default=30, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.flood:
        print(json.dumps(asyncio.run(_flood(args.flood, args.logins, args.flood_s))))
        return 0
    out = Path(tempfile.mkdtemp(prefix="bench-logins-"))
    results = []
    with target(args.url, out, args.products, args.processes, parse_env(args.service_env)) as url:
        for n in range(args.rounds):
            for name in ("alone", "flood"):
                results.append(_phase(url, out, f"{name}{n + 1}", args))
                print(json.dumps(results[-1]), flush=True)
    alone = [float(str(r["p99_ms"])) for r in results if str(r["phase"]).startswith("alone")]
    flood = [float(str(r["p99_ms"])) for r in results if str(r["phase"]).startswith("flood")]
    ratio = (sum(flood) / len(flood)) / max(1e-9, sum(alone) / len(alone))
    print(f"catalog p99 alone {alone} ms, {args.logins} sign-ins in flight {flood} ms: ratio {ratio:.2f}")
    print("goal: within 20 % (ratio <= 1.20): " + ("met" if ratio <= 1.2 else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
