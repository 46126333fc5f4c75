"""One command per load run: (start the service,) run Locust headless, gate the result, draw the picture.

    python -m loadtests.run_load [--url URL] [--users 50] [--duration 30s] [--workers N]
    python -m loadtests.run_load --steps 10,50,100,200,400 [--step-duration 10s]
    python -m loadtests.run_load ... -- --tags browse detail      (after --: passed to Locust)
    python -m loadtests.run_load --ui [--url URL] [--ui-port P]   (Locust's web UI on 127.0.0.1)

Without --url a throw-away service is started (embedded PostgreSQL/Redis in a temp DATA_DIR, default rate
limits, this machine trusted as a proxy: LOAD_ENV) and stopped afterwards. Reports go to
loadtests/reports/<timestamp>/: `load_*.csv`, `load.html`, `load.png` (or `step-NNNN_*`, `steps.csv`,
`steps.png`). Exit code: the gate's (0 met, 1 missed, 2 no data).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from loadtests import slo
from loadtests.service import LOAD_ENV, LocalService, free_port, parse_env, wait_ready

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONF = HERE / "locust.conf"


def seconds(text: str) -> int:
    """'30s', '2m', '1m30s' or '45' -> seconds."""
    total, num = 0, ""
    for ch in text.strip():
        if ch.isdigit():
            num += ch
        elif ch in "smh" and num:
            total += int(num) * {"s": 1, "m": 60, "h": 3600}[ch]
            num = ""
        else:
            raise argparse.ArgumentTypeError(f"bad duration {text!r} (use e.g. 30s, 2m)")
    return total + int(num or 0)


def locust_cmd(*args: str) -> list[str]:
    """`python -m locust --config loadtests/locust.conf <args>` with this interpreter."""
    return [
        sys.executable,
        "-m",
        "locust",
        "--config",
        str(CONF),
        "--locustfile",
        str(HERE / "locustfile.py"),
        *args,
    ]


def aggregate(prefix: Path) -> dict[str, float]:
    """Locust's Aggregated row of the run's final statistics (slo.stats_path): requests, req/s, p50 and p99
    (ms)."""
    with slo.stats_path(prefix).open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                return {
                    "requests": float(row["Request Count"]),
                    "rps": float(row["Requests/s"]),
                    "p50_ms": float(row["50%"]),
                    "p99_ms": float(row["99%"]),
                }
    raise RuntimeError(f"no aggregate row in {prefix}_stats.csv")


def response_times(prefix: Path) -> Counter[int]:
    """How many requests of the run at `prefix` took each time (ms, Locust's buckets)."""
    with open(f"{prefix}_response_times.json") as f:
        return Counter({int(ms): int(n) for ms, n in json.load(f).items()})


def pooled_percentile(runs: Iterable[Counter[int]], q: float) -> float:
    """The q-th percentile (0 < q < 100) of every request of several runs taken together (ms): with many
    runs' tails it moves less than any one run's (a p99 of 3,000 requests is their 30th slowest). Locust's
    own rule (stats.calculate_response_time_percentile): the first time above which at most (100 - q) %
    lie."""
    pool: Counter[int] = Counter()
    for run in runs:
        pool.update(run)
    below = int(sum(pool.values()) * q / 100)
    seen = 0
    for ms in sorted(pool):
        seen += pool[ms]
        if seen > below:
            return float(ms)
    raise ValueError("no requests")


def run_locust(
    url: str,
    prefix: Path,
    users: int,
    spawn_rate: float,
    duration_s: int,
    workers: int = 0,
    extra: list[str] | None = None,
    reset_stats: bool = False,
) -> int:
    """Run Locust headless (locally, or as a master with `workers` local workers); CSVs and HTML at prefix."""
    args = [
        "--headless",
        "-H",
        url,
        "-u",
        str(users),
        "-r",
        f"{spawn_rate:g}",
        "-t",
        f"{duration_s}s",
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--exit-code-on-error",
        "0",
    ]
    if reset_stats:
        args.append("--reset-stats")
    env = locust_env()
    if workers <= 0:
        return subprocess.run(locust_cmd(*args, *(extra or [])), cwd=ROOT, env=env, check=False).returncode
    port = free_port()
    master = subprocess.Popen(
        locust_cmd(
            *args,
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(workers),
            "--expect-workers-max-wait",
            "60",
            *(extra or []),
        ),
        cwd=ROOT,
        env=env,
    )
    procs = [
        subprocess.Popen(
            locust_cmd("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *(extra or [])),
            cwd=ROOT,
            env=env,
        )
        for _ in range(workers)
    ]
    try:
        return master.wait(timeout=duration_s + 120)
    finally:
        for proc in [master, *procs]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [master, *procs]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()


@contextlib.contextmanager
def target(url: str | None, out: Path, products: int, processes: int, env: dict[str, str]) -> Iterator[str]:
    """The URL to load: the given one (checked for /ready) or a throw-away local service."""
    if url:
        wait_ready(url.rstrip("/"), timeout=10)
        yield url.rstrip("/")
        return
    env = {**LOAD_ENV, **env}
    with LocalService(products=products, processes=processes, env=env, log_path=out / "server.log") as svc:
        # Signed-in scenarios read the verification mails the service writes (no SMTP_URL): tell Locust where.
        os.environ["LOAD_MAIL_DIR"] = str(svc.data_dir / "mail") if svc.data_dir else ""
        yield svc.url


def locust_env() -> dict[str, str]:
    """This environment with the repo root importable (Locust workers import `loadtests.*`)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def run_ui(args: argparse.Namespace, url: str) -> int:
    """Locust's web UI on 127.0.0.1 with the same scenarios; runs until Ctrl-C (or Locust exits)."""
    port = args.ui_port or free_port()
    cmd = locust_cmd("-H", url, "--web-host", "127.0.0.1", "--web-port", str(port), *args.locust_args)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=locust_env())
    print(f"Locust web UI: http://127.0.0.1:{port}  (target {url}; Ctrl-C stops)", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        return 0


def run_gate(args: argparse.Namespace, out: Path, url: str) -> int:
    """One load run, then the SLO gate and the timeline picture."""
    from loadtests import metrics_dash

    prefix = out / "load"
    duration = seconds(args.duration)
    with metrics_dash.recording(url, out / "metrics.jsonl") as scrapes:  # the service's own view (/metrics)
        rc = run_locust(
            url,
            prefix,
            args.users,
            args.spawn_rate or max(10.0, args.users / 2),
            duration,
            args.workers,
            args.locust_args,
        )
    if scrapes.exists():
        metrics_dash.plot(scrapes, out / "metrics.png")
    if rc != 0:
        print(f"run_load: locust exited with {rc}", file=sys.stderr)
    code = slo.gate(prefix, users=args.users, thresholds=args.thresholds)
    history = Path(f"{prefix}_stats_history.csv")
    if history.exists():
        from loadtests import plot

        plot.plot_timeline(history, out / "load.png", title=f"{args.users} users, {args.duration}")
    return code if rc == 0 else max(code, 2)


def run_steps(args: argparse.Namespace, out: Path, url: str) -> int:
    """One short run per step (stats reset once all users are spawned); summary CSV, table and PNG."""
    from loadtests import plot

    step_s = seconds(args.step_duration)
    rows: list[dict[str, str]] = []
    for users in args.steps:
        rate = max(25.0, users / 2)
        prefix = out / f"step-{users:04d}"
        print(f"--- step: {users} users, {step_s}s ---", file=sys.stderr, flush=True)
        run_locust(
            url,
            prefix,
            users,
            rate,
            int(users / rate) + 1 + step_s,
            args.workers,
            args.locust_args,
            reset_stats=True,
        )
        stats = slo.read_stats(slo.stats_path(prefix)).get(slo.AGGREGATED, slo.Row(slo.AGGREGATED))
        base, per = slo.load_objectives(args.thresholds, users)
        verdict = slo.evaluate({slo.AGGREGATED: stats}, base, {slo.AGGREGATED: per.get(slo.AGGREGATED, base)})
        rows.append(
            {
                "users": str(users),
                "requests": str(stats.requests),
                "rps": f"{stats.rps:.1f}",
                "p50_ms": f"{stats.p50:g}",
                "p95_ms": f"{stats.p95:g}",
                "p99_ms": f"{stats.p99:g}",
                "failures": str(stats.failures),
                "slo": "met" if not verdict[-1].missed else "; ".join(verdict[-1].missed),
            }
        )
    with (out / "steps.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fmt = "{:>6} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8}  {}"
    print(
        fmt.format("users", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures", "SLO (aggregated)")
    )
    for r in rows:
        print(fmt.format(*r.values()))
    plot.plot_steps(out / "steps.csv", out / "steps.png")
    print(f"step load: {out / 'steps.csv'}, {out / 'steps.png'}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(prog="python -m loadtests.run_load", description=__doc__.splitlines()[0])
    p.add_argument(
        "--url", default=os.environ.get("URL") or None, help="service to load (default: start one)"
    )
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--spawn-rate", type=float, default=0, help="users/s (default users/2, at least 10)")
    p.add_argument("--duration", default="30s", help="run time, e.g. 30s, 2m")
    p.add_argument("--workers", type=int, default=0, help="Locust workers (0: one local process)")
    p.add_argument(
        "--steps",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        help="step load: user counts, e.g. 10,50,100,200,400 (no gate; summary + steps.png)",
    )
    p.add_argument("--step-duration", default="10s", help="steady time per step")
    p.add_argument("--ui", action="store_true", help="Locust's web UI (127.0.0.1) instead of a headless run")
    p.add_argument("--ui-port", type=int, default=0, help="web UI port (default: a free one)")
    p.add_argument("--thresholds", type=Path, default=None, help="objectives file (default thresholds.toml)")
    p.add_argument("--out", type=Path, help="report folder (default loadtests/reports/<timestamp>)")
    p.add_argument("--products", type=int, default=10_000, help="catalog size of a started service")
    p.add_argument("--processes", type=int, default=2, help="PROCESSES of a started service")
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra env of a started service (repeatable)",
    )
    args = p.parse_args(argv)
    args.locust_args = extra
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make load`, `make load-distributed` and `make load-steps`."""
    args = parse_args(argv)
    out = args.out or HERE / "reports" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with target(args.url, out, args.products, args.processes, parse_env(args.service_env)) as url:
        if args.ui:
            return run_ui(args, url)
        code = run_steps(args, out, url) if args.steps else run_gate(args, out, url)
    print(f"reports: {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
