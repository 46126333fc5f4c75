"""Hypothesis differential tests: the compiled build and the pure twin agree, and both match orjson."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from core_ext_testlib import SERVED_KINDS, Impl, make_entry, reference_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext import PRODUCT_COLUMNS, SerializationError

ZOHO = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
KINDS = ("file", "symlink", "outside", "escape", "dirlink", "dangling", "dir", "fifo")
JUNK = ("{}.jpeg", "{}.JPG", "{}.jpg.tmp", ".{}.jpg.part", "{}jpg", "unknown-{}.jpg")

CATALOGS = st.dictionaries(ZOHO, st.integers(0, 5000), max_size=40)


@st.composite
def folders(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, str]]:
    """A catalog plus folder entries {name: kind}: images of catalog items, junk names, other kinds."""
    catalog = draw(CATALOGS)
    entries: dict[str, str] = {}
    for zoho in draw(st.lists(st.sampled_from(sorted(catalog)), unique=True)) if catalog else []:
        entries[f"{zoho}.jpg"] = draw(st.sampled_from(KINDS))
    for pattern, stem in draw(st.lists(st.tuples(st.sampled_from(JUNK), ZOHO), max_size=6)):
        entries.setdefault(pattern.format(stem), draw(st.sampled_from(KINDS)))
    return catalog, entries


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=folders(), probe=st.lists(st.integers(-(2**65), 2**65), max_size=20))
def test_index_builds_agree(
    both: tuple[Impl, Impl], case: tuple[dict[str, int], dict[str, str]], probe: list[int]
) -> None:
    catalog, entries = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "uploads"
        folder.mkdir()
        for name, kind in entries.items():
            make_entry(folder, name, kind)
        expected = {
            catalog[name[:-4]]
            for name, kind in entries.items()
            if kind in SERVED_KINDS and name.endswith(".jpg") and name[:-4] in catalog
        }
        results = []
        for build in both:
            ix = build.ImageIndex(folder, 0)
            ix.set_catalog(catalog)
            ids = [*range(max(catalog.values(), default=0) + 10), *probe]
            flags = ix.has_many(ids)
            assert {i for i, f in zip(ids, flags, strict=True) if f} == expected
            names = [*sorted(catalog), "unknown-name", ""]
            by_name = [ix.has_item(name) for name in names]
            assert by_name == [name in catalog and catalog[name] in expected for name in names]
            results.append((flags, by_name, ix.count, ix.fingerprint, ix.nbytes))
        assert results[0] == results[1]


TEXT = st.text(st.characters(codec="utf-8"), max_size=24)  # every scalar value except surrogates
PRICES = st.one_of(
    st.none(),
    st.decimals(places=2, min_value=-(10**12), max_value=10**12),
    st.decimals(allow_nan=True, allow_infinity=True),
)


@st.composite
def rows(draw: st.DrawFn) -> tuple[Any, ...]:
    """A valid row: text with non-ASCII and control characters, ints at orjson's limits."""
    return (
        draw(st.integers(-(2**63), 2**64 - 1)),
        draw(TEXT),
        draw(st.none() | TEXT),
        draw(TEXT),
        draw(st.none() | TEXT),
        draw(st.none() | st.integers(-(2**63), 2**64 - 1)),
        draw(st.none() | TEXT),
        draw(st.none() | TEXT),
        draw(PRICES),
        draw(st.none() | TEXT),
        draw(st.integers(-(2**63), 2**64 - 1)),
        draw(st.none() | TEXT),
    )


META = st.dictionaries(
    TEXT.filter(lambda k: k != "items"), st.none() | st.integers(-100, 100) | TEXT, max_size=4
)


@settings(max_examples=150, deadline=None)
@given(page=st.lists(rows(), max_size=12), with_images=st.sets(st.integers(0, 40)), base_url=TEXT, meta=META)
def test_page_builds_agree(
    both: tuple[Impl, Impl],
    page: list[tuple[Any, ...]],
    with_images: set[int],
    base_url: str,
    meta: dict[str, Any],
) -> None:
    # Zoho ids of the form str(id) let a real compiled or pure index say which rows have images.
    catalog = {str(i): i for i in range(41)}
    page = [(r[0] % 41, str(r[0] % 41), *r[2:]) if n % 2 else r for n, r in enumerate(page)]
    with tempfile.TemporaryDirectory() as tmp:
        for i in with_images:
            make_entry(Path(tmp), f"{i}.jpg", "file")
        outputs = []
        for build in both:
            for index_build in both:  # each serializer with each index: fast path and has_many path
                ix = index_build.ImageIndex(tmp, 0)
                ix.set_catalog(catalog)
                outputs.append(build.serialize_page(page, ix, base_url, meta))
                # The page from its items (the in-memory item store's path): the same bytes, and each
                # item is exactly the reference's item.
                assert build.serialize_items is not None and build.join_items is not None
                items = build.serialize_items(page, ix, base_url)
                outputs.append(build.join_items(items, meta))
                assert [orjson.loads(i) for i in items] == orjson.loads(outputs[-1])["items"]
        expected = reference_bytes(page, lambda i: 0 <= i <= 40 and i in with_images, base_url, meta)
        assert outputs == [expected] * 8


STR_COLUMNS = [c for c in PRODUCT_COLUMNS if c not in ("id", "category_id", "price", "stock")]


@settings(max_examples=60, deadline=None)
@given(page=st.lists(rows(), min_size=1, max_size=5), data=st.data())
def test_surrogates_rejected_by_both(
    both: tuple[Impl, Impl], page: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(page) - 1))
    column = data.draw(st.sampled_from(STR_COLUMNS))
    bad = data.draw(st.text(max_size=5)) + data.draw(
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    )
    values = list(page[at])
    values[PRODUCT_COLUMNS.index(column)] = bad
    page[at] = tuple(values)
    messages = []
    for build in both:
        with pytest.raises(SerializationError) as info:
            build.serialize_page(page, build.ImageIndex("/nonexistent", 0), "", {})
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "surrogate" in messages[0]
