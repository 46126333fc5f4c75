"""/openapi.json documents every route and passes the validator; /docs renders from our own assets."""

from __future__ import annotations

import re

import httpx
from openapi_spec_validator import validate


def test_spec_is_valid_and_complete(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    validate(spec)
    paths = spec["paths"]
    for path in (
        "/api/consumer/products",
        "/api/consumer/products/{id}",
        "/api/consumer/categories",
        "/product-images/{name}",
        "/health",
        "/ready",
        "/openapi.json",
        "/docs",
    ):
        assert "get" in paths[path], path
    params = {p["name"]: p for p in paths["/api/consumer/products"]["get"]["parameters"]}
    assert params["page_size"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert params["page"]["schema"]["minimum"] == 1
    assert params["sort"]["schema"]["enum"] == ["name", "-name", "price", "-price", "newest"]
    assert params["q"]["schema"]["maxLength"] == 100
    responses = paths["/api/consumer/products"]["get"]["responses"]
    assert {"200", "422", "500"} <= set(responses)
    assert responses["422"] == {"$ref": "#/components/responses/ValidationFailed"}
    assert "application/problem+json" in spec["components"]["responses"]["ValidationFailed"]["content"]
    assert paths["/api/consumer/products/{id}"]["get"]["responses"]["404"] == {
        "$ref": "#/components/responses/NotFound"
    }
    assert paths["/api/consumer/products/{id}"]["get"]["parameters"][0]["in"] == "path"


def test_docs_use_no_cdn(api: httpx.Client) -> None:
    html = api.get("/docs")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in html.headers["content-security-policy"]
    urls = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert urls and all(u.startswith("/docs/") for u in urls)
    for url in urls:
        asset = api.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100
    assert b"SwaggerUIBundle" in api.get("/docs/swagger-ui-bundle.js").content
