"""HTTP ceiling benchmark with wrk: the service's main endpoints against a bare Robyn route, same run, same
connections.

    python -m loadtests.bench_http [--url URL] [-t 2 -c 64 -d 10s] [--env KEY=VALUE ...]
    python -m loadtests.bench_http --compare CACHE_ENABLED=false,true    (one service start per value)

Measures the products page (page_size=100, gzip), a product detail, the categories page and one image on the
service, then the same products-page bytes from `bare_robyn.py` (same process count, sync handler, from
memory) as the ceiling; prints req/s, p50, p99 and each endpoint's ratio to the ceiling. Without --url a
throw-away service is started (rate limits off); --env / --compare set its environment. `measure()` is the
library form.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from loadtests.service import LocalService, free_port, parse_env, wait_ready

GZIP = {"Accept-Encoding": "gzip"}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Result:
    """One wrk run."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + non-2xx/3xx responses


def ensure_wrk() -> str:
    """Path of wrk; installs it with apt-get when missing and possible, else exits saying how."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("bench_http: wrk not found, installing it with apt-get", file=sys.stderr)
        subprocess.run([apt, "update", "-qq"], check=False)
        subprocess.run([apt, "install", "-y", "-qq", "wrk"], check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit(
        "bench_http: wrk is required: `sudo apt-get install wrk` (Debian/Ubuntu), `brew install wrk` "
        "(macOS), or build it from https://github.com/wg/wrk"
    )


def _latency(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(name: str, text: str) -> Result:
    """Requests/s, p50, p99 and errors from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return Result(
        name,
        float(rps.group(1)) if rps else 0.0,
        _latency(text, "50"),
        _latency(text, "99"),
        errors + (int(non2xx.group(1)) if non2xx else 0),
    )


def wrk(url: str, name: str, threads: int, conns: int, duration: str, headers: dict[str, str]) -> Result:
    """One `wrk --latency` run against url."""
    cmd = [ensure_wrk(), f"-t{threads}", f"-c{conns}", f"-d{duration}", "--latency", url]
    for key, value in headers.items():
        cmd[1:1] = ["-H", f"{key}: {value}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed on {url}: {out.stderr.strip()}")
    return parse_wrk(name, out.stdout)


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
        return bytes(resp.read())


def targets(base: str) -> list[tuple[str, str, dict[str, str]]]:
    """(name, url, headers) of the measured endpoints, ids read from the service."""
    first = json.loads(_get(f"{base}/api/consumer/products?page=1&page_size=100"))
    items = first["items"]
    if not items:
        raise SystemExit("bench_http: the catalog is empty")
    with_image = next((it for it in items if it["has_image"]), None)
    out = [
        ("products page_size=100 gzip", f"{base}/api/consumer/products?page=1&page_size=100", GZIP),
        ("product detail", f"{base}/api/consumer/products/{items[0]['id']}", GZIP),
        ("categories", f"{base}/api/consumer/categories?page=1&page_size=50", GZIP),
    ]
    if with_image:
        out.append(("image", f"{base}/product-images/{with_image['zoho_item_id']}.jpg", {}))
    return out


def measure(
    url: str | None = None,
    env: dict[str, str] | None = None,
    threads: int = 2,
    conns: int = 64,
    duration: str = "10s",
    processes: int = 2,
    products: int = 10_000,
) -> list[Result]:
    """Run the whole benchmark once (starting a service with `env` unless `url`); last row is the ceiling."""
    ensure_wrk()
    svc = None if url else LocalService(products=products, processes=processes, env=env).start()
    base = url.rstrip("/") if url else svc.url  # type: ignore[union-attr]
    try:
        results = [wrk(u, name, threads, conns, duration, h) for name, u, h in targets(base)]
        body = _get(f"{base}/api/consumer/products?page=1&page_size=100", GZIP)
        raw = _get(f"{base}/api/consumer/products?page=1&page_size=100")
        print(
            f"products page_size=100: {len(raw):,} B raw, {len(body):,} B gzip "
            f"({len(body) / len(raw):.1%} of raw; target <= 15%)",
            flush=True,
        )
    finally:
        if svc is not None:
            svc.stop()  # before the ceiling run: both never compete for the 2 cores
    results.append(bare_ceiling(body, threads, conns, duration, processes))
    return results


def bare_ceiling(body: bytes, threads: int, conns: int, duration: str, processes: int) -> Result:
    """wrk against bare_robyn.py serving `body` (gzip) from memory."""
    with tempfile.TemporaryDirectory(prefix="bare-robyn-") as tmp:
        body_file = Path(tmp) / "page.json.gz"
        body_file.write_bytes(body)
        port = free_port()
        env = {
            **os.environ,
            "BARE_BODY_FILE": str(body_file),
            "BARE_PORT": str(port),
            "BARE_PROCESSES": str(processes),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadtests.bare_robyn"],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(f"http://127.0.0.1:{port}/bench", proc)
            return wrk(
                f"http://127.0.0.1:{port}/bench",
                f"bare Robyn ceiling ({len(body)} B gzip)",
                threads,
                conns,
                duration,
                GZIP,
            )
        finally:
            _stop(proc)


def _wait_port(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"bare_robyn exited with {proc.returncode}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("bare_robyn did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # any Robyn child left over
    proc.wait()


def render(results: list[Result], title: str) -> str:
    """Table: endpoint, req/s, p50, p99, errors, ratio to the bare ceiling (the last row)."""
    ceiling = results[-1].rps or float("nan")
    width = max(len(r.name) for r in results)
    fmt = f"{{:<{width}}} {{:>9}} {{:>8}} {{:>8}} {{:>7}} {{:>9}}"
    lines = [title, fmt.format("endpoint", "req/s", "p50 ms", "p99 ms", "errors", "x ceiling")]
    for r in results:
        lines.append(
            fmt.format(
                r.name,
                f"{r.rps:,.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                r.errors,
                f"{r.rps / ceiling:.2f}",
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_http", description=__doc__.splitlines()[0])
    p.add_argument(
        "--url", help="measure this service instead of starting one (--env/--compare then ignored)"
    )
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("-d", "--duration", default="10s")
    p.add_argument("--processes", type=int, default=2, help="PROCESSES of the service and of bare Robyn")
    p.add_argument("--products", type=int, default=10_000)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="service env (repeatable)")
    p.add_argument("--compare", metavar="KEY=A,B", help="one run per value of KEY, tables side by side")
    args = p.parse_args(argv)
    env = parse_env(args.env)
    runs: list[dict[str, str]] = [env]
    if args.compare:
        key, _, values = args.compare.partition("=")
        runs = [{**env, key: v} for v in values.split(",")]
    if args.url:
        wait_ready(args.url.rstrip("/"), timeout=10)
    conf = f"wrk -t{args.threads} -c{args.connections} -d{args.duration}, PROCESSES={args.processes}"
    for run_env in runs:
        label = " ".join(f"{k}={v}" for k, v in run_env.items()) or "default settings"
        results = measure(
            args.url, run_env, args.threads, args.connections, args.duration, args.processes, args.products
        )
        print(render(results, f"\n{conf}; service: {args.url or label}"), flush=True)
        if any(r.errors for r in results):
            print(
                "bench_http: some requests failed (errors column): figures are not comparable",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
