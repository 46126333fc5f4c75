"""The one per-route wrapper: request id, input validation, errors, conditional GET, coding, headers, logging.

Robyn middlewares cost a Python round trip each (DESIGN.md: 15k -> 12.6k req/s for one pair), so every
cross-cutting concern lives in this single wrapper, and bodies stay `bytes` end to end.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_plus

from robyn import Headers, Request, Response

from server.auth import Auth, Principal, identify, require_scopes
from server.body import BodySpec, inputs_and_body
from server.db.pool import DATABASE_UNAVAILABLE, QueryStats, query_stats_var
from server.edge import Edge
from server.encoding import (
    CODINGS,
    MIN_BYTES,
    Representations,
    coding_etag,
    encode,
    etag_matches,
    negotiate,
    strong_etag,
)
from server.errors import AppError, ServiceUnavailable
from server.log import request_id_var
from server.metrics.registry import route_template
from server.metrics.trace import join as join_trace
from server.metrics.trace import trace_var
from server.params import Param, parse_inputs

if TYPE_CHECKING:
    from server.metrics.service import Observability

log = logging.getLogger("server.http")

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
JSON = "application/json"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "cross-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"


@dataclass(slots=True)
class Reply:
    """What a handler returns: bytes and how to deliver them."""

    body: bytes | None  # None: the identity bytes of `encoded`, made only if sent
    status: int = 200
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None  # computed from the body when None and `conditional`
    encoded: Representations | None = None  # pre-encoded bodies (a cached Page); else encoded per request
    conditional: bool = True  # honour If-None-Match with 304
    cache_control: str | None = None
    compressible: bool = True


@dataclass(slots=True)
class Call:
    """The validated request as handlers see it."""

    params: dict[str, Any]
    headers: Headers
    request_id: str
    request: Request
    input: Any = None  # Route.typed(params), memoised with them
    body: Any = None  # Route.body's checked value: a dict of JSON members, or raw bytes
    principal: Principal | None = None  # the caller, on routes with Route.auth


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: method and path (Robyn syntax), handler, declared inputs, and OpenAPI facts."""

    method: str
    path: str
    handler: Handler
    params: Sequence[Param] = ()
    summary: str = ""
    tag: str = "catalog"
    response_schema: dict[str, Any] | None = None
    content_type: str = JSON
    errors: tuple[int, ...] = (422,)
    head: bool = True
    group: str = "catalog"  # rate-limit policy group
    any_query: bool = False  # catch-alls (and images) ignore the query string
    typed: Callable[[dict[str, Any]], Any] | None = None  # validated params -> the handler's query object
    ranges: bool = False  # answers single byte ranges (206, Content-Range): documented in OpenAPI
    body: BodySpec | None = None  # a JSON object or raw bytes, checked before the handler runs
    auth: Auth | None = None  # None: anyone; else the authenticator, whether required, and scopes


class HttpConfig:
    """The settings the wrapper reads on every request, copied once into plain attributes, and the
    process's count of requests in flight (the load-shedding bound)."""

    def __init__(
        self,
        *,
        edge: Edge,
        slow_request_ms: float,
        server_timing: bool,
        max_inflight: int = 512,
        obs: Observability | None = None,
    ) -> None:
        self.edge = edge
        self.obs = obs  # metrics, trace context, span export (server/metrics); None: none of them
        self.slow_request_s = slow_request_ms / 1000
        self.server_timing = server_timing
        self.max_inflight = max_inflight
        self.inflight = 0
        self.shed = 0
        # With CORS on, every answer depends on Origin (allowed or not): caches must keep them apart.
        self.error_vary = {"Vary": "Origin"} if edge.cors_enabled else {}
        self.vary_plain = "Origin" if edge.cors_enabled else None
        self.vary_encoded = "Accept-Encoding, Origin" if edge.cors_enabled else "Accept-Encoding"


# Memo bounds: hot pages repeat short queries; anything long is just parsed. Per route, emptied when full
# (~1 KB an entry: 16 MB at most for the product list): the shopper mix asks for 11,000 distinct lists and
# 8,000 details at 10,000 products, and at 4,096 (filled once, then closed) most of its URLs were parsed,
# validated and normalised again on every request.
MEMO_MAX_ENTRIES = 16_384
MEMO_MAX_KEY_CHARS = 256


class _RequestIds:
    """128-bit ids (hex): 64 random bits drawn once per process, then a counter. Unique across processes
    and restarts like a random id, without a getrandom() system call per request (5 % of a worker's time
    on the shopper mix); request ids are labels, not secrets."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(1)

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.reset)  # a forked worker must not repeat its parent's ids


def new_request_id() -> str:
    """A fresh 128-bit request id (hex)."""
    return _ids.new()


def decoded_query(request: Request) -> dict[str, list[str]]:
    """Query parameters, percent-decoded (Robyn passes them through raw)."""
    raw = request.query_params.to_dict()
    if not raw:
        return raw
    out: dict[str, list[str]] = {}
    for key, values in raw.items():
        out.setdefault(_unquote(key), []).extend(_unquote(v) for v in values)
    return out


def _unquote(text: str) -> str:
    # Most keys and values are plain: skip the decoder for them.
    return unquote_plus(text) if "%" in text or "+" in text else text


def decoded_path(request: Request) -> dict[str, str]:
    """Path parameters, percent-decoded."""
    return {k: unquote(v) for k, v in dict(request.path_params).items()}


def _not_modified_since(last_modified: str, if_modified_since: str) -> bool:
    # Any date we cannot read (including ones whose offset overflows) is ignored, as RFC 9110 asks.
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, OverflowError, IndexError):
        return False


def client_request_id(request: Request) -> str:
    """The client's X-Request-ID when well-formed, else a new id."""
    given = request.headers.get("x-request-id")
    if given and REQUEST_ID_RE.fullmatch(given):
        return given
    return new_request_id()


def _response(status: int, headers: dict[str, str], body: bytes) -> Response:
    return Response(status_code=status, headers=Headers(headers), description=body)


def problem_response(exc: AppError, request_id: str, extra: dict[str, str] | None = None) -> Response:
    """Render an AppError as application/problem+json with the standard headers."""
    headers = {
        "Content-Type": "application/problem+json",
        "X-Request-ID": request_id,
        "Cache-Control": "no-store",
        "Content-Security-Policy": API_CSP,
        **SECURITY_HEADERS,
        **exc.headers,
        **(extra or {}),
    }
    return _response(exc.status, headers, exc.body(request_id))


class Overloaded(ServiceUnavailable):
    """More requests in flight in this process than MAX_INFLIGHT: shed early, the client retries."""

    detail_default = "The server is busy. Retry after the delay given in Retry-After."
    detail_ar_default = "الخادم مشغول. أعد المحاولة بعد المهلة المذكورة في Retry-After."


def _memo_key(query: dict[str, list[str]], path: dict[str, str]) -> tuple[Any, ...] | None:
    """The memo key of a request's raw inputs, or None when they are too long to keep."""
    key = (*((k, *v) for k, v in query.items()), *path.values())
    size = sum(len(k) + sum(map(len, v)) for k, v in query.items()) + sum(map(len, path.values()))
    return key if size <= MEMO_MAX_KEY_CHARS else None


def wrap(route: Route, config: HttpConfig, head: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Build the Robyn handler for one route (GET or, with head=True, its HEAD twin)."""
    specs = tuple(route.params)
    handler, typed = route.handler, route.typed
    edge, any_query = config.edge, route.any_query
    policy = edge.policy(route.group)
    sheddable = route.group != "health"  # liveness must answer even when the process is saturated
    auth, body_spec = route.auth, route.body
    body_limit = body_spec.max_bytes if body_spec is not None else None
    safe = route.method in SAFE_METHODS  # writes are never cached, tagged or answered 304
    # Validated inputs (read-only: handlers never mutate them) memoised per route, bounded in entries and
    # in key size, and only after validation succeeded: raw input can neither grow nor poison it.
    memo: dict[tuple[Any, ...], tuple[dict[str, Any], Any]] = {}
    no_input: tuple[dict[str, Any], Any] = ({}, None)
    obs = config.obs
    method = "HEAD" if head else route.method
    timer = None if obs is None else obs.metrics.timer(method, route.path, route.group if policy else None)
    tracing = obs is not None and obs.trace_context
    exporter = None if obs is None else obs.exporter
    root_flags = "01" if exporter is not None else "00"  # a trace we start is sampled when we export
    route_label = route_template(route.path)
    span_name = f"{method} {route_label}"

    def inputs(query: dict[str, list[str]], path: dict[str, str]) -> tuple[dict[str, Any], Any]:
        if not specs:
            return no_input
        if any_query:
            query = {}
        key = _memo_key(query, path)
        found = memo.get(key) if key is not None else None
        if found is None:
            params = parse_inputs(specs, query, path)
            found = (params, typed(params) if typed is not None else None)
            if key is not None:
                if len(memo) >= MEMO_MAX_ENTRIES:
                    memo.clear()
                memo[key] = found
        return found

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        given = request.headers.get("x-request-id")
        own_id = given is None or REQUEST_ID_RE.fullmatch(given) is None
        request_id: str = new_request_id() if given is None or own_id else given
        rid_token = request_id_var.set(request_id)
        extra: dict[str, str] = {}
        traceparent = trace_token = None
        parent = ""
        if tracing:
            # Our span id and, for a new trace, its id come from a fresh request id (no randomness drawn).
            local = request_id if own_id else new_request_id()
            incoming = request.headers.get("traceparent")
            if incoming is None:
                traceparent = f"00-{local}-{local[:8]}{local[24:]}-{root_flags}"
            else:
                traceparent, parent = join_trace(incoming, local, exporter is not None)
            trace_token = trace_var.set(traceparent)
            extra["traceparent"] = traceparent
        stats = QueryStats()
        stats_token = query_stats_var.set(stats)
        status = 500
        # Every request counts (the drain at shutdown waits for the count to reach 0); only sheddable ones
        # are refused when the process is saturated.
        config.inflight += 1
        try:
            if sheddable and config.inflight > config.max_inflight:
                config.shed += 1
                raise Overloaded(headers={"Retry-After": "1"})
            query = decoded_query(request)
            edge.check_sizes(request, query, body_limit)
            extra.update(edge.cors_headers(request))
            principal = None
            if auth is None:
                if policy is not None:
                    limits = edge.rate_limit_now(request, policy)
                    extra.update(limits if limits is not None else await edge.rate_limit(request, policy))
            else:
                # Authenticated callers are limited by who they are (`key:<id>`), others by address.
                principal, refused = await identify(auth, request.headers)
                if policy is not None:
                    who = (principal.rate_key, None) if principal is not None else None
                    limits = edge.rate_limit_now(request, policy, who)
                    extra.update(
                        limits if limits is not None else await edge.rate_limit(request, policy, who)
                    )
                if refused is not None:
                    raise refused
                if principal is not None:
                    require_scopes(principal, auth.scopes)
            if body_spec is None:
                params, typed_input = inputs(query, decoded_path(request))
                body = None
            else:
                params, typed_input, body = inputs_and_body(
                    lambda: inputs(query, decoded_path(request)), request, body_spec
                )
            call = Call(params, request.headers, request_id, request, typed_input, body, principal)
            reply = await handler(call)
            if not safe:
                reply.conditional = False
                reply.cache_control = reply.cache_control or "no-store"
            elif auth is not None and reply.cache_control is None:
                reply.cache_control = "private, no-cache"  # one caller's answer: revalidated, never shared
            if extra:
                reply.headers.update(extra)
            response = _finish(reply, request, request_id, config, stats, started)
            status = response.status_code
            return response
        except AppError as exc:
            status = exc.status
            return _fail(exc, request_id, config, extra, stats, started)
        except DATABASE_UNAVAILABLE as exc:
            status = 503
            log.warning("database unavailable in %s %s: %s", route.method, route.path, type(exc).__name__)
            extra["Retry-After"] = "1"
            return _fail(ServiceUnavailable(), request_id, config, extra, stats, started)
        except Exception:
            log.exception("unhandled error in %s %s", route.method, route.path)
            return _fail(AppError(), request_id, config, extra, stats, started)
        finally:
            config.inflight -= 1
            elapsed = time.perf_counter() - started
            if timer is not None:
                timer.observe(status, elapsed)
                if stats.slow is not None and obs is not None:
                    for name in stats.slow:
                        obs.metrics.inc("db_slow_queries_total", (name,))
            if traceparent is not None:
                trace_var.reset(trace_token)  # type: ignore[arg-type]
                if exporter is not None and traceparent[-1] == "1":
                    end = time.time_ns()
                    start_ns = end - int(elapsed * 1e9)
                    exporter.add((traceparent, parent, span_name, start_ns, end, method, route_label, status))
            if elapsed >= config.slow_request_s:
                log.warning(
                    "slow request %s %s -> %d in %.1f ms (%d queries, %.1f ms in db)",
                    request.method,
                    request.url.path[:200],
                    status,
                    elapsed * 1000,
                    stats.count,
                    stats.seconds * 1000,
                )
            query_stats_var.reset(stats_token)
            request_id_var.reset(rid_token)

    endpoint.__name__ = (
        f"{'head' if head else route.method.lower()}_{route.path.strip('/').replace('/', '_')}"
    )
    # The classes, not their names (this module's annotations are strings): Robyn calls a handler whose
    # one parameter is annotated `Request` (by identity) directly; any other handler goes through its
    # per-request injection, which reads every part of the request (query, headers, body, form data,
    # files, ...) into a dict first: 5-6 % of a worker's time on cached pages.
    endpoint.__annotations__ = {"request": Request, "return": Response}
    return endpoint


def _server_timing(stats: QueryStats, started: float) -> str:
    total_ms = (time.perf_counter() - started) * 1000
    return (
        f'db;dur={stats.seconds * 1000:.2f};desc="{stats.count} queries", app;dur={total_ms:.2f}, '
        f'proc;desc="{os.getpid()}"'
    )


def _fail(
    exc: AppError,
    request_id: str,
    config: HttpConfig,
    extra: dict[str, str],
    stats: QueryStats,
    started: float,
) -> Response:
    headers = {**config.error_vary, **extra}
    if config.server_timing:
        headers["Server-Timing"] = _server_timing(stats, started)
    return problem_response(exc, request_id, headers)


def _finish(
    reply: Reply,
    request: Request,
    request_id: str,
    config: HttpConfig,
    stats: QueryStats,
    started: float,
) -> Response:
    headers = {
        "Content-Type": reply.content_type,
        "X-Request-ID": request_id,
        **SECURITY_HEADERS,
        **reply.headers,
    }
    if reply.content_type == JSON:
        headers["Content-Security-Policy"] = API_CSP
    if config.server_timing:
        headers["Server-Timing"] = _server_timing(stats, started)
    if reply.cache_control:
        headers["Cache-Control"] = reply.cache_control
    body, reps = reply.body, reply.encoded
    # A cached page may hold only its encodings: its identity bytes are made only for a client that takes
    # none, never for a 304.
    length = len(body) if body is not None else reps.length if reps is not None else 0
    status = reply.status
    coding, encoded = "identity", None
    # Vary goes on every answer that depends on it, 304s included (RFC 9110 15.4.5).
    if reply.compressible:
        headers.setdefault("Vary", config.vary_encoded)
        if length >= MIN_BYTES:
            coding, encoded = _negotiate(reply, request.headers.get("accept-encoding"))
    elif config.vary_plain is not None:
        headers.setdefault("Vary", config.vary_plain)
    if reply.conditional and status == 200:
        etag = coding_etag(reply.etag or strong_etag(_identity(body, reps)), coding)
        headers["ETag"] = etag
        inm = request.headers.get("if-none-match")
        if inm is not None:
            if etag_matches(inm, etag):
                headers.pop("Content-Type", None)
                return _response(304, headers, b"")
        elif "Last-Modified" in headers:
            ims = request.headers.get("if-modified-since")
            if ims and _not_modified_since(headers["Last-Modified"], ims):
                headers.pop("Content-Type", None)
                return _response(304, headers, b"")
    if coding != "identity":
        # A body made per request is compressed only now: a 304 never pays for it.
        body = encoded if encoded is not None else encode(_identity(body, reps), coding)
        headers["Content-Encoding"] = coding
    # HEAD: the server (actix) sends the headers with the length of this body and drops the body itself,
    # so the body stays: HEAD's Content-Length is the GET's.
    return _response(status, headers, _identity(body, reps))


def _identity(body: bytes | None, reps: Representations | None) -> bytes:
    if body is not None:
        return body
    return reps.body if reps is not None else b""


def _negotiate(reply: Reply, accept_encoding: str | None) -> tuple[str, bytes | None]:
    """The coding to send and, for a pre-encoded reply, its bytes (made now on a page's first use)."""
    reps = reply.encoded
    if reps is None:
        return negotiate(accept_encoding, CODINGS), None
    for _ in range(len(CODINGS)):
        coding = negotiate(accept_encoding, reps.codings())
        if coding == "identity":
            return coding, None
        encoded = reps.encoded(coding)
        if encoded is not None:
            return coding, encoded
        # Not worth keeping for this page (bigger than its gzip): it has left codings(); ask again.
    return "identity", None
