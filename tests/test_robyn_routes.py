"""Route registration: Robyn calls every endpoint of the app directly, never through its per-request
argument injector (which read every part of each request: query, headers, body, form data, files)."""

from __future__ import annotations

from pathlib import Path

from robyn import Request, Response, Robyn

from server.app import _add_route, create_app
from server.settings import Settings


def test_an_added_route_calls_the_endpoint_itself() -> None:
    app = Robyn(__file__)

    async def endpoint(request: Request) -> Response:
        return Response(200, {}, b"")

    _add_route(app, "GET", "/x", endpoint)
    route = app.router.routes[-1]
    assert route.route == "/x"
    assert route.function.handler is endpoint
    assert route.function.is_async


def test_every_route_of_the_app_is_an_endpoint_of_the_wrapper(tmp_path: Path) -> None:
    settings = Settings(DATA_DIR=tmp_path, UPLOADS_DIR=tmp_path / "uploads", PROCESSES=1)
    app, _ = create_app(settings, tmp_path / "metrics")
    routes = app.router.routes
    assert len(routes) > 50
    for route in routes:
        handler = route.function.handler
        # Robyn's injector is a functools.wraps wrapper around the handler; the wrapper's endpoints are not.
        assert not hasattr(handler, "__wrapped__"), (route.route_type, route.route)
        assert handler.__code__.co_name == "endpoint", (route.route_type, route.route)
