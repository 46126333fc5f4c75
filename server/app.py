"""create_app(settings): the Robyn app with every route wrapped once, and per-process start-up/shutdown.

No I/O happens here at import or build time; the start-up handler (which Robyn runs in every process)
makes this process's pool, Redis client, LISTEN connection and image index.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from robyn import Request, Response, Robyn
from robyn.argument_parser import Config
from robyn.robyn import FunctionInfo, HttpMethod

from server import openapi, workers
from server.accounts import router as accounts_router
from server.admin import router as admin_router
from server.cache import Page
from server.catalog import router as catalog_router
from server.edge import Edge
from server.errors import AppError, MethodNotAllowed, NotFound
from server.health import router as health_router
from server.http import Call, Handler, HttpConfig, Reply, Route, wrap
from server.images import router as images_router
from server.images.service import ImageStore
from server.metrics import router as metrics_router
from server.metrics.service import Observability
from server.orders import router as orders_router
from server.resources import Resources
from server.settings import Settings
from server.state import AppState
from server.sync import router as sync_router

log = logging.getLogger("server.app")
VERSION = "0.1.0"
CLOSE_BUDGET_S = 0.5  # of SHUTDOWN_GRACE_S: kept for closing pool and connections after the drain
FLUSH_S = 0.2  # of CLOSE_BUDGET_S: for the 503s of requests the close cut short to be written
# Every method Robyn can route: an unlisted one would get Robyn's own text/plain 404, not our problem+json.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")


def api_routes(state: AppState) -> list[Route]:
    """Every public route, in OpenAPI order."""
    return [
        *catalog_router.routes(state),
        *images_router.routes(state),
        *health_router.routes(state),
        *admin_router.routes(state),
        *accounts_router.routes(state),
        *sync_router.routes(state),
        *orders_router.routes(state),
        *metrics_router.routes(state),
    ]


def robyn_config(processes: int) -> Config:
    """Robyn's own config, set from our settings rather than from its command-line parser."""
    config = Config()
    config.processes = processes
    config.workers = 1
    config.dev = False
    config.disable_openapi = True  # we serve our own, complete document
    config.log_level = "WARNING"
    config.open_browser = False
    return config


def create_app(settings: Settings, metrics_dir: Path | None = None) -> tuple[Robyn, AppState]:
    """Build the app; nothing is connected until Robyn's start-up handler runs in each process.
    `metrics_dir`: this run's snapshot directory, made by the master (server/metrics/store.py)."""
    obs = Observability.from_settings(settings, metrics_dir)
    state = AppState(settings, obs=obs)
    app = Robyn(__file__, config=robyn_config(settings.PROCESSES))
    edge = Edge.from_settings(settings)
    http_config = HttpConfig(
        edge=edge,
        slow_request_ms=settings.SLOW_REQUEST_MS,
        server_timing=settings.SERVER_TIMING,
        max_inflight=settings.MAX_INFLIGHT,
        obs=obs,
    )
    spec_holder: list[Page] = []
    routes = [*api_routes(state), *_docs_routes(spec_holder)]
    spec = openapi.build_spec(
        routes,
        title="Catalog API",
        version=VERSION,
        server_url=settings.PUBLIC_BASE_URL,
        rate_limited=[g for g, p in edge.policies.items() if p is not None and settings.RATE_LIMIT_ENABLED],
    )
    spec_holder.append(Page.build(openapi.spec_bytes(spec)))
    _register(app, routes, http_config)

    held: list[Resources] = []  # this process's resources, for the shutdown handler

    async def startup() -> None:
        try:
            res = Resources(settings)
            await res.start()
        except Exception:
            # Robyn would leave this process up with no server (a start-up error panics its I/O thread):
            # exit instead, so the pool's master sees the death and starts a replacement.
            log.exception("process start-up failed; exiting so that the master replaces this process")
            logging.shutdown()
            os._exit(3)
        held.append(res)
        edge.limiter = res.limiter
        state.attach(res, ImageStore.from_settings(settings, res.images))
        accounts_router.start(state)
        for hook in state.on_start:
            hook(res)
        obs.start(res, lambda: (http_config.inflight, http_config.shed))
        workers.serving(asyncio.get_running_loop())
        settle_heap()
        log.info("process ready: compiled core=%s, %d images", res.using_compiled, res.images.count)

    async def shutdown() -> None:
        # Drain first, close after: requests in flight keep their pool, cache and limiter until they are
        # answered. What arrives after the close (on a kept-alive connection) meets a closed pool (503) or
        # a cached page, never missing resources.
        budget = max(0.1, settings.SHUTDOWN_GRACE_S - CLOSE_BUDGET_S)
        left = await workers.drain(budget, lambda: http_config.inflight)
        if left:
            log.warning("request tasks still running after %.1fs (%d); closing anyway", budget, left)
        await obs.stop()  # the last snapshot, after the drain: every answered request is in it
        await accounts_router.stop(state)
        for res in held:
            await res.close(CLOSE_BUDGET_S - FLUSH_S)
        held.clear()
        if left:  # what the close cut short answers 503: give it a moment to be written before we exit
            await workers.drain(FLUSH_S, lambda: http_config.inflight)
        state.detach()
        log.info("process stopped")

    app.startup_handler(startup)
    app.shutdown_handler(shutdown)
    return app, state


def settle_heap() -> None:
    """Move what start-up made (modules, functions, routes, the index's objects) out of the collector's
    sight: a full collection then walks only what serving made since (cached pages, memos). Without this,
    each full collection walked every object of the process: 50-100 ms of CPU with the event loop stopped,
    every few seconds on the shopper mix (in the p99 of whatever was in flight). Frozen objects are still
    freed by reference counting; only a cycle among them would stay (start-up's objects live as long as
    the process anyway)."""
    gc.collect()
    gc.freeze()


def _register(app: Robyn, routes: list[Route], config: HttpConfig) -> None:
    """Every route through the wrapper, its HEAD twin, OPTIONS (CORS preflight), 405s and the 404s."""
    allowed: dict[str, set[str]] = {}
    groups: dict[str, str] = {}
    for route in routes:
        _add_route(app, route.method, route.path, wrap(route, config))
        allowed.setdefault(route.path, {"OPTIONS"}).add(route.method)
        groups[route.path] = route.group
        if route.head and route.method == "GET":
            _add_route(app, "HEAD", route.path, wrap(route, config, head=True))
            allowed[route.path].add("HEAD")
    for path, methods in allowed.items():
        allow = ", ".join(sorted(methods))
        _add_route(app, "OPTIONS", path, wrap(_preflight_route(path, allow, groups[path], config), config))
        for method in METHODS:
            if method not in methods:
                endpoint = wrap(_error_route(method, path, MethodNotAllowed, allow), config)
                _add_route(app, _robyn_method(method), path, endpoint)
    for method in METHODS:
        for path in ("/*path", "/") if "/" not in allowed else ("/*path",):
            _add_route(app, _robyn_method(method), path, wrap(_error_route(method, path, NotFound), config))


def _add_route(
    app: Robyn, method: str | HttpMethod, path: str, endpoint: Callable[[Request], Awaitable[Response]]
) -> None:
    """Register `endpoint` so that Robyn calls it with the request and nothing else.

    Robyn 0.88 wraps every handler in an injector that, per request, reads every part of the request
    (query, headers, path, body, method, URL, address, identity, form data, files) into a dict to pick the
    handler's arguments from: its fast path never matches (it compares a parameter's name with the Request
    class). That was 5-6 % of a worker's time on cached pages. Our endpoints take the request alone, answer
    a Response and handle their own errors (the wrapper), so the route's handler becomes the endpoint
    itself; the route's other facts (method, path, parameters) stay as Robyn made them."""
    app.add_route(method, path, endpoint)
    routes = app.router.routes
    last = routes[-1]
    if getattr(last.function.handler, "__wrapped__", None) is not endpoint:  # pragma: no cover
        raise RuntimeError(f"Robyn did not register {method} {path} as its last route")
    info = last.function
    routes[-1] = last._replace(
        function=FunctionInfo(endpoint, True, info.number_of_params, info.args, info.kwargs)
    )


def _robyn_method(method: str) -> HttpMethod:
    # Robyn's add_route maps only seven method names from strings; TRACE and CONNECT need the enum.
    return getattr(HttpMethod, method)  # type: ignore[no-any-return]


def _error_route(method: str, path: str, error: type[AppError], allow: str | None = None) -> Route:
    headers = {"Allow": allow} if allow else {}

    async def handler(_call: Call) -> Reply:
        raise error(headers=headers)

    return Route(method, path, handler, any_query=True, head=False)


def _preflight_route(path: str, allow: str, group: str, config: HttpConfig) -> Route:
    async def handler(call: Call) -> Reply:
        if call.headers.get("access-control-request-method") is None:
            return Reply(b"", status=204, conditional=False, compressible=False, headers={"Allow": allow})
        headers = config.edge.preflight_headers(call.request, allow)
        return Reply(
            b"", status=204, conditional=False, compressible=False, headers={"Allow": allow, **headers}
        )

    return Route("OPTIONS", path, handler, any_query=True, head=False, group=group)


def _docs_routes(spec: list[Page]) -> list[Route]:
    async def spec_handler(_call: Call) -> Reply:
        page = spec[0]  # filled by create_app once every route (these included) is known
        return Reply(None, encoded=page, etag=page.etag, cache_control="no-cache")

    def asset(body: bytes, content_type: str) -> Handler:
        page = Page.build(body)  # the 1 MB Swagger bundle is compressed and tagged once, not per request

        async def handler(_call: Call) -> Reply:
            return Reply(
                None,
                encoded=page,
                etag=page.etag,
                content_type=content_type,
                cache_control="public, max-age=3600",
                headers={"Content-Security-Policy": openapi.DOCS_CSP},
            )

        return handler

    return [
        Route("GET", "/openapi.json", spec_handler, summary="This document", tag="docs", errors=()),
        Route(
            "GET",
            "/docs",
            asset(openapi.DOCS_HTML, "text/html; charset=utf-8"),
            summary="Swagger UI",
            tag="docs",
            content_type="text/html",
            errors=(),
        ),
        Route(
            "GET",
            "/docs/init.js",
            asset(openapi.DOCS_INIT_JS, "text/javascript"),
            tag="docs",
            content_type="text/javascript",
            errors=(),
        ),
        Route(
            "GET",
            "/docs/swagger-ui.css",
            asset(openapi.swagger_asset("swagger-ui.css"), "text/css"),
            tag="docs",
            content_type="text/css",
            errors=(),
        ),
        Route(
            "GET",
            "/docs/swagger-ui-bundle.js",
            asset(openapi.swagger_asset("swagger-ui-bundle.js"), "text/javascript"),
            tag="docs",
            content_type="text/javascript",
            errors=(),
        ),
    ]
