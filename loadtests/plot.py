"""Pictures of load runs (matplotlib, Agg): a run's timeline, and throughput/latency against offered load.

python -m loadtests.plot timeline loadtests/reports/<ts>/load_stats_history.csv out.png
python -m loadtests.plot steps loadtests/reports/<ts>/steps.csv out.png
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

SLO_LINES = ((50.0, "p95 objective"), (100.0, "p99 objective"))


def _f(raw: str | None) -> float:
    try:
        return float(raw) if raw not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def plot_timeline(history_csv: Path, png: Path, title: str = "") -> Path:
    """Throughput and p50/p95/p99 over time (Locust's Aggregated history rows, ~10 s sliding window)."""
    with history_csv.open(newline="") as fh:
        recs = [r for r in csv.DictReader(fh) if r["Name"] == "Aggregated"]
    if not recs:
        raise ValueError(f"{history_csv}: no Aggregated rows")
    t0 = int(recs[0]["Timestamp"])
    t = [int(r["Timestamp"]) - t0 for r in recs]
    fig, (ax_rps, ax_lat) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax_rps.plot(t, [_f(r["Requests/s"]) for r in recs], label="req/s", color="tab:blue")
    ax_rps.plot(t, [_f(r["Failures/s"]) for r in recs], label="failures/s", color="tab:red")
    users = ax_rps.twinx()
    users.plot(t, [_f(r["User Count"]) for r in recs], color="grey", linestyle=":", label="users")
    users.set_ylabel("users")
    ax_rps.set_ylabel("requests/s")
    ax_rps.legend(loc="upper left")
    for col in ("50%", "95%", "99%"):
        ax_lat.plot(t, [_f(r[col]) for r in recs], label=f"p{col[:-1]}")
    _objectives(ax_lat)
    ax_lat.set_xlabel("seconds")
    fig.suptitle(f"Catalog API load run{': ' + title if title else ''}")
    return _save(fig, png)


def plot_steps(steps_csv: Path, png: Path) -> Path:
    """Throughput and p50/p95/p99 (steady state of each step) against users (offered load)."""
    with steps_csv.open(newline="") as fh:
        recs = list(csv.DictReader(fh))
    users = [int(r["users"]) for r in recs]
    fig, (ax_rps, ax_lat) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    ax_rps.plot(users, [_f(r["rps"]) for r in recs], marker="o", label="throughput")
    ax_rps.set_ylabel("requests/s")
    ax_rps.grid(alpha=0.3)
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        ax_lat.plot(users, [_f(r[key]) for r in recs], marker="o", label=key.split("_")[0])
    _objectives(ax_lat)
    ax_lat.set_xscale("log")
    ax_lat.set_xticks(users, [str(u) for u in users])
    ax_lat.set_xlabel("users (offered load; think time from locust.conf)")
    fig.suptitle("Catalog API: throughput and latency against offered load")
    return _save(fig, png)


def _objectives(ax: Axes) -> None:
    for y, label in SLO_LINES:
        ax.axhline(y, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(
            label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7, color="grey", va="bottom"
        )
    ax.set_ylabel("latency, ms")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left")


def _save(fig: Figure, png: Path) -> Path:
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    """CLI: `timeline HISTORY_CSV PNG` or `steps STEPS_CSV PNG`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("timeline", "steps"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, src, dst = argv
    (plot_timeline if kind == "timeline" else plot_steps)(Path(src), Path(dst))
    print(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
