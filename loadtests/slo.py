"""SLO gate: reads a Locust run's final stats CSV, checks the objectives, prints a table, exits 1 on a miss.

    python -m loadtests.slo loadtests/reports/<ts>/load [--users 50] [--thresholds loadtests/thresholds.toml]

Objectives come from thresholds.toml (defaults + per endpoint) and SLO_* environment variables (see the file).
Exit codes: 0 all met, 1 an objective missed, 2 no usable statistics.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_THRESHOLDS = Path(__file__).with_name("thresholds.toml")
AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class Objective:
    """What one row (endpoint or Aggregated) must meet."""

    max_failures: int = 0
    p95_ms: float = 50.0
    p99_ms: float = 100.0
    min_rps: float = 0.0
    min_samples: int = 100  # below this a row's p95/p99 are shown but not judged (p99 of 50 = the max)


@dataclass(frozen=True)
class Row:
    """One endpoint's figures from the stats CSV."""

    name: str
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50: float = math.nan
    p95: float = math.nan
    p99: float = math.nan


@dataclass
class Verdict:
    """A row, its objective and the objectives it missed (empty: met)."""

    row: Row
    objective: Objective
    missed: list[str] = field(default_factory=list)


def _env_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"slo: {name}={raw!r} is not a number") from None


def load_objectives(
    path: Path | None = None, users: int | None = None, env: Mapping[str, str] = os.environ
) -> tuple[Objective, dict[str, Objective]]:
    """Defaults and per-endpoint objectives from the thresholds file, scaled to `users`, env applied last."""
    path = Path(env.get("SLO_THRESHOLDS") or path or DEFAULT_THRESHOLDS)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"slo: cannot read thresholds {path}: {exc}") from None
    known = set(Objective.__dataclass_fields__)
    base = Objective(**{k: v for k, v in doc.get("defaults", {}).items() if k in known})
    ref = doc.get("throughput", {}).get("reference_users")
    scale = users / ref if users and ref else 1.0
    per: dict[str, Objective] = {}
    for name, spec in doc.get("endpoints", {}).items():
        unknown = set(spec) - known
        if unknown:
            raise SystemExit(f"slo: {path}: endpoints.{name!r}: unknown keys {sorted(unknown)}")
        obj = replace(base, **spec)
        per[name] = replace(obj, min_rps=obj.min_rps * scale)
    overrides = {
        "max_failures": _env_float(env, "SLO_MAX_FAILURES"),
        "min_samples": _env_float(env, "SLO_MIN_SAMPLES"),
        "p95_ms": _env_float(env, "SLO_P95_MS"),
        "p99_ms": _env_float(env, "SLO_P99_MS"),
        "min_rps": _env_float(env, "SLO_MIN_RPS"),
    }
    given: dict[str, Any] = {
        k: (int(v) if k in ("max_failures", "min_samples") else v)
        for k, v in overrides.items()
        if v is not None
    }
    return replace(base, **given), {name: replace(obj, **given) for name, obj in per.items()}


def _num(raw: str | None) -> float:
    try:
        return float(raw) if raw not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def read_stats(csv_path: Path) -> dict[str, Row]:
    """Rows of a Locust `_stats.csv`, by request name (the Aggregated row under 'Aggregated')."""
    rows: dict[str, Row] = {}
    with csv_path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            name = rec["Name"]
            rows[name] = Row(
                name=name,
                requests=int(rec["Request Count"]),
                failures=int(rec["Failure Count"]),
                rps=_num(rec["Requests/s"]),
                p50=_num(rec["50%"]),
                p95=_num(rec["95%"]),
                p99=_num(rec["99%"]),
            )
    return rows


def evaluate(rows: Mapping[str, Row], base: Objective, per: Mapping[str, Objective]) -> list[Verdict]:
    """Check every row of the run and every endpoint the thresholds name (missing ones count as 0 req/s)."""
    names = [n for n in rows if n != AGGREGATED] + [n for n in per if n not in rows and n != AGGREGATED]
    verdicts = []
    for name in [*names, AGGREGATED]:
        row, obj = rows.get(name, Row(name)), per.get(name, base)
        missed = []
        if row.failures > obj.max_failures:
            missed.append(f"failures {row.failures} > {obj.max_failures}")
        judged = name == AGGREGATED or row.requests >= obj.min_samples
        if judged and not row.p95 < obj.p95_ms:  # NaN (no requests) misses too
            missed.append(f"p95 {row.p95:g} ms >= {obj.p95_ms:g} ms")
        if judged and not row.p99 < obj.p99_ms:
            missed.append(f"p99 {row.p99:g} ms >= {obj.p99_ms:g} ms")
        if row.rps < obj.min_rps:
            missed.append(f"throughput {row.rps:.1f} req/s < {obj.min_rps:.1f} req/s")
        verdicts.append(Verdict(row, obj, missed))
    return verdicts


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:g}"


def render(verdicts: list[Verdict], base: Objective, title: str = "") -> str:
    """The gate's table and, when something failed, one line per missed objective."""
    head = ("endpoint", "reqs", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures", "min req/s", "met")
    width = max(len(head[0]), *(len(v.row.name) for v in verdicts))
    fmt = f"{{:<{width}}} {{:>7}} {{:>8}} {{:>7}} {{:>7}} {{:>7}} {{:>8}} {{:>9}}  {{}}"
    lines = [title] if title else []
    lines += [
        f"objectives: failures <= {base.max_failures}, p95 < {base.p95_ms:g} ms, p99 < {base.p99_ms:g} ms "
        f"(per endpoint from {base.min_samples} requests; always on Aggregated), min req/s (column)",
        fmt.format(*head),
    ]
    for v in verdicts:
        r = v.row
        met = "yes" if not v.missed else "NO (" + ", ".join(m.split()[0] for m in v.missed) + ")"
        if not v.missed and r.name != AGGREGATED and r.requests < v.objective.min_samples:
            met = f"yes (p95/p99 not judged: < {v.objective.min_samples} reqs)"
        lines.append(
            fmt.format(
                r.name,
                r.requests,
                f"{r.rps:.1f}",
                _ms(r.p50),
                _ms(r.p95),
                _ms(r.p99),
                r.failures,
                f"{v.objective.min_rps:.1f}",
                met,
            )
        )
    missed = [(v.row.name, m) for v in verdicts for m in v.missed]
    if missed:
        lines.append(f"SLO GATE FAILED: {len(missed)} objective(s) missed")
        lines += [f"  - {name}: {m}" for name, m in missed]
    else:
        lines.append("SLO gate passed: every objective met")
    return "\n".join(lines)


def top_failures(prefix: Path, limit: int = 5) -> list[str]:
    """The most frequent failures from Locust's `_failures.csv`, for the report."""
    path = Path(f"{prefix}_final_failures.csv")
    if not path.exists():
        path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        recs = sorted(csv.DictReader(fh), key=lambda r: -int(r["Occurrences"]))
    return [f"  {r['Occurrences']:>6} x {r['Method']} {r['Name']}: {r['Error']}" for r in recs[:limit]]


def stats_path(prefix: Path) -> Path:
    """The run's final statistics (written at exit by locustfile.py), else Locust's periodic CSV."""
    final = Path(f"{prefix}_final_stats.csv")
    return final if final.exists() else Path(f"{prefix}_stats.csv")


def gate(prefix: Path, users: int | None = None, thresholds: Path | None = None) -> int:
    """Print the table for the run at `prefix`; return 0 (met), 1 (missed) or 2 (no statistics)."""
    stats = stats_path(prefix)
    if not stats.exists():
        print(f"slo: no statistics at {stats} (did Locust run?)", file=sys.stderr)
        return 2
    rows = read_stats(stats)
    if rows.get(AGGREGATED, Row(AGGREGATED)).requests == 0:
        print(f"slo: {stats} has no requests: the run sent no traffic", file=sys.stderr)
        return 2
    base, per = load_objectives(thresholds, users)
    verdicts = evaluate(rows, base, per)
    scaled = f", min req/s scaled to {users} users" if users else ""
    print(render(verdicts, base, title=f"SLO gate: {stats}{scaled}"))
    failures = top_failures(prefix)
    if failures:
        print("most frequent failures:", *failures, sep="\n")
    return 1 if any(v.missed for v in verdicts) else 0


def main(argv: list[str] | None = None) -> int:
    """CLI: gate an existing run."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.slo", description=__doc__.splitlines()[0])
    parser.add_argument("prefix", type=Path, help="the --csv prefix of the Locust run")
    parser.add_argument("--users", type=int, help="users of the run (scales min req/s)")
    parser.add_argument("--thresholds", type=Path, help=f"default {DEFAULT_THRESHOLDS}")
    args = parser.parse_args(argv)
    return gate(args.prefix, args.users, args.thresholds)


if __name__ == "__main__":
    sys.exit(main())
