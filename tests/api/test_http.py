"""Conventions every route shares: request ids, headers, errors, methods, HEAD, gzip, body limits."""

from __future__ import annotations

import gzip
import re

import httpx
import pytest

PRODUCTS = "/api/consumer/products"
HEX_ID = re.compile(r"[0-9a-f]{32}")


def test_request_id_is_echoed_when_well_formed(api: httpx.Client) -> None:
    for rid in ("abc-123", "A.b_c-9", "x" * 128):
        assert api.get("/health", headers={"X-Request-ID": rid}).headers["x-request-id"] == rid


@pytest.mark.parametrize("rid", ["", "x" * 129, "has space", "semi;colon", "ünï", "a/b", "<script>"])
def test_malformed_request_id_is_replaced(api: httpx.Client, rid: str) -> None:
    headers = {"X-Request-ID": rid.encode("utf-8")} if rid else {}
    got = api.get("/health", headers=headers).headers["x-request-id"]
    assert got != rid and HEX_ID.fullmatch(got)


def test_request_id_in_error_bodies_and_logs(api: httpx.Client, server: object) -> None:
    resp = api.get(f"{PRODUCTS}?page_size=0", headers={"X-Request-ID": "trace-me-42"})
    assert resp.json()["request_id"] == "trace-me-42"
    resp = api.get(f"{PRODUCTS}/1", headers={"X-Request-ID": "trace-me-43"})
    assert resp.headers["x-request-id"] == "trace-me-43"


def test_security_headers_on_success_and_error(api: httpx.Client) -> None:
    for resp in (api.get(PRODUCTS), api.get("/nope"), api.get(f"{PRODUCTS}?page=0")):
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert "server" not in resp.headers


@pytest.mark.parametrize("path", ["/nope", "/api", "/api/consumer", "/", "/api/consumer/products/1/x"])
def test_unknown_paths_are_problem_404(api: httpx.Client, path: str) -> None:
    resp = api.get(path)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["code"] == "not_found" and body["title_ar"] and body["request_id"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_wrong_method_is_405_with_allow(api: httpx.Client, method: str) -> None:
    resp = api.request(method, PRODUCTS)
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD, OPTIONS"
    assert resp.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", [PRODUCTS, f"{PRODUCTS}/1", "/api/consumer/categories", "/health", "/ready"])
def test_head_works_where_get_does(api: httpx.Client, path: str) -> None:
    get = api.get(path)
    head = api.head(path)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_gzip_negotiation(api: httpx.Client) -> None:
    url = f"{PRODUCTS}?page_size=100"
    plain = api.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.headers["vary"] == "Accept-Encoding"
    raw = httpx.get(api.base_url.join(url), headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    compressed_size = int(raw.headers["content-length"])
    assert compressed_size <= 0.15 * len(plain.content)
    assert raw.content == plain.content  # httpx decodes
    # The whole matrix (br, zstd, identity, q-values) is in test_encodings.py.
    for header, expect in [
        ("gzip;q=0", None),
        ("*", "zstd"),  # any coding: the server's first choice
        ("*;q=0", None),
        ("br, gzip;q=0.5", "br"),
        ("deflate", None),
        ("GZIP", "gzip"),
        ("gzip;q=0.000", None),
    ]:
        resp = api.get(url, headers={"Accept-Encoding": header})
        assert resp.headers.get("content-encoding") == expect, header


def test_small_bodies_are_not_compressed(api: httpx.Client) -> None:
    resp = api.get(f"{PRODUCTS}/1", headers={"Accept-Encoding": "gzip"})
    assert len(resp.content) < 1024 or resp.headers.get("content-encoding") == "gzip"
    health = api.get("/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in health.headers


def test_gzip_bytes_are_valid(server: object) -> None:
    base = server.base_url  # type: ignore[attr-defined]
    with httpx.Client() as client:
        req = client.build_request(
            "GET", f"{base}{PRODUCTS}?page_size=50", headers={"Accept-Encoding": "gzip"}
        )
        resp = client.send(req, stream=True)
        body = b"".join(resp.iter_raw())
        resp.close()
    assert gzip.decompress(body).startswith(b'{"items":[')


def test_etag_and_304_on_lists(api: httpx.Client) -> None:
    first = api.get(PRODUCTS)
    etag = first.headers["etag"]
    assert etag.startswith('"')
    again = api.get(PRODUCTS, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert api.get(PRODUCTS, headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    assert api.get(PRODUCTS + "?page=2", headers={"If-None-Match": etag}).status_code == 200
    assert "max-age" in first.headers["cache-control"]


def test_body_over_the_limit_is_413(api: httpx.Client) -> None:
    resp = api.request("GET", PRODUCTS, content=b"x" * (1_048_576 + 1))
    assert resp.status_code == 413
    assert resp.json()["code"] == "payload_too_large"


def test_errors_never_leak_internals(api: httpx.Client) -> None:
    for resp in (api.get("/nope"), api.get(f"{PRODUCTS}?page=x"), api.get(f"{PRODUCTS}/999999")):
        text = resp.text
        assert "Traceback" not in text and "asyncpg" not in text and ".py" not in text
