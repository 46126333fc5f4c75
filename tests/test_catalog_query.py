"""Typed catalog queries: normalisation shares keys between equal answers, and no two different queries
ever share a key (the cache-poisoning class of bug)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.catalog.query import CategoryQuery, ProductId, ProductQuery
from server.catalog.repo import SORTS
from server.catalog.schemas import FACETS, PRODUCT_LIST_PARAMS
from server.catalog.search import normalise, searchable
from server.errors import ValidationFailed
from server.params import parse_inputs

prices = st.one_of(st.none(), st.decimals(min_value=0, max_value=10**6, places=2))
# Searchable terms: three letters or digits in a row somewhere (shorter ones are a 422, tested below).
_run = st.text(st.characters(categories=("L", "Nd")), min_size=3, max_size=5)
texts = st.one_of(
    st.none(),
    st.tuples(st.text(max_size=12), _run, st.text(max_size=12))
    .map("".join)
    .filter(lambda t: searchable(normalise(t).strip())),
)


def canonical(entry: str) -> tuple[str, Any] | None:
    """An `ids` entry as ("id", number) or ("sku", normalised SKU), written apart from ProductQuery."""
    text = normalise(entry).strip()
    explicit = text[:4] == "sku:"
    if explicit:
        text = text[4:].strip()
    elif not text:
        return None  # blank: skipped
    if not explicit and re.fullmatch("[0-9]+", text):
        return ("id", int(text))
    return ("sku", text)


# Entries that look alike: digits (ASCII, Arabic-Indic), the sku: prefix, case, blanks and controls.
_entries = st.one_of(
    st.integers(0, 10**12).map(str),
    st.text(st.sampled_from("0123٠١٢ \x05sSkKuU:-aأا"), min_size=1, max_size=8),
)
raw_queries = st.fixed_dictionaries(
    {
        "page": st.integers(1, 1000),
        "page_size": st.integers(1, 200),
        "category_id": st.one_of(st.none(), st.integers(1, 10**6)),
        "q": texts,
        "min_price": prices,
        "max_price": prices,
        "in_stock": st.one_of(st.none(), st.booleans()),
        "sort": st.sampled_from(sorted(SORTS)),
        "facets": st.one_of(st.none(), st.lists(st.sampled_from(FACETS), min_size=1, unique=True).map(tuple)),
        "ids": st.none(),
    }
)
NO_EXTRAS = {"facets": None, "ids": None}
# Batches: whatever else is given is ignored.
batch_queries = raw_queries.flatmap(
    lambda raw: st.lists(_entries, max_size=4).map(lambda ids: {**raw, "ids": tuple(ids)})
)


def normal(params: dict[str, Any]) -> tuple[Any, ...]:
    """What the answer depends on, normalised independently of ProductQuery."""
    if params["ids"] is not None:
        entries = (c for c in map(canonical, params["ids"]) if c is not None)
        return ("batch", tuple(dict.fromkeys(entries)))
    q = normalise(params["q"]).strip() if params["q"] is not None else None

    def cents(d: Decimal | None) -> int | None:
        return None if d is None else int(d * 100)

    return (
        params["page"],
        params["page_size"],
        params["category_id"],
        q,
        cents(params["min_price"]),
        cents(params["max_price"]),
        params["in_stock"],
        params["sort"],
        frozenset(params["facets"] or ()),
    )


any_queries = st.one_of(raw_queries, batch_queries)


@given(any_queries, any_queries)
def test_keys_are_equal_exactly_when_the_normalised_queries_are(a: dict[str, Any], b: dict[str, Any]) -> None:
    qa, qb = ProductQuery.from_params(a), ProductQuery.from_params(b)
    assert (qa.cache_key == qb.cache_key) == (normal(a) == normal(b))
    assert (qa.cache_key == qb.cache_key) == (qa == qb)


@given(raw_queries)
def test_the_key_decodes_to_the_values_the_answer_is_computed_from(a: dict[str, Any]) -> None:
    query = ProductQuery.from_params(a)
    route, _, rest = query.cache_key.partition("[")
    decoded = orjson.loads("[" + rest)
    flt = query.filter
    assert route == "products"
    assert decoded[3] == flt.q and decoded[2] == flt.category_id and decoded[7] == flt.sort
    assert decoded[4] == (None if flt.min_price is None else str(flt.min_price))


def test_the_reported_poisoning_request_gets_its_own_key() -> None:
    def key(query: dict[str, list[str]]) -> str:
        return ProductQuery.from_params(parse_inputs(PRODUCT_LIST_PARAMS, query)).cache_key

    forged = key({"q": ["crispy&min_price=4000"], "page_size": ["3"]})
    real = key({"q": ["crispy"], "min_price": ["4000"], "page_size": ["3"]})
    assert forged != real


def test_spellings_of_one_answer_share_a_key() -> None:
    def key(**raw: str) -> str:
        return ProductQuery.from_params(
            parse_inputs(PRODUCT_LIST_PARAMS, {k: [v] for k, v in raw.items()})
        ).cache_key

    assert key(min_price="5") == key(min_price="5.0") == key(min_price="5.00") == key(min_price="05")
    assert key(q="Pro") == key(q="pro") == key(q=" PRO ")
    assert key(q="قهوة") == key(q="قَهْوَه") == key(q="قـهـوة")
    assert key(q="sku-١٢٣") == key(q="SKU-123") == key(q="sku-۱۲۳")
    assert key(in_stock="true") == key(in_stock="1") == key(in_stock="yes")
    assert key() == key(page="1", page_size="50", sort="name")
    assert key(min_price="5") != key(max_price="5")
    assert key(q="pro") != key(q="pro ", page="2")


def test_the_totals_key_ignores_page_and_sort_only() -> None:
    base = {
        "page": 1,
        "page_size": 50,
        "category_id": 3,
        "q": "xyz",
        "min_price": None,
        "max_price": None,
        "in_stock": True,
        "sort": "name",
        **NO_EXTRAS,
    }
    one = ProductQuery.from_params(base)
    assert one.total_key == ProductQuery.from_params({**base, "page": 7, "sort": "-price"}).total_key
    assert one.total_key != ProductQuery.from_params({**base, "in_stock": False}).total_key
    assert one.total_key != ProductQuery.from_params({**base, "q": "xyz|None"}).total_key


def test_other_routes_keys_cannot_meet() -> None:
    keys = {
        ProductId(5).cache_key,
        CategoryQuery(5, 50, None).cache_key,
        CategoryQuery(1, 5, None).cache_key,
        ProductQuery.from_params(
            {
                "page": 5,
                "page_size": 50,
                "category_id": None,
                "q": None,
                "min_price": None,
                "max_price": None,
                "in_stock": None,
                "sort": "name",
                **NO_EXTRAS,
            }
        ).cache_key,
    }
    assert len(keys) == 4


@given(st.text(max_size=30).filter(lambda t: not searchable(normalise(t).strip())))
def test_a_term_the_index_cannot_serve_is_a_validation_error_naming_q(text: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        ProductQuery.from_params(
            {
                "page": 1,
                "page_size": 50,
                "category_id": None,
                "q": text,
                "min_price": None,
                "max_price": None,
                "in_stock": None,
                "sort": "name",
                **NO_EXTRAS,
            }
        )
    assert [e.field for e in raised.value.errors] == ["query.q"]


def key_of(**raw: str) -> str:
    """The cache key of a raw query string's parameters."""
    return ProductQuery.from_params(
        parse_inputs(PRODUCT_LIST_PARAMS, {k: [v] for k, v in raw.items()})
    ).cache_key


def test_facets_and_ids_are_normalised_into_the_key() -> None:
    assert key_of(facets="price,category") == key_of(facets="category,price,category")
    assert key_of(facets="price") != key_of(facets="category")
    assert key_of() != key_of(facets="price")
    assert key_of(ids="7,SKU-١٢,007, sku-12") == key_of(ids="7,sku-12")
    assert key_of(ids="7,8") != key_of(ids="8,7")  # order is part of the answer
    assert key_of(ids="123") != key_of(ids="sku:123")  # an id is not the all-digit SKU
    assert key_of(ids="sku:abc") == key_of(ids="ABC")
    assert key_of(ids="sku:sku:abc") != key_of(ids="sku:abc")
    decoded = orjson.loads(key_of(ids="SKU:١٢٣,X-1,0042,sku:sku:z").removeprefix("products"))
    assert decoded[-1] == ["sku:123", "x-1", "42", "sku:sku:z"]


def test_a_batch_key_ignores_every_other_parameter() -> None:
    assert key_of(ids="1,2") == key_of(ids="1,2", page="3", page_size="7", sort="-price", in_stock="true")
    assert key_of(ids="1,2") == key_of(ids=" 1 ,,2, ", facets="price", q="abc")
    assert key_of(ids="") == key_of(ids=" , ") != key_of()  # an empty batch, not the list


def test_blank_and_bare_prefix_entries() -> None:
    decoded = orjson.loads(key_of(ids="1,sku: ,\x05, ").removeprefix("products"))
    assert decoded[-1] == ["1", "sku:"]


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        ({"facets": "colour"}, ["query.facets"]),
        ({"facets": "price, category"}, ["query.facets"]),  # choices are exact, as the schema says
        ({"facets": ""}, ["query.facets"]),
        ({"ids": ",".join("1" * 201)}, ["query.ids"]),
        ({"ids": "1," + "x" * 101}, ["query.ids"]),
        ({"ids": "1," * 2000 + "1"}, ["query.ids"]),  # longer than 3000 characters in all
        ({"ids": "1", "sort": "name", "bogus": "1"}, ["query.bogus"]),
    ],
)
def test_list_parameters_are_validated(raw: dict[str, str], fields: list[str]) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_inputs(PRODUCT_LIST_PARAMS, {k: [v] for k, v in raw.items()})
    assert [e.field for e in raised.value.errors] == fields


@pytest.mark.parametrize("name", ["facets", "ids"])
@given(data=st.data())
def test_the_documented_pattern_is_exactly_what_is_accepted(name: str, data: st.DataObject) -> None:
    # Schemathesis holds the server to its schema both ways: valid values answered, invalid ones refused.
    spec = next(p for p in PRODUCT_LIST_PARAMS if p.name == name)
    schema = spec.openapi()["schema"]
    pieces = ["category", "price", "in_stock", ",", " ", "x" * 60, "sku:", "١", "\x00"]
    raw = "".join(data.draw(st.lists(st.sampled_from(pieces), max_size=12 if name == "facets" else 400)))
    valid = re.fullmatch(schema["pattern"], raw) is not None and len(raw) <= schema.get("maxLength", len(raw))
    try:
        spec.parse(raw)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted == valid, raw
