"""/metrics over 2 processes (exact counts, route templates, access), trace context, OTLP export, slow
queries: all against the real server."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, run
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "scrape-token-0123456789"
PRODUCTS = "/api/consumer/products"
DETAIL = "/api/consumer/products/{id}"
FLUSH_S = 0.1


@pytest.fixture(scope="module")
def metrics_server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two processes; loopback is not a metrics network here, so only the token opens /metrics."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("metrics"),
        METRICS_NETWORKS="10.0.0.0/8",
        METRICS_TOKEN=TOKEN,
        METRICS_FLUSH_S=str(FLUSH_S),
    ).start()
    yield proc
    proc.stop()


def scrape(base_url: str) -> dict[str, Any]:
    """name -> family, parsed by prometheus_client."""
    resp = httpx.get(base_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


def request_counts(families: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    """(method, route, status) -> requests counted."""
    out = {}
    for sample in families["http_server_request_duration_seconds"].samples:
        if sample.name.endswith("_count"):
            labels = sample.labels
            key = (labels["http_request_method"], labels["http_route"], labels["http_response_status_code"])
            out[key] = sample.value
    return out


def settle() -> None:
    time.sleep(FLUSH_S * 5)  # every process has written a snapshot since


def test_counts_exact_over_two_processes(metrics_server: ServerProcess) -> None:
    base = metrics_server.base_url
    before = request_counts(scrape(base))
    pids = set()
    ids = [p["id"] for p in httpx.get(base + PRODUCTS + "?page_size=5").json()["items"]]
    sent_list, sent_detail, sent_404 = 40, 0, 3
    for i in range(sent_list):
        # A new connection each time: the two processes take turns accepting.
        resp = httpx.get(base + PRODUCTS, params={"page": 1 + i % 3}, headers={"Connection": "close"})
        assert resp.status_code == 200
        pids.add(re.search(r'proc;desc="(\d+)"', resp.headers["server-timing"]).group(1))  # type: ignore[union-attr]
    for pid in ids:
        assert httpx.get(f"{base}{PRODUCTS}/{pid}", headers={"Connection": "close"}).status_code == 200
        sent_detail += 1
    for _ in range(sent_404):
        assert httpx.get(f"{base}{PRODUCTS}/999999999").status_code == 404
    assert len(pids) == 2, "both processes should have served (else this test proves nothing)"
    settle()
    families = scrape(base)
    after = request_counts(families)

    def delta(key: tuple[str, str, str]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert delta(("GET", PRODUCTS, "200")) == sent_list + 1  # + the ids lookup
    assert delta(("GET", DETAIL, "200")) == sent_detail
    assert delta(("GET", DETAIL, "404")) == sent_404
    routes = {key[1] for key in after}
    assert all(not re.search(r"/\d+", route) for route in routes), routes  # templates, never raw ids
    assert families["process_metrics_snapshots"].samples[0].value >= 2
    # Buckets down to 1 ms, cumulative, ending with +Inf == count.
    samples = families["http_server_request_duration_seconds"].samples
    mine = [
        s
        for s in samples
        if s.labels.get("http_route") == PRODUCTS and s.labels["http_response_status_code"] == "200"
    ]
    bounds = [s.labels["le"] for s in mine if s.name.endswith("_bucket")]
    assert "0.001" in bounds and bounds[-1] == "+Inf"
    counts = [s.value for s in mine if s.name.endswith("_bucket")]
    assert counts == sorted(counts) and counts[-1] == after[("GET", PRODUCTS, "200")]


def test_scrape_is_stable_and_lists_every_family(metrics_server: ServerProcess) -> None:
    base = metrics_server.base_url
    settle()
    first = scrape(base)
    second = scrape(base)  # most likely answered by the other process: same sums (no alternation)
    key = ("GET", PRODUCTS, "200")
    assert request_counts(first)[key] == request_counts(second)[key]
    for name in (
        "http_server_active_requests",
        "page_cache_requests",
        "db_pool_connections",
        "orders_placed",
    ):
        assert name in first, name
    pool = first["db_pool_connections"].samples[0].value
    assert pool >= 2  # DB_POOL_MIN per process, summed over the live processes
    cache = {
        (s.labels["route"], s.labels["level"], s.labels["result"]): s.value
        for s in first["page_cache_requests"].samples
    }
    assert cache[(PRODUCTS, "l1", "hit")] > 0 and cache[(DETAIL, "l1", "miss")] > 0
    fills = {s.labels["route"]: s.value for s in first["page_cache_fills"].samples}
    assert fills[PRODUCTS] >= 3  # pages 1-3 at least once each


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 404),
        ({"Authorization": "Bearer wrong"}, 404),
        ({"Authorization": f"Basic {TOKEN}"}, 404),
        ({"X-Forwarded-For": "10.1.2.3"}, 404),  # loopback is no trusted proxy here
        ({"Authorization": f"Bearer {TOKEN}"}, 200),
    ],
)
def test_access(metrics_server: ServerProcess, headers: dict[str, str], status: int) -> None:
    resp = httpx.get(metrics_server.base_url + "/metrics", headers=headers)
    assert resp.status_code == status
    if status == 404:
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["code"] == "not_found"


def test_traceparent_joined_and_answered(metrics_server: ServerProcess) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    resp = httpx.get(
        metrics_server.base_url + PRODUCTS,
        headers={"traceparent": f"00-{trace_id}-{parent}-01", "X-Request-ID": "my-req-1"},
    )
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == "my-req-1"  # the request id stays
    version, tid, span, flags = resp.headers["traceparent"].split("-")
    assert (version, tid, flags) == ("00", trace_id, "01")
    assert re.fullmatch(r"[0-9a-f]{16}", span) and span != parent


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has no more fields
        "0" * 200,
    ],
)
def test_malformed_traceparent_ignored(metrics_server: ServerProcess, bad: str) -> None:
    resp = httpx.get(metrics_server.base_url + PRODUCTS, headers={"traceparent": bad})
    assert resp.status_code == 200
    version, tid, _span, _flags = resp.headers["traceparent"].split("-")
    assert version == "00" and re.fullmatch(r"[0-9a-f]{32}", tid) and tid not in bad
    assert tid == resp.headers["x-request-id"]  # a new trace, named by our own request id


class _Receiver(BaseHTTPRequestHandler):
    """A tiny OTLP/HTTP receiver: keeps every posted JSON body."""

    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/json":
            type(self).bodies.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def otlp(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, type[_Receiver]]]:
    """A server exporting spans to a local receiver, logging JSON, every query counted as slow."""
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("otlp"),
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}",
        OTEL_EXPORT_INTERVAL_S="0.1",
        LOG_FORMAT="json",
        SLOW_QUERY_MS="0.001",
        CACHE_ENABLED="false",
        CATALOG_INDEX="false",  # every answer from SQL: the probe below runs queries
        ROW_STORE_MB="0",
    ).start()
    yield proc, _Receiver
    proc.stop()
    receiver.shutdown()
    receiver.server_close()


def test_spans_exported_over_otlp(otlp: tuple[ServerProcess, type[_Receiver]]) -> None:
    server, receiver = otlp
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    resp = httpx.get(server.base_url + PRODUCTS + "/1", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    our_span = resp.headers["traceparent"].split("-")[2]
    deadline = time.monotonic() + 10
    found = None
    while found is None and time.monotonic() < deadline:
        for body in list(receiver.bodies):
            for rs in body["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for span in ss["spans"]:
                        if span["traceId"] == trace_id:
                            found = (rs, span)
        time.sleep(0.1)
    assert found is not None, "no span reached the receiver"
    resource, span = found
    assert span["spanId"] == our_span and span["parentSpanId"] == parent
    assert span["name"] == f"GET {DETAIL}" and span["kind"] == 2
    attrs = {a["key"]: a["value"] for a in span["attributes"]}
    assert attrs["http.route"] == {"stringValue": DETAIL}
    assert attrs["http.response.status_code"] == {"intValue": str(resp.status_code)}
    assert int(span["endTimeUnixNano"]) > int(span["startTimeUnixNano"])
    assert resource["resource"]["attributes"][0]["value"] == {"stringValue": "catalog-api"}


def test_slow_queries_named_with_request_and_trace_ids(otlp: tuple[ServerProcess, type[_Receiver]]) -> None:
    server, _ = otlp
    resp = httpx.get(server.base_url + PRODUCTS + "/1", headers={"X-Request-ID": "slow-probe-77"})
    assert resp.status_code == 200
    trace_id = resp.headers["traceparent"].split("-")[1]
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while not lines and time.monotonic() < deadline:
        lines = [
            json.loads(line)
            for line in Path(server.log_path).read_text().splitlines()
            if line.startswith("{") and "slow-probe-77" in line and "slow query" in line
        ]
        time.sleep(0.1)
    assert lines, "no slow query logged"
    for line in lines:
        assert line["request_id"] == "slow-probe-77" and line["trace_id"] == trace_id
        assert re.fullmatch(r"slow query [a-z_.]+\.[A-Za-z0-9_.]+: [\d.]+ ms", line["msg"]), line["msg"]
        assert "$1" not in line["msg"] and "SELECT" not in line["msg"]
    assert any(".repo." in line["msg"] for line in lines)


def _value(families: dict[str, Any], name: str, **labels: str) -> float:
    family = families.get(name)
    if family is None:
        return 0.0
    return sum(
        s.value
        for s in family.samples
        if s.name in (name, f"{name}_total", f"{name}_count")
        and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_sign_ins_counted(metrics_server: ServerProcess) -> None:
    base = metrics_server.base_url
    before = _value(scrape(base), "auth_sign_ins", outcome="failed")
    for i in range(2):
        body = {"email": f"nobody-{i}-{time.time_ns()}@example.com", "password": "wrong password 123"}
        assert httpx.post(base + "/api/auth/login", json=body).status_code == 401
    mfa_before = _value(scrape(base), "auth_mfa_verifications", outcome="failed")
    body = {"mfa_token": "no-such-challenge-0123456789", "code": "123456"}
    assert httpx.post(base + "/api/auth/mfa/verify", json=body).status_code == 401
    settle()
    families = scrape(base)
    assert _value(families, "auth_sign_ins", outcome="failed") == before + 2
    assert _value(families, "auth_mfa_verifications", outcome="failed") == mfa_before + 1


def test_catalog_change_lag_counts_from_commit(metrics_server: ServerProcess, database: Database) -> None:
    """Each process observes each change once, from its commit: a transaction that waits 1.5 s after its
    write and before COMMIT adds nothing to the lag (measured from the statement, each would be >= 1.5 s)."""
    base = metrics_server.base_url
    settle()
    families = scrape(base)
    before = _value(families, "catalog_change_lag_seconds")
    before_sum = _lag_sum(families)
    run(
        database.execute(
            "BEGIN; SELECT clock_timestamp() AS written;"
            " UPDATE products SET stock_on_hand = stock_on_hand + 1 WHERE id = 1;"
            " SELECT pg_sleep(1.5); COMMIT"
        )
    )
    deadline = time.monotonic() + 10
    families = scrape(base)
    while _value(families, "catalog_change_lag_seconds") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        families = scrape(base)
    assert _value(families, "catalog_change_lag_seconds") == before + 2  # once in each process
    assert 0 < _lag_sum(families) - before_sum < 2 * 1.0
    # The stamp is the commit's: the change row's committed_at is after the sleep, its version's own.
    row = run(
        database.fetch(
            "SELECT c.committed_at - s.changed_at AS wait FROM catalog_changes c"
            " JOIN catalog_state s ON s.version = c.version"
        )
    )
    assert row and row[0]["wait"].total_seconds() >= 1.5


def _lag_sum(families: dict[str, Any]) -> float:
    return sum(s.value for s in families["catalog_change_lag_seconds"].samples if s.name.endswith("_sum"))


def test_dead_process_counts_stay(metrics_server: ServerProcess) -> None:
    base = metrics_server.base_url
    key = ("GET", PRODUCTS, "200")
    settle()
    before = request_counts(scrape(base))[key]
    procs = httpx.get(base + "/ready").json()["processes"]
    victim = procs["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        procs = httpx.get(base + "/ready").json().get("processes", {})
        pids = [w["pid"] for w in procs.get("workers", [])]
        if procs.get("live") == 2 and victim not in pids:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the killed worker was not replaced")
    # The dead process's counts stay (its last snapshot), counted once; the new one adds its own.
    assert request_counts(scrape(base))[key] == before
    for _ in range(10):
        assert httpx.get(base + PRODUCTS, headers={"Connection": "close"}).status_code == 200
    settle()
    assert request_counts(scrape(base))[key] == before + 10
