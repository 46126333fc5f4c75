"""The Prometheus text format (version 0.0.4) of merged samples."""

from __future__ import annotations

from server.metrics.families import FAMILIES, Family
from server.metrics.store import Merged

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INF = 'le="+Inf"'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=False)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _bound(bound: float) -> str:
    return repr(float(bound))


def render(merged: Merged) -> bytes:
    """Every family of FAMILIES, HELP and TYPE lines first, samples sorted by label values."""
    lines: list[str] = []
    for family in FAMILIES:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        if family.kind == "histogram":
            _histogram(lines, family, merged.histograms.get(family.name, {}))
        elif family.name == "process_metrics_snapshots":
            lines.append(f"{family.name} {merged.processes}")
        else:
            for key, value in sorted(merged.scalars.get(family.name, {}).items()):
                lines.append(f"{family.name}{_labels(family.labels, key)} {_number(value)}")
    lines.append("")
    return "\n".join(lines).encode()


def _histogram(lines: list[str], family: Family, series: dict[tuple[str, ...], list[float]]) -> None:
    name = family.name
    for key, row in sorted(series.items()):
        if len(row) != len(family.buckets) + 2:
            continue  # a snapshot of another build's buckets: skipped rather than misread
        cumulative = 0.0
        for bound, count in zip(family.buckets, row, strict=False):
            cumulative += count
            labels = _labels(family.labels, key, f'le="{_bound(bound)}"')
            lines.append(f"{name}_bucket{labels} {_number(cumulative)}")
        cumulative += row[len(family.buckets)]
        lines.append(f"{name}_bucket{_labels(family.labels, key, _INF)} {_number(cumulative)}")
        lines.append(f"{name}_sum{_labels(family.labels, key)} {_number(row[-1])}")
        lines.append(f"{name}_count{_labels(family.labels, key)} {_number(cumulative)}")
