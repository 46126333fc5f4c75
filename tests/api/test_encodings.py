"""Content codings over the real server: zstd, br and gzip negotiated from Accept-Encoding (q-values, `*`,
identity, exclusions), one strong ETag and one 304 per representation, HEAD lengths, and the shrink goal."""

from __future__ import annotations

import gzip
import json

import brotli
import httpx
import pytest
from backports import zstd
from catalog_testlib import Database, ServerProcess, run

PRODUCTS = "/api/consumer/products"
PAGE_100 = f"{PRODUCTS}?page_size=100"
DECODERS = {"gzip": gzip.decompress, "br": brotli.decompress, "zstd": zstd.decompress, None: bytes}


def raw_get(server: ServerProcess, url: str, headers: dict[str, str], method: str = "GET") -> httpx.Response:
    """One request whose body is left encoded, as it went over the wire (httpx would decode it)."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        resp = client.send(client.build_request(method, url, headers=headers), stream=True)
        resp._content = b"".join(resp.iter_raw())  # the wire bytes, kept for the test
        resp.close()
    return resp


def wire(server: ServerProcess, url: str, accept: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """(response, decoded body) for one Accept-Encoding value."""
    resp = raw_get(server, url, {"Accept-Encoding": accept, **headers})
    return resp, DECODERS[resp.headers.get("content-encoding")](resp.content)


@pytest.mark.parametrize(
    ("accept", "expect"),
    [
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("ZSTD", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),  # a browser's list: ties go to the server's order
        ("gzip, deflate, br", "br"),
        ("gzip, deflate", "gzip"),
        ("br;q=0.5, gzip", "gzip"),  # the client's q beats the server's order
        ("zstd;q=0.1, br;q=0.2, gzip;q=0.3", "gzip"),
        ("gzip;q=0.3, br;q=0.300", "br"),  # equal q: server order
        ("identity", None),
        ("identity, gzip;q=0.5", None),  # identity is preferred by q
        ("identity;q=0.5, gzip", "gzip"),
        ("identity;q=0.5, gzip;q=0.5", "gzip"),  # a tie: we would rather compress
        ("gzip;q=0", None),
        ("br;q=0, zstd;q=0, gzip", "gzip"),
        ("*", "zstd"),
        ("*;q=0.5, br", "br"),
        ("*, zstd;q=0", "br"),
        ("*;q=0", None),  # nothing acceptable, identity included: the field is disregarded
        ("*;q=0, identity", None),
        ("identity;q=0", None),  # no coding offered and identity refused: disregarded, identity
        ("identity;q=0, br", "br"),
        ("deflate, compress, exi, pack200-gzip", None),  # unknown or unsupported codings
        ("gzip;q=1.5", None),  # not an RFC 9110 qvalue: treated as refused
        ("gzip;q=abc, br", "br"),
        ("gzip;q=0.0001", None),
        ("gzip ; q=0.8 , br ; q=0.9", "br"),  # optional whitespace
        (",,, ; ,gzip", "gzip"),
        ("", None),  # an empty field asks for no coding
    ],
)
def test_negotiation_matrix(server: ServerProcess, accept: str, expect: str | None) -> None:
    resp, body = wire(server, PAGE_100, accept)
    assert resp.status_code == 200
    assert resp.headers.get("content-encoding") == expect, accept
    assert resp.headers["vary"] == "Accept-Encoding"
    assert json.loads(body)["page_size"] == 100


def test_no_accept_encoding_gets_identity(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        req = client.build_request("GET", PAGE_100)
        del req.headers["accept-encoding"]
        resp = client.send(req)
    assert "content-encoding" not in resp.headers and resp.json()["page_size"] == 100


def test_every_coding_decodes_to_the_same_json_and_shrinks_the_page_85_percent(server: ServerProcess) -> None:
    plain, identity = wire(server, PAGE_100, "identity")
    assert "content-encoding" not in plain.headers
    assert len(json.loads(identity)["items"]) == 100
    for coding in ("gzip", "br", "zstd"):
        resp, body = wire(server, PAGE_100, coding)
        assert resp.headers["content-encoding"] == coding
        assert body == identity, coding
        assert int(resp.headers["content-length"]) == len(resp.content)
        assert len(resp.content) <= 0.15 * len(identity), (coding, len(resp.content), len(identity))
        again = raw_get(server, PAGE_100, {"Accept-Encoding": coding})
        assert again.content == resp.content, coding  # made once, then served as kept


def test_each_representation_has_its_own_strong_etag_and_304(server: ServerProcess) -> None:
    tags = {}
    for accept in ("identity", "gzip", "br", "zstd"):
        resp, _ = wire(server, PAGE_100, accept)
        etag = resp.headers["etag"]
        assert not etag.startswith("W/") and etag.startswith('"') and etag.endswith('"')
        tags[accept] = etag
    assert len(set(tags.values())) == 4, tags
    assert tags["br"].endswith('.br"') and tags["zstd"].endswith('.zst"')
    for accept, etag in tags.items():
        same = raw_get(server, PAGE_100, {"Accept-Encoding": accept, "If-None-Match": etag})
        assert same.status_code == 304 and same.content == b"", accept
        assert same.headers["etag"] == etag and same.headers["vary"] == "Accept-Encoding"
        assert "content-encoding" not in same.headers or same.headers["content-encoding"] == accept
        for other, other_tag in tags.items():
            if other != accept:  # another representation's validator does not validate this one
                resp = raw_get(server, PAGE_100, {"Accept-Encoding": accept, "If-None-Match": other_tag})
                assert resp.status_code == 200, (accept, other)
    listed = ", ".join(tags.values())
    assert raw_get(server, PAGE_100, {"Accept-Encoding": "br", "If-None-Match": listed}).status_code == 304


@pytest.mark.parametrize(
    ("accept", "coding"),
    [("identity", None), ("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("gzip, br, zstd", "zstd")],
)
def test_head_reports_the_get_length_in_every_coding(
    server: ServerProcess, accept: str, coding: str | None
) -> None:
    got = raw_get(server, PAGE_100, {"Accept-Encoding": accept})
    head = raw_get(server, PAGE_100, {"Accept-Encoding": accept}, method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers.get("content-encoding") == got.headers.get("content-encoding") == coding
    assert int(head.headers["content-length"]) == int(got.headers["content-length"]) == len(got.content)
    assert head.headers["etag"] == got.headers["etag"]


def test_small_bodies_and_images_stay_uncompressed(server: ServerProcess, database: Database) -> None:
    every = "zstd, br, gzip"
    small, body = wire(server, f"{PRODUCTS}?page_size=1", every)
    assert len(body) < 1024 and "content-encoding" not in small.headers
    health = raw_get(server, "/health", {"Accept-Encoding": every})
    assert "content-encoding" not in health.headers
    (zoho_id,) = next(
        row
        for row in run(database.fetch("SELECT zoho_item_id FROM products WHERE is_active ORDER BY id"))
        if (database.uploads / f"{row[0]}.jpg").is_file()
    )
    image = raw_get(server, f"/product-images/{zoho_id}.jpg", {"Accept-Encoding": every})
    assert image.status_code == 200 and "content-encoding" not in image.headers
    assert image.content[:2] == b"\xff\xd8"  # the JPEG itself


def test_other_cached_routes_are_negotiated_too(server: ServerProcess) -> None:
    for url in ("/openapi.json", "/api/consumer/categories?page_size=100"):
        plain, identity = wire(server, url, "identity")
        assert "content-encoding" not in plain.headers
        for coding in ("gzip", "br", "zstd"):
            resp, body = wire(server, url, coding)
            if len(identity) >= 1024:
                assert resp.headers.get("content-encoding") == coding, (url, coding)
            assert body == identity, (url, coding)
