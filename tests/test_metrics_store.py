"""The metrics registry, snapshot files and exposition, on real files (server/metrics)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from server.metrics.exposition import render
from server.metrics.families import FAMILIES
from server.metrics.registry import Metrics, route_template
from server.metrics.store import SnapshotStore, merge, prepare_run_dir

HTTP = "http_server_request_duration_seconds"
DETAIL = "/api/consumer/products/{id}"


def families(text: bytes) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def test_route_templates() -> None:
    assert route_template("/api/consumer/products/:id") == "/api/consumer/products/{id}"
    assert route_template("/*path") == "/{path}"
    assert route_template("/health") == "/health"


def test_orders_recording_functions() -> None:
    metrics = Metrics()
    metrics.orders.placed()
    metrics.orders.placed(2)
    metrics.orders.refused("out_of_stock")
    metrics.orders.refused("out_of_stock")
    metrics.orders.refused("idempotency_conflict")
    got = families(render(merge(metrics.snapshot(), SnapshotStore(None, 0.5))))
    assert got["orders_placed"] == [("orders_placed_total", {}, 3.0)]
    assert sorted((s[1]["reason"], s[2]) for s in got["orders_refused"]) == [
        ("idempotency_conflict", 1.0),
        ("out_of_stock", 2.0),
    ]


def test_merge_keeps_dead_counters_and_drops_their_gauges(tmp_path: Path) -> None:
    run_dir = prepare_run_dir(tmp_path)
    assert run_dir.parent == tmp_path and not list(run_dir.iterdir())
    mine = Metrics()
    timer = mine.timer("GET", "/api/consumer/products/:id", "catalog")
    assert timer is not None
    timer.observe(200, 0.0004)
    timer.observe(200, 0.003)
    timer.observe(429, 0.0001)
    own = mine.snapshot()
    own["scalars"]["http_server_active_requests"] = [[[], 3]]
    store = SnapshotStore(run_dir, 0.5)
    store.bind(os.getpid(), time.time())
    # A process that is gone (a pid above the kernel's pid_max of 2^22) and whose file is old.
    dead = {
        "pid": 2**22 + 12345,
        "scalars": {"http_server_active_requests": [[[], 7]], "orders_placed_total": [[[], 5]]},
        "histograms": {
            "http_server_request_duration_seconds": own["histograms"]["http_server_request_duration_seconds"]
        },
    }
    path = run_dir / "dead.json"
    path.write_bytes(orjson.dumps(dead))
    old = time.time() - 60
    os.utime(path, (old, old))
    got = families(render(merge(own, store)))
    counts = {
        (s[1]["http_route"], s[1]["http_response_status_code"]): s[2]
        for s in got[HTTP]
        if s[0].endswith("_count")
    }
    assert counts == {
        ("/api/consumer/products/{id}", "200"): 4.0,
        ("/api/consumer/products/{id}", "429"): 2.0,
    }
    buckets = [s for s in got["http_server_request_duration_seconds"] if s[0].endswith("_bucket")]
    le_1ms = next(
        s[2] for s in buckets if s[1]["le"] == "0.001" and s[1]["http_response_status_code"] == "200"
    )
    assert le_1ms == 2.0  # 0.4 ms in each process; 3 ms above the 1 ms bucket
    assert got["http_server_active_requests"] == [("http_server_active_requests", {}, 3.0)]  # dead: dropped
    assert got["orders_placed"] == [("orders_placed_total", {}, 5.0)]  # dead: kept
    decisions = {(s[1]["group"], s[1]["decision"]): s[2] for s in got["ratelimit_decisions"]}
    assert decisions == {("catalog", "allowed"): 2.0, ("catalog", "limited"): 1.0}  # own process only
    assert got["process_metrics_snapshots"][0][2] == 2


def test_disabled_registry_gives_no_timers() -> None:
    assert Metrics(enabled=False).timer("GET", "/x", None) is None


def test_dashboard_queries_name_real_families() -> None:
    dashboard = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
    doc = json.loads(dashboard.read_text())
    names = {f.name for f in FAMILIES}
    used = set()
    for panel in doc["panels"]:
        for target in panel["targets"]:
            for word in re.findall(r"\b[a-z][a-z0-9_]+\b(?=\{|\[)", target["expr"]):
                used.add(re.sub(r"_(bucket|count|sum)$", "", word))
    assert used and used <= names, used - names
    titles = " ".join(p["title"].lower() for p in doc["panels"])
    topics = ("request rate", "p50 / p95 / p99", "error", "cache hit ratio", "pool", "limiter", "freshness")
    for topic in topics:
        assert topic in titles, topic


def test_no_exporter_without_an_endpoint() -> None:
    # A fresh interpreter: building the app without OTEL_EXPORTER_OTLP_ENDPOINT imports no exporter code.
    code = (
        "import sys\n"
        "from server.app import create_app\n"
        "from server.settings import load_settings\n"
        "app, state = create_app(load_settings(OTEL_EXPORTER_OTLP_ENDPOINT=''))\n"
        "assert state.obs is not None and state.obs.exporter is None\n"
        "print(sorted(m for m in sys.modules if 'otlp' in m or m.startswith('opentelemetry')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_unusable_metrics_dir_is_refused_by_name(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",  # never reached: the check comes first
        "METRICS_DIR": str(blocker / "sub"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "server", "_robyn"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 2 and "METRICS_DIR" in out.stderr, out.stderr
