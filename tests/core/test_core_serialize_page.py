"""serialize_page: fixed examples and error cases, run against both builds through the ``impl`` fixture."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from core_ext_testlib import BASE_URL, META, Impl, make_entry, reference_bytes, row

from core_ext import PRODUCT_COLUMNS, SerializationError
from core_ext.errors import CoreExtError


@pytest.fixture
def index(impl: Impl, tmp_path: Path) -> Any:
    """An index where products 1 and 3 (zoho 1001, 1003) have images."""
    make_entry(tmp_path, "1001.jpg", "file")
    make_entry(tmp_path, "1003.jpg", "symlink")
    ix = impl.ImageIndex(tmp_path, 0)
    ix.set_catalog({"1001": 1, "1002": 2, "1003": 3})
    return ix


class ListIndex:
    """A stand-in index object (not ImageIndex): exercises the generic has_many path."""

    def __init__(self, with_images: set[int]) -> None:
        self.with_images = with_images
        self.calls: list[list[int]] = []

    def has_many(self, dense_ids: Sequence[int]) -> list[bool]:
        self.calls.append(list(dense_ids))
        return [i in self.with_images for i in dense_ids]


class RecordLike:
    """Indexable by position like asyncpg's Record, but not a tuple: exercises the generic row path."""

    def __init__(self, values: tuple[Any, ...]) -> None:
        self._values = values

    def __getitem__(self, i: int) -> Any:
        return self._values[i]

    def __len__(self) -> int:
        return len(self._values)


def test_columns() -> None:
    assert PRODUCT_COLUMNS[0] == "id"
    assert len(PRODUCT_COLUMNS) == 12


def test_fixed_example(impl: Impl, index: Any) -> None:
    rows = [
        row(1, "1001"),
        row(2, "1002", sku=None, name_ar=None, category_id=None, price=None, stock=-4, unit=None),
        row(3, "1003", price=Decimal("0.10"), stock=0, currency=None),
    ]
    out = impl.serialize_page(rows, index, BASE_URL, META)
    assert isinstance(out, bytes)
    expected = {
        "items": [
            {
                "id": 1,
                "zoho_item_id": "1001",
                "sku": "SKU-1",
                "name": "Widget",
                "name_ar": "أداة",
                "category": {"id": 7, "name": "Tools", "name_ar": "أدوات"},
                "price": "12.50",
                "currency": "SAR",
                "stock": 3,
                "in_stock": True,
                "unit": "pc",
                "has_image": True,
                "image_url": "https://shop.example/product-images/1001.jpg",
            },
            {
                "id": 2,
                "zoho_item_id": "1002",
                "sku": None,
                "name": "Widget",
                "name_ar": None,
                "category": None,
                "price": None,
                "currency": "SAR",
                "stock": -4,
                "in_stock": False,
                "unit": None,
                "has_image": False,
                "image_url": None,
            },
            {
                "id": 3,
                "zoho_item_id": "1003",
                "sku": "SKU-1",
                "name": "Widget",
                "name_ar": "أداة",
                "category": {"id": 7, "name": "Tools", "name_ar": "أدوات"},
                "price": "0.10",
                "currency": None,
                "stock": 0,
                "in_stock": False,
                "unit": "pc",
                "has_image": True,
                "image_url": "https://shop.example/product-images/1003.jpg",
            },
        ],
        **META,
    }
    assert orjson.loads(out) == expected
    assert out == orjson.dumps(expected)
    assert "أداة".encode() in out  # raw UTF-8, never \u-escaped
    assert list(orjson.loads(out)) == ["items", "page", "page_size", "total", "pages"]


def test_escaping(impl: Impl, index: Any) -> None:
    nasty = 'q"uote\\back/slash\b\f\n\r\t\x00\x01\x1b\x1f\x7f\u2028\u2029 é 😀 <tag>'
    rows = [row(1, "1001", name=nasty, sku="\\\\", name_ar='"', category_name="\x1f" * 9)]
    base = 'http://h"\\\n'
    out = impl.serialize_page(rows, index, base, META)
    assert out == reference_bytes(rows, index.has, base, META)
    assert orjson.loads(out)["items"][0]["name"] == nasty
    assert b"\\u001b" in out  # lower-case hex, as orjson writes it


@pytest.mark.parametrize(
    ("price", "text"),
    [
        (Decimal("12.50"), "12.50"),
        (Decimal("0.10"), "0.10"),
        (Decimal("0"), "0"),
        (Decimal("-0.00"), "-0.00"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1.5E-8"), "0.000000015"),
        (Decimal("123456789012.34"), "123456789012.34"),
        (Decimal("NaN"), "NaN"),
    ],
)
def test_price_is_an_exact_string(impl: Impl, index: Any, price: Decimal, text: str) -> None:
    out = impl.serialize_page([row(price=price)], index, BASE_URL, {})
    assert orjson.loads(out)["items"][0]["price"] == text


def test_price_as_text_is_written_as_given(impl: Impl, index: Any) -> None:
    # page_by_ids has PostgreSQL cast the price to text (what format(v, "f") writes): same bytes.
    as_decimal = [row(1, price=Decimal("12.50")), row(2, price=Decimal("0.10")), row(3, price=None)]
    as_text = [row(1, price="12.50"), row(2, price="0.10"), row(3, price=None)]
    out = impl.serialize_page(as_text, index, BASE_URL, META)
    assert out == impl.serialize_page(as_decimal, index, BASE_URL, META)
    assert out == reference_bytes(as_text, index.has, BASE_URL, META)
    odd = 'NaN "\\\n'
    written = impl.serialize_page([row(price=odd)], index, BASE_URL, {})
    assert orjson.loads(written)["items"][0]["price"] == odd
    with pytest.raises(SerializationError, match=r"column 'price'.*surrogate"):
        impl.serialize_page([row(price="1\ud800")], index, BASE_URL, META)


def test_meta(impl: Impl, index: Any) -> None:
    assert impl.serialize_page([], index, BASE_URL, {}) == b'{"items":[]}'
    meta = {"z": 1, "a": [1, "x"], "n": None}
    assert impl.serialize_page([], index, BASE_URL, meta) == b'{"items":[],"z":1,"a":[1,"x"],"n":null}'
    with pytest.raises(ValueError, match="items"):
        impl.serialize_page([], index, BASE_URL, {"items": 1})
    with pytest.raises(SerializationError, match="meta"):
        impl.serialize_page([], index, BASE_URL, {"x": object()})


def test_int_limits(impl: Impl, index: Any) -> None:
    rows = [row(2**64 - 1, stock=-(2**63), category_id=2**63)]
    out = impl.serialize_page(rows, index, BASE_URL, META)
    assert out == reference_bytes(rows, index.has, BASE_URL, META)
    for bad in (2**64, -(2**63) - 1):
        with pytest.raises(SerializationError, match=r"'stock'.*64-bit"):
            impl.serialize_page([row(stock=bad)], index, BASE_URL, META)


def test_generic_rows_and_index(impl: Impl) -> None:
    rows = [row(1, "1001"), row(2, "1002"), row(3, "1003")]
    fake = ListIndex({2, 3})
    out = impl.serialize_page([RecordLike(r) for r in rows], fake, BASE_URL, META)
    assert out == reference_bytes(rows, lambda i: i in {2, 3}, BASE_URL, META)
    assert fake.calls == [[1, 2, 3]]
    assert impl.serialize_page(iter(rows), fake, BASE_URL, META) == out  # any iterable of rows
    assert impl.serialize_page([list(r) for r in rows], fake, BASE_URL, META) == out


def test_index_returning_wrong_length(impl: Impl) -> None:
    class Short:
        def has_many(self, dense_ids: Sequence[int]) -> list[bool]:
            return []

    with pytest.raises(ValueError, match="has_many"):
        impl.serialize_page([row()], Short(), BASE_URL, META)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("id", "1"),
        ("id", True),
        ("id", None),
        ("id", 1.0),
        ("zoho_item_id", None),
        ("zoho_item_id", 1001),
        ("sku", 5),
        ("name", None),
        ("name", b"bytes"),
        ("name_ar", 1),
        ("category_id", "7"),
        ("category_id", False),
        ("category_name", 1),
        ("category_name_ar", b"x"),
        ("price", 12.5),
        ("price", 12),
        ("price", b"12.50"),
        ("currency", 1),
        ("stock", None),
        ("stock", True),
        ("stock", 1.5),
        ("unit", 0),
    ],
)
def test_wrong_type_names_the_column(impl: Impl, index: Any, column: str, value: object) -> None:
    values = list(row())
    values[PRODUCT_COLUMNS.index(column)] = value
    with pytest.raises(SerializationError, match=f"row 1 column '{column}'") as info:
        impl.serialize_page([row(), tuple(values)], index, BASE_URL, META)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, CoreExtError)


def test_category_names_checked_even_without_category(impl: Impl, index: Any) -> None:
    with pytest.raises(SerializationError, match="'category_name'"):
        impl.serialize_page([row(category_id=None, category_name=3)], index, BASE_URL, META)


@pytest.mark.parametrize("column", ["zoho_item_id", "sku", "name", "name_ar", "category_name", "unit"])
def test_lone_surrogate(impl: Impl, index: Any, column: str) -> None:
    values = list(row())
    values[PRODUCT_COLUMNS.index(column)] = "bad \ud800 text"
    with pytest.raises(SerializationError, match=f"column '{column}'.*surrogate"):
        impl.serialize_page([tuple(values)], index, BASE_URL, META)


def test_bad_base_url_and_rows(impl: Impl, index: Any) -> None:
    with pytest.raises(SerializationError, match="base_url"):
        impl.serialize_page([row()], index, None, META)
    with pytest.raises(SerializationError, match="base_url"):
        impl.serialize_page([row()], index, "http://\udcff", META)
    with pytest.raises(SerializationError, match="row 0: expected at least 12 columns, got 11"):
        impl.serialize_page([row()[:11]], index, BASE_URL, META)


def test_extra_trailing_columns_are_ignored(impl: Impl, index: Any) -> None:
    plain = impl.serialize_page([row()], index, BASE_URL, META)
    assert impl.serialize_page([(*row(), 12345, "sort key")], index, BASE_URL, META) == plain


def test_first_error_is_the_same_in_both_builds(both: tuple[Impl, Impl]) -> None:
    # Several wrong cells: ids are checked for every row first, then the rest row by row.
    rows = [row(sku=1), row(id_="2"), row(name=None)]
    messages = []
    for build in both:
        with pytest.raises(SerializationError) as info:
            build.serialize_page(rows, ListIndex(set()), BASE_URL, META)
        messages.append(str(info.value))
    assert messages[0] == messages[1] == "row 1 column 'id': expected int, got str"
