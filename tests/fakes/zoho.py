"""A fake Zoho Inventory: a real local HTTP server speaking Zoho's formats, for tests and demos.

In-process: `with FakeZoho(items=100) as fake: ...` (a free port; `fake.api_base`, `fake.accounts_base`).
Stand-alone: `python -m tests.fakes.zoho --items 50000 --port 8765`.

It serves `/inventory/v1/{items, items/{id}, items/{id}/image, pricebooks, pricebooks/{id}, categories,
salesorders, organizations}` with Zoho's envelope (`code`, `message`, `page_context`) and the OAuth token
endpoint `/oauth/v2/token` (refresh-token grant, at most `mint_cap` tokens per `mint_window_s`). Tests change
the data through `fake.catalog`, program failures with `fail_next`, an outage with `down`, lost answers
of created sales orders with `lose_created`, expire tokens, read `fake.log` and `fake.catalog.salesorders`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .zoho_data import Catalog
from .zoho_routes import API_PREFIX, err, route

TOKEN_PATH = "/oauth/v2/token"
FAIL_KINDS = ("429", "44", "1070", "45", "401", "500")


@dataclass
class LoggedRequest:
    """One request as the fake saw it (never secrets: the token endpoint logs no parameters)."""

    method: str
    path: str
    query: dict[str, str]
    at: float  # time.monotonic() at arrival
    concurrency: int  # API requests in flight at arrival, this one included
    token: str | None
    status: int = 0
    code: int | None = None
    done_at: float = 0.0
    traceparent: str | None = None  # W3C trace context the client sent (the service propagates its own)


@dataclass
class _Failure:
    kind: str
    retry_after: float


@dataclass
class FakeZoho:
    """The fake server and its state; every knob can also be changed while it runs."""

    items: int = 0
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    organization_id: str = "60012345678"
    client_id: str = "1000.FAKECLIENTID"
    client_secret: str = "fake-client-secret"
    refresh_token: str = "1000.fake-refresh-token"
    rate_per_min: int | None = None  # enforce: more arrivals than this in rate_window_s -> throttled
    rate_window_s: float = 60.0
    max_concurrency: int | None = None  # enforce: more API requests in flight -> 1070
    throttle_status: int = 429  # HTTP status of the enforced 44/1070/45 answers (Zoho also uses 200)
    daily_limit: int | None = None  # API calls allowed in all; beyond -> code 45
    latency_s: float = 0.0  # added to every API answer (makes concurrency observable)
    token_ttl_s: int = 3600
    mint_cap: int = 10
    mint_window_s: float = 600.0
    ignore_modified_filter: bool = False  # answer as if `last_modified_time` was not sent
    down: bool = False  # every API request answers 503 (an outage), until set back to False
    lose_created: int = 0  # the next n created sales orders are kept, but answered 502 (an unknown outcome)
    log_max: int = 500_000
    catalog: Catalog = field(init=False)
    log: deque[LoggedRequest] = field(init=False)
    mints: list[float] = field(init=False, default_factory=list)
    tokens: dict[str, float] = field(init=False, default_factory=dict)  # access token -> expiry
    api_calls: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.catalog = Catalog(self.items, self.seed)
        self.log = deque(maxlen=self.log_max)
        self._lock = threading.Lock()
        self._failures: deque[_Failure] = deque()
        self._arrivals: deque[float] = deque()
        self._inflight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle -------------------------------------------------------------------------------
    def start(self) -> FakeZoho:
        """Listen (port 0: a free one) and serve from a daemon thread."""
        self._server = _Server((self.host, self.port), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-zoho", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeZoho:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """What ZOHO_API_BASE should be."""
        return self.url + API_PREFIX

    @property
    def accounts_base(self) -> str:
        """What ZOHO_ACCOUNTS_BASE should be."""
        return self.url

    def settings_env(self) -> dict[str, str]:
        """Environment for the service's settings pointing at this fake."""
        return {
            "ZOHO_CLIENT_ID": self.client_id,
            "ZOHO_CLIENT_SECRET": self.client_secret,
            "ZOHO_REFRESH_TOKEN": self.refresh_token,
            "ZOHO_ORGANIZATION_ID": self.organization_id,
            "ZOHO_API_BASE": self.api_base,
            "ZOHO_ACCOUNTS_BASE": self.accounts_base,
        }

    # ---- programming -----------------------------------------------------------------------------
    def fail_next(self, kind: str, n: int = 1, retry_after: float = 1.0) -> None:
        """The next n API requests fail: "429" (Retry-After), "44"/"1070" (HTTP 200), "45", "401", "500"."""
        if kind not in FAIL_KINDS:
            raise ValueError(f"kind must be one of {FAIL_KINDS}")
        with self._lock:
            self._failures.extend(_Failure(kind, retry_after) for _ in range(n))

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working (401, code 57)."""
        with self._lock:
            self.tokens.clear()

    def api_log(self) -> list[LoggedRequest]:
        """Logged requests to the Inventory API (the token endpoint left out)."""
        with self._lock:
            return [r for r in self.log if r.path.startswith(API_PREFIX)]

    def clear_log(self) -> None:
        """Forget logged requests and the arrival window."""
        with self._lock:
            self.log.clear()
            self._arrivals.clear()

    # ---- request handling (server threads) -------------------------------------------------------
    def _mint(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if params.get("grant_type") != "refresh_token":
            return 200, {"error": "unsupported_grant_type"}
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            return 200, {"error": "invalid_client"}
        if params.get("refresh_token") != self.refresh_token:
            return 200, {"error": "invalid_code"}
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self.mints if now - t < self.mint_window_s]
            if len(recent) >= self.mint_cap:
                return 400, {
                    "error_description": "You have made too many requests continuously. "
                    "Please try again after some time.",
                    "error": "Access Denied",
                    "status": "failure",
                }
            self.mints.append(now)
            token = "1000." + secrets.token_hex(16)
            self.tokens[token] = now + self.token_ttl_s
        return 200, {
            "access_token": token,
            "expires_in": self.token_ttl_s,
            "api_domain": self.url,
            "token_type": "Bearer",
        }

    def _admit(self, entry: LoggedRequest) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """Checks before routing: auth, organization, programmed failures, limits. None: go on."""
        now = entry.at
        with self._lock:
            self._arrivals.append(now)
            while self._arrivals and now - self._arrivals[0] >= self.rate_window_s:
                self._arrivals.popleft()
            expiry = self.tokens.get(entry.token or "")
            if expiry is None or expiry <= now:
                return 401, err(57), {}
            if entry.query.get("organization_id") != self.organization_id:
                return 400, err(6041), {}
            if self._failures:
                fail = self._failures.popleft()
                return _programmed(fail, self.throttle_status)
            if self.max_concurrency is not None and entry.concurrency > self.max_concurrency:
                return self.throttle_status, err(1070), {"Retry-After": "1"}
            if self.rate_per_min is not None and len(self._arrivals) > self.rate_per_min:
                wait = max(1, int(self._arrivals[0] + self.rate_window_s - now + 0.999))
                return self.throttle_status, err(44), {"Retry-After": str(wait)}
            self.api_calls += 1
            if self.daily_limit is not None and self.api_calls > self.daily_limit:
                return self.throttle_status, err(45), {}
        return None

    def handle(self, h: _Handler) -> None:
        """Serve one request (called by the handler thread)."""
        split = urlsplit(h.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        auth = h.headers.get("Authorization", "")
        token = auth.removeprefix("Zoho-oauthtoken ").strip() if auth.startswith("Zoho-oauthtoken ") else None
        if split.path == TOKEN_PATH:
            entry = LoggedRequest(h.command, split.path, {}, time.monotonic(), 0, None)
            params = {**query, **dict(parse_qsl(body.decode("utf-8", "replace")))}
            status, doc = self._mint(params) if h.command == "POST" else (405, {"error": "method"})
            self._finish(h, entry, status, doc, "", {}, in_flight=False)
            return
        with self._lock:
            self._inflight += 1
            entry = LoggedRequest(h.command, split.path, query, time.monotonic(), self._inflight, token)
            entry.traceparent = h.headers.get("traceparent")
        answer: tuple[int, Any, str, dict[str, str]] = (500, err(500), "", {})
        try:
            if not split.path.startswith(API_PREFIX):
                answer = (404, {"code": 5, "message": "Invalid URL Passed"}, "", {})
            elif self.down:
                answer = (503, err(500), "", {})
            elif (refused := self._admit(entry)) is not None:
                answer = (refused[0], refused[1], "", refused[2])
            else:
                if self.latency_s:
                    time.sleep(self.latency_s)
                org = {"organization_id": self.organization_id, "name": "Fake Org", "currency_code": "SAR"}
                routed = route(
                    self.catalog, org, self.ignore_modified_filter, h.command, split.path, query, body
                )
                answer = (*routed, {})
                if routed[0] == 201 and split.path.endswith("/salesorders"):
                    with self._lock:
                        lose, self.lose_created = self.lose_created > 0, max(0, self.lose_created - 1)
                    if lose:
                        answer = (502, err(500), "", {})
        finally:
            self._finish(h, entry, *answer, in_flight=True)

    def _finish(
        self,
        h: _Handler,
        entry: LoggedRequest,
        status: int,
        doc: Any,
        ctype: str,
        headers: dict[str, str],
        *,
        in_flight: bool,
    ) -> None:
        """Log the request and leave the in-flight count *before* answering: a client may send its next
        call as soon as it has the answer, and that call must not find this one still counted."""
        if isinstance(doc, bytes):
            payload = doc
        else:
            payload = json.dumps(doc, ensure_ascii=False).encode()
            ctype = "application/json;charset=UTF-8"
            entry.code = doc.get("code") if isinstance(doc, dict) else None
        entry.status = status
        with self._lock:
            entry.done_at = time.monotonic()
            self.log.append(entry)
            if in_flight:
                self._inflight -= 1
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakeZoho


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Zoho's front ends
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle and delayed ACKs add 40 ms to each
    # answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    def do_POST(self) -> None:
        self.server.fake.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _programmed(fail: _Failure, throttle_status: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    retry = {"Retry-After": str(max(0, round(fail.retry_after)))}
    if fail.kind == "429":
        return 429, err(44), retry
    if fail.kind in ("44", "1070"):
        return 200, err(int(fail.kind)), {}
    if fail.kind == "45":
        return throttle_status, err(45), {}
    if fail.kind == "401":
        return 401, err(57), {}
    return 500, err(500), {}


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.fakes.zoho --items N --port P`: serve until interrupted."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--rate-per-min", type=int, default=None, help="enforce Zoho's per-minute limit")
    ap.add_argument("--max-concurrency", type=int, default=None, help="enforce Zoho's concurrency limit")
    ap.add_argument("--daily-limit", type=int, default=None)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--ignore-modified-filter", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    fake = FakeZoho(
        items=args.items,
        seed=args.seed,
        host=args.host,
        port=args.port,
        rate_per_min=args.rate_per_min,
        max_concurrency=args.max_concurrency,
        daily_limit=args.daily_limit,
        latency_s=args.latency_ms / 1000,
        ignore_modified_filter=args.ignore_modified_filter,
    ).start()
    print(f"fake Zoho: {args.items} items generated in {time.monotonic() - t0:.1f} s, serving {fake.url}")
    for key, value in fake.settings_env().items():
        print(f"{key}={value}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
