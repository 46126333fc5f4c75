"""server.encoding and the page cache's representations, in process: Accept-Encoding negotiation (a table,
then Hypothesis properties against RFC 9110's rules), codecs, per-coding ETags, and Page's lazy encodings."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys

import brotli
import orjson
import pytest
from backports import zstd
from hypothesis import given, settings
from hypothesis import strategies as st

from server import encoding
from server.cache import Page
from server.encoding import CODINGS, coding_etag, encode, gzip_bytes, gzip_etag, negotiate

ALL = ("zstd", "br", "gzip")
DECODE = {"gzip": gzip.decompress, "br": brotli.decompress, "zstd": zstd.decompress}
BODY = orjson.dumps(
    {"items": [{"id": i, "name": f"Golden Tea {i % 7}", "price": f"{i}.50"} for i in range(200)]}
)


def test_every_coding_is_offered_with_the_project_dependencies() -> None:
    assert CODINGS == ALL
    assert encoding.GZIP_FLAVOUR == 1  # zlib-ng, not the stdlib fallback


@pytest.mark.parametrize(
    ("header", "available", "expect"),
    [
        (None, ALL, "identity"),
        ("", ALL, "identity"),
        ("gzip, deflate, br, zstd", ALL, "zstd"),
        ("gzip, deflate, br, zstd", ("br", "gzip"), "br"),  # zstd not available for this body
        ("gzip, deflate, br, zstd", (), "identity"),  # nothing compressed (a small body)
        ("br;q=0.9, gzip", ALL, "gzip"),
        ("br;q=1.000, gzip;q=1", ALL, "br"),
        ("identity;q=1, gzip;q=0.999", ALL, "identity"),
        ("identity;q=0.5, *;q=0.5", ALL, "zstd"),
        ("*;q=0.2, gzip;q=0.3", ALL, "gzip"),
        ("*;q=0", ALL, "identity"),
        ("x-gzip;q=0.5, br;q=0.4", ALL, "gzip"),
        ("gzip;q=0, x-gzip", ALL, "identity"),  # the first listing of a coding counts
        ("gzip;Q=0.5, br;q=0.4", ALL, "gzip"),
        ("gzip;q=.5", ALL, "identity"),  # not a qvalue: refused
        ("gzip;q=-1, br;q=1e-3", ALL, "identity"),
        ("gzip;level=9", ALL, "gzip"),  # other parameters are ignored
        ("zstd;q=0.001", ALL, "zstd"),
        ("compress, deflate, identity;q=0", ALL, "identity"),
    ],
)
def test_negotiate_table(header: str | None, available: tuple[str, ...], expect: str) -> None:
    assert negotiate(header, available) == expect


QVALUES = st.sampled_from(["0", "0.", "0.0", "0.5", "0.25", "0.125", "0.001", "1", "1.0", "1.000"])
BAD_Q = st.sampled_from(["", "2", "1.5", "0.0001", "abc", "-0", ".5", "1.001", "nan", "inf"])
NAMES = st.sampled_from(["gzip", "x-gzip", "br", "zstd", "identity", "*", "deflate", "compress", "foo"])


@st.composite
def elements(draw: st.DrawFn) -> str:
    name = draw(NAMES)
    name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    params = draw(st.one_of(st.none(), QVALUES, BAD_Q))
    space = draw(st.sampled_from(["", " "]))
    return name if params is None else f"{name}{space};{space}q={params}"


def q_of(header: str) -> dict[str, float]:
    """RFC 9110 weights, written independently: first listing wins, bad qvalues refuse."""
    out: dict[str, float] = {}
    for element in header.split(","):
        name, *params = (part.strip() for part in element.split(";"))
        name = {"x-gzip": "gzip"}.get(name.lower(), name.lower())
        if not name or name in out:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                ok = re.fullmatch(r"0(\.\d{0,3})?|1(\.0{0,3})?", value.strip())
                q = float(value) if ok else 0.0
        out[name] = q
    return out


@settings(max_examples=400, deadline=None)
@given(
    st.lists(elements(), max_size=6).map(", ".join),
    st.lists(st.sampled_from(ALL), unique=True).map(lambda cs: tuple(c for c in ALL if c in cs)),
)
def test_negotiate_follows_rfc_9110(header: str, available: tuple[str, ...]) -> None:
    chosen = negotiate(header, available)
    assert chosen in (*available, "identity")
    weights = q_of(header)
    star = weights.get("*")

    def q(coding: str) -> float:
        return weights.get(coding, star if star is not None else 0.0)

    acceptable = [c for c in available if q(c) > 0] if header else []
    if chosen != "identity":
        assert q(chosen) > 0  # q=0 excludes, unknown codings are never sent
        for other in (c for c in acceptable if c != chosen):  # none preferred more; ties: server order
            assert q(other) < q(chosen) or (q(other) == q(chosen) and ALL.index(other) > ALL.index(chosen))
        identity_q = weights.get("identity", star)
        assert identity_q is None or identity_q <= q(chosen)
    elif acceptable:  # identity over an acceptable coding only when the client prefers it strictly
        identity_q = weights.get("identity", star)
        assert identity_q is not None and identity_q > max(q(c) for c in acceptable)
    assert negotiate(header, available) == chosen  # the memo answers the same


def test_the_negotiation_memo_is_bounded() -> None:
    for n in range(3000):
        negotiate(f"gzip;q=0.{n % 1000:03d}, br;q=0.{n // 1000}", ALL)
    negotiate("br, " + "x" * 1000, ALL)
    assert len(encoding._MEMO) <= encoding._MEMO_MAX_ENTRIES
    assert all(len(header) <= encoding._MEMO_MAX_KEY_CHARS for header in encoding._MEMO)


@pytest.mark.parametrize("coding", ALL)
def test_codecs_round_trip_deterministically_and_shrink(coding: str) -> None:
    out = encode(BODY, coding)
    assert DECODE[coding](out) == BODY
    assert encode(BODY, coding) == out  # every process makes the same bytes for a strong ETag
    assert len(out) < len(BODY) * 0.15


def test_each_coding_has_its_own_etag() -> None:
    etag = '"abc"'
    tags = {coding_etag(etag, c) for c in (*ALL, "identity")}
    assert tags == {'"abc"', '"abc.zst"', '"abc.br"', '"abc.gz"'}
    assert gzip_etag(etag) == '"abc.gz"'
    assert gzip.decompress(gzip_bytes(BODY)) == BODY


def test_page_encodes_lazily_once_within_its_reserved_size() -> None:
    page = Page.build(BODY)
    size = page.size
    assert page.codings() == ALL and not page.lazy  # gzip only at fill time
    for coding in ALL:
        first = page.encoded(coding)
        assert first is not None and DECODE[coding](first) == BODY
        assert page.encoded(coding) is first  # kept, not made again
    assert page.size == size  # the L1 byte accounting stays exact
    assert len(BODY) + sum(len(page.encoded(c) or b"") for c in ALL) + 64 <= size


def test_a_lazy_encoding_that_does_not_fit_is_not_kept_or_offered() -> None:
    page = Page(BODY, b"x" * 16, '"t"')  # a (fake) gzip far smaller than any real encoding
    assert page.encoded("br") is None and page.encoded("zstd") is None
    assert page.codings() == ("gzip",)
    assert negotiate("br, zstd;q=0.5", page.codings()) == "identity"


def test_small_pages_offer_no_coding() -> None:
    page = Page.build(b'{"items":[]}')
    assert page.gzip is None and page.codings() == () and page.encoded("br") is None


def test_redis_form_keeps_gzip_and_drops_old_formats() -> None:
    page = Page.build(BODY)
    page.encoded("br")
    back = Page.unpack(page.pack())
    assert back is not None and (back.body, back.gzip, back.etag) == (page.body, page.gzip, page.etag)
    assert not back.lazy  # made again per process on demand
    assert back.raw is None and back.length == len(BODY)  # Redis holds the gzip alone: a slim page
    for version in (2, 3, 4):  # 2 held zlib level 6 bytes; 3 and 4 the identity beside the gzip
        assert Page.unpack(bytes([version]) + page.pack()[1:]) is None
    small = Page.build(b'{"items":[]}')
    again = Page.unpack(small.pack())
    assert again is not None and again.raw == small.body and again.gzip is None
    assert Page.unpack(small.pack()[:20]) is None  # cut inside its body


def test_a_cached_page_keeps_its_encodings_not_its_identity_bytes() -> None:
    page = Page.build(BODY)
    full = page.size
    page.slim()
    assert page.raw is None and page.body == BODY and page.length == len(BODY)
    assert page.size == full - len(BODY)  # the identity bytes no longer count against L1's bound
    assert page.encoded("br") is not None and DECODE["br"](page.encoded("br") or b"") == BODY
    small = Page.build(b'{"items":[]}')
    small.slim()  # nothing to inflate from: it keeps its bytes
    assert small.raw == b'{"items":[]}'


FALLBACK_PROBE = """
import gzip, json, logging, sys
for name in ("zlib_ng", "brotli", "backports", "compression"):
    sys.modules[name] = None  # an import of any of them now raises ImportError
logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s", stream=sys.stdout)
from server import encoding
from server.cache import Page
page = Page.build(b'{"a": "' + b"x" * 4000 + b'"}')
print(json.dumps({
    "codings": encoding.CODINGS,
    "flavour": encoding.GZIP_FLAVOUR,
    "chosen": [encoding.negotiate(h, page.codings()) for h in ("zstd, br, gzip", "br", "zstd, gzip;q=0.1")],
    "etag": encoding.gzip_etag('"e"'),
    "round_trip": gzip.decompress(page.encoded("gzip")) == page.body,
}))
"""


def test_without_the_compression_packages_gzip_falls_back_to_the_stdlib_and_says_so_once() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FALLBACK_PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    warnings = [line for line in out if line.startswith("server.encoding ")]
    assert len(warnings) == 3 and all("compression package missing" in w for w in warnings)
    facts = json.loads(out[-1])
    assert facts["codings"] == ["gzip"] and facts["flavour"] == 2
    assert facts["chosen"] == ["gzip", "identity", "gzip"]
    assert facts["etag"] == '"e.gzs"'  # its bytes differ from zlib-ng's: its own validator
    assert facts["round_trip"] is True
