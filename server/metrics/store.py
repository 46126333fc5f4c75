"""Snapshot files: how one scrape sees every process's numbers.

Each process writes its snapshot to `<run dir>/<pid>-<start>.json` every METRICS_FLUSH_S (default 0.5 s)
and once more at shutdown (write to a temporary name, then rename: a reader never sees half a file). The
process answering /metrics merges every file but its own with its own current numbers. So:

- a scrape never alternates between processes: it always sums all of them;
- another process's numbers are at most METRICS_FLUSH_S old (plus the time to write); the answering
  process's are current;
- a process that died keeps its last file: its counters stay in the sums (they never go back), and they
  are counted once (a replacement writes under its own pid and start time). Its gauges are dropped once
  its file is older than STALE_FLUSHES flush intervals (a live process rewrites its file every interval).

The run directory is made by the Robyn master before it forks (`prepare_run_dir`): one per service run,
emptied at start; run directories of masters that are gone are removed then too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from server.metrics.families import BY_NAME

log = logging.getLogger("server.metrics")
STALE_FLUSHES = 4
Key = tuple[str, ...]


def prepare_run_dir(base: Path) -> Path:
    """A fresh, empty directory for this service run under `base` (other runs' dirs of dead masters go)."""
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob("run-*"):
        with contextlib.suppress(ValueError):
            if not _alive(int(old.name.removeprefix("run-"))):
                shutil.rmtree(old, ignore_errors=True)
    run = base / f"run-{os.getpid()}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    return run


def remove_run_dir(run: Path) -> None:
    """Remove this run's directory (the master, at exit)."""
    shutil.rmtree(run, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SnapshotStore:
    """This process's file in the run directory, and the merge of all of them."""

    def __init__(self, run_dir: Path | None, flush_s: float) -> None:
        self.run_dir = run_dir
        self.flush_s = flush_s
        self.own: Path | None = None

    def bind(self, pid: int, started: float) -> None:
        """Name this process's file (after the fork: pid and start time make it unique)."""
        if self.run_dir is not None:
            self.own = self.run_dir / f"{pid}-{int(started * 1000)}.json"

    def write(self, snapshot: dict[str, Any]) -> None:
        """Replace this process's file with `snapshot`."""
        if self.own is None:
            return
        tmp = self.own.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(snapshot))
            os.replace(tmp, self.own)
        except OSError as exc:  # a full or removed disk must never fail a request or the flush loop
            log.warning("metrics snapshot not written: %s", exc)

    def others(self) -> list[tuple[dict[str, Any], bool]]:
        """(snapshot, live) of every other process's file."""
        if self.run_dir is None:
            return []
        out = []
        now = time.time()
        for path in self.run_dir.glob("*.json"):
            if path == self.own:
                continue
            try:
                raw = path.read_bytes()
                mtime = path.stat().st_mtime
                snap = orjson.loads(raw)
            except (OSError, orjson.JSONDecodeError):
                continue  # removed between the listing and the read, or (never) torn
            live = now - mtime <= STALE_FLUSHES * self.flush_s and _alive(int(snap.get("pid", 0)))
            out.append((snap, live))
        return out


class Merged:
    """Samples of many snapshots combined per family (see families.Combine)."""

    def __init__(self) -> None:
        self.scalars: dict[str, dict[Key, float]] = {}
        self.histograms: dict[str, dict[Key, list[float]]] = {}
        self.processes = 0

    def add(self, snap: dict[str, Any], live: bool) -> None:
        """Fold one process's snapshot in (`live`: its gauges count too)."""
        self.processes += 1
        for name, samples in snap.get("scalars", {}).items():
            family = BY_NAME.get(name)
            if family is None or (family.combine != "sum" and not live):
                continue
            series = self.scalars.setdefault(name, {})
            for labels, value in samples:
                key = tuple(labels)
                if family.combine == "max":
                    series[key] = max(series.get(key, value), value)
                else:
                    series[key] = series.get(key, 0) + value
        for name, samples in snap.get("histograms", {}).items():
            hseries = self.histograms.setdefault(name, {})
            for labels, row in samples:
                key = tuple(labels)
                old = hseries.get(key)
                if old is None or len(old) != len(row):
                    hseries[key] = list(row)
                else:
                    hseries[key] = [a + b for a, b in zip(old, row, strict=True)]


def merge(own: dict[str, Any], store: SnapshotStore) -> Merged:
    """This process's current numbers plus every other process's last snapshot."""
    merged = Merged()
    merged.add(own, True)
    for snap, live in store.others():
        merged.add(snap, live)
    return merged
