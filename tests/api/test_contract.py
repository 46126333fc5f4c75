"""The API contract against a server with DEFAULT settings (rate limits on): every method Robyn routes gets
our problem+json, the error `code` enum is exactly the error registry, and every status the server answers
is documented on its operation with its headers and a named body schema that the real response matches.
"""

from __future__ import annotations

import importlib
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from server.errors import AppError
from server.http import Call, Reply, Route
from server.openapi import build_spec

PRODUCTS = "/api/consumer/products"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The service as `make run` starts it: default rate limits (the suite's default turns them off)."""
    proc = ServerProcess(
        database, services, tmp_path_factory.mktemp("srv"), RATE_LIMIT_ENABLED="true", SERVER_TIMING="false"
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def spec(server: ServerProcess) -> dict[str, Any]:
    """The served document."""
    with server.client() as client:
        return dict(client.get("/openapi.json").json())


def raw_request(server: ServerProcess, request_line: str) -> tuple[int, dict[str, str], bytes]:
    """Send one request line over a socket (httpx cannot send CONNECT with a path); status, headers, body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        # Robyn reads a request's whole body before the handler runs, and after CONNECT the body is the
        # tunnel: it ends only when the client half-closes (a client that does not waits for ever; the
        # front proxy, docs/nginx.conf, never forwards CONNECT). The answer still comes as problem+json.
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        while len(body) < int(headers.get("content-length", 0)) and (chunk := sock.recv(65536)):
            body += chunk
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("path", [PRODUCTS, "/health", "/openapi.json"])
def test_trace_is_405_problem_with_allow(api: httpx.Client, path: str) -> None:
    resp = api.request("TRACE", path)
    assert resp.status_code == 405, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["code"] == "method_not_allowed"
    assert resp.headers["allow"] == "GET, HEAD, OPTIONS"
    unknown = api.request("TRACE", "/no/such/path")
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    assert unknown.json()["code"] == "not_found"


def test_connect_is_405_problem_with_allow(server: ServerProcess) -> None:
    status, headers, body = raw_request(server, f"CONNECT {PRODUCTS} HTTP/1.1")
    assert status == 405, body
    assert headers["content-type"] == PROBLEM and headers["allow"] == "GET, HEAD, OPTIONS"
    assert b'"code":"method_not_allowed"' in body
    status, headers, body = raw_request(server, "CONNECT /no/such/path HTTP/1.1")
    assert status == 404 and headers["content-type"] == PROBLEM, body
    assert b'"code":"not_found"' in body


def all_error_classes() -> set[type[AppError]]:
    """AppError and every subclass, walked from the class tree (not from the registry)."""
    importlib.import_module("server.app")  # imports every module that could define an error class
    seen: set[type[AppError]] = set()
    todo = [AppError]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return seen


def test_code_enum_is_exactly_the_error_registry(spec: dict[str, Any]) -> None:
    classes = all_error_classes()
    enum = spec["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
    assert {cls.code for cls in classes} == set(enum) == set(AppError.registry)
    assert {"headers_too_large", "uri_too_long", "origin_not_allowed", "rate_limited"} <= set(enum)
    for cls in classes:
        # A class is registered under its code, unless it refines a parent and keeps the parent's code.
        assert AppError.registry[cls.code] is cls or "code" not in vars(cls), cls
        if "code" in vars(cls):  # a new code is declared in the one module; refinements may live elsewhere
            assert cls.__module__ == "server.errors", f"{cls.__qualname__} declares a code outside errors.py"
    # Each status maps to one documented response, which names its code.
    responses = spec["components"]["responses"]
    for cls in classes:
        assert any(f"`{cls.code}`" in r["description"] for r in responses.values()), cls.code


def test_a_second_class_cannot_claim_a_code() -> None:
    with pytest.raises(TypeError, match="not_found"):
        type("Duplicate", (AppError,), {"code": "not_found", "status": 404})
    assert AppError.registry["not_found"].__name__ == "NotFound"


def test_readme_lists_every_error_code_with_its_status() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"`([a-z_]+)`\s+(\d{3})", readme.split("Codes (every error class", 1)[1][:1600]))
    assert listed == {code: str(cls.status) for code, cls in AppError.registry.items()}


def test_two_shapes_cannot_share_a_name() -> None:
    async def handler(_call: Call) -> Reply:
        raise AssertionError("never called")

    def route(path: str, schema: dict[str, Any]) -> Route:
        return Route("GET", path, handler, response_schema={"title": "Thing", "type": "object", **schema})

    routes = [route("/a", {"required": ["id"]}), route("/b", {})]
    with pytest.raises(ValueError, match="'Thing'"):
        build_spec(routes, title="t", version="1", server_url="http://x", rate_limited=())
    same = build_spec(routes[:1] * 2, title="t", version="1", server_url="http://x", rate_limited=())
    assert same["components"]["schemas"]["Thing"]["required"] == ["id"]


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) of the document."""
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield path, method, op


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref."""
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_every_operation_documents_its_statuses_and_headers(spec: dict[str, Any]) -> None:
    for path, method, op in operations(spec):
        responses = {status: resolve(spec, r) for status, r in op["responses"].items()}
        # Default policies: health is off; catalog, images, docs (the catalog group) and admin are limited.
        health = op["tags"] == ["health"]
        write = method not in ("get", "head")  # never tagged or answered 304, like health
        # Sign-up and reset requests answer 202, placing an order 201.
        success = next(s for s in ("201", "202", "200") if s in responses)
        assert {success, "413", "414", "431", "500", "503"} <= set(responses), path
        # Every input is validated (422), but an image's name answers 404 and its query is ignored.
        assert ("422" in responses) is not path.startswith("/product-images/"), path
        assert ("429" in responses) is not health, path
        ok = responses[success]
        assert {"X-Request-ID", "Cache-Control"} <= set(ok["headers"]), path
        if "Location" in ok["headers"]:  # a run started in the background, or a new order: where it is
            assert success in ("201", "202"), path
        assert ("RateLimit" in ok["headers"] and "RateLimit-Policy" in ok["headers"]) is not health, path
        assert ("ETag" in ok["headers"]) is not (health or write), path  # health answers are never cached
        assert ("304" in responses) is not (health or write), path
        if not health:
            assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(responses["429"]["headers"])
        if not (health or write):
            assert {"ETag", "X-Request-ID"} <= set(responses["304"]["headers"])
        if "security" in op:  # authenticated: 401 (and 403 for scopes) with the Bearer challenge
            # Admin API keys (bearerAuth) or shoppers' access tokens (userBearer); `{}` after it: optional
            # (the catalog: anyone may browse, a token makes the rate limit the shopper's).
            assert op["security"] in (
                [{"bearerAuth": []}],
                [{"userBearer": []}],
                [{"userBearer": []}, {}],
            ), path
            # Orders are the shopper's own: signed in only.
            browse = path.startswith("/api/consumer/") and not path.startswith("/api/consumer/orders")
            assert (op["security"][-1] == {}) is browse, path
            (scheme,) = op["security"][0]
            assert spec["components"]["securitySchemes"][scheme]["scheme"] == "bearer"
            for status in ("401", "403") if scheme == "bearerAuth" else ("401",):  # shoppers have no scopes
                assert "WWW-Authenticate" in responses[status]["headers"], (path, status)
        if "requestBody" in op:  # a body: 415 for another media type
            assert "415" in responses and "422" in responses, path
        for status, response in responses.items():
            if status in ("200", "201", "202", "304") or (path == "/ready" and status == "503"):
                continue
            if status == "206":  # a byte range of the file itself
                assert path.startswith("/product-images/")
                assert {"Content-Range", "ETag", "X-Request-ID"} <= set(response["headers"])
                continue
            assert list(response["content"]) == [PROBLEM], (path, status)
            assert response["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
            assert "X-Request-ID" in response["headers"], (path, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (path, status)
    ready_503 = spec["paths"]["/ready"]["get"]["responses"]["503"]
    assert ready_503["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Readiness"}
    headers = spec["components"]["headers"]
    assert headers["Retry-After"]["required"] and headers["X-Request-ID"]["required"]
    assert "Allow" in spec["components"]["responses"]["MethodNotAllowed"]["headers"]


def no_inline_objects(node: Any, where: str) -> None:
    """Paths reference named schemas: no object schema with properties written inline."""
    if isinstance(node, dict):
        assert "properties" not in node, where
        for key, value in node.items():
            no_inline_objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            no_inline_objects(value, f"{where}/{i}")


def test_response_bodies_are_named_schemas(spec: dict[str, Any]) -> None:
    validate(spec)  # openapi-spec-validator, on the document with the default rate limits
    no_inline_objects(spec["paths"], "paths")
    schemas = spec["components"]["schemas"]
    expected = {"ProductItem", "ProductPage", "ProductDetail", "ProductPrice", "Category", "CategoryPage"}
    expected |= {"ProductFacets", "CategoryFacet", "PriceFacet", "PriceBucket", "StockFacet"}
    assert expected | {"CategoryRef", "Problem", "FieldError", "Health", "Readiness"} <= set(schemas)
    ok = spec["paths"][PRODUCTS]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ProductPage"}
    assert schemas["ProductPage"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/ProductItem"
    }
    for schema in schemas.values():  # facts about answers never leak into the published schemas
        assert not any(key.startswith("x-") for key in schema)


def check_documented(spec: dict[str, Any], path: str, resp: httpx.Response) -> None:
    """The response's status is documented on the operation; its headers and body match the document."""
    op = spec["paths"][path]["get"]
    assert str(resp.status_code) in op["responses"], (path, resp.status_code, resp.text[:300])
    documented = resolve(spec, op["responses"][str(resp.status_code)])
    for name, header in documented.get("headers", {}).items():
        if resolve(spec, header).get("required"):
            assert name.lower() in resp.headers, (path, resp.status_code, name)
    content = documented.get("content")
    if not content:
        assert resp.content == b""
        return
    media_type = resp.headers["content-type"].split(";")[0]
    assert media_type in content, (path, resp.status_code, media_type)
    if media_type.endswith("json"):
        schema = {**content[media_type]["schema"], "components": spec["components"]}
        OAS30Validator(schema).validate(resp.json())


def test_each_status_the_server_answers_is_documented(api: httpx.Client, spec: dict[str, Any]) -> None:
    ok = api.get(PRODUCTS, params={"page_size": 3})
    etag = ok.headers["etag"]
    cases = [
        (PRODUCTS, ok),
        (PRODUCTS, api.get(PRODUCTS, params={"page_size": 3}, headers={"If-None-Match": etag})),
        (PRODUCTS, api.get(PRODUCTS, params={"page_size": 0})),
        (PRODUCTS, api.get(PRODUCTS, params={"page_size": 2, "facets": "category,price,in_stock"})),
        (PRODUCTS, api.get(PRODUCTS, params={"ids": "2,1,SKU-NONE,sku:77"})),
        (PRODUCTS, api.get(PRODUCTS, params={"ids": "1", "sort": "price"})),
        (PRODUCTS, api.get(PRODUCTS, params={"q": "x" * 5000})),
        (PRODUCTS, api.get(PRODUCTS, headers={"X-Big": "x" * 20000})),
        (PRODUCTS, api.request("GET", PRODUCTS, content=b"x" * 2_000_000)),
        ("/api/consumer/products/{id}", api.get(f"{PRODUCTS}/{ok.json()['items'][0]['id']}")),
        ("/api/consumer/products/{id}", api.get(f"{PRODUCTS}/2000000000")),
        ("/api/consumer/categories", api.get("/api/consumer/categories")),
        ("/health", api.get("/health")),
        ("/ready", api.get("/ready")),
        ("/openapi.json", api.get("/openapi.json")),
    ]
    statuses = {resp.status_code for _, resp in cases}
    assert statuses == {200, 304, 404, 413, 414, 422, 431}, statuses
    for path, resp in cases:
        check_documented(spec, path, resp)


def test_default_rate_limit_429_is_documented(server: ServerProcess, spec: dict[str, Any]) -> None:
    # Spends this module's catalog quota (burst 100), so it runs last in the module.
    with httpx.Client(base_url=server.base_url, timeout=10) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: client.get("/api/consumer/categories"), range(160)))
    denied = [r for r in responses if r.status_code == 429]
    assert denied, {r.status_code for r in responses}
    for resp in [*denied[:5], *[r for r in responses if r.status_code == 200][:5]]:
        check_documented(spec, "/api/consumer/categories", resp)
    assert int(denied[0].headers["retry-after"]) >= 1
