"""Search normalisation is defined once in SQL (`catalog_search_norm`, migration 0004) and mirrored in
Python (server/catalog/search.py): the two must agree on every string, or the normalised `q` would miss
rows the index holds. Checked on every BMP character at once, on each of the function's paths (0016: printable
ASCII, printable ASCII with Arabic, anything else), on random mixed Arabic/Latin text, and on what the stored
`products.search_text` holds."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import asyncpg
import pytest
from catalog_testlib import Database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.catalog.search import Q_PATTERN, normalise, searchable

# Arabic block (letters, hamza forms, tashkeel, tatweel, digits), Persian digits, Latin with case,
# control characters and spaces: where the mapping does something, plus anything else PostgreSQL stores.
_INTERESTING = st.one_of(
    st.characters(min_codepoint=0x0600, max_codepoint=0x06FF),
    st.characters(min_codepoint=0x01, max_codepoint=0x24F),
    st.sampled_from(["\u0640", "\u0670", "\u064b", "\u0651", "أ", "إ", "آ", "ٱ", "ة", "ى", "\x1f", " "]),
    st.characters(exclude_categories=["Cs"], min_codepoint=0x01),
)
texts = st.text(_INTERESTING, max_size=40)
# The fast paths' inputs (migration 0016): printable ASCII alone, and printable ASCII with the Arabic block.
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
_ARABIC = "".join(chr(c) for c in range(0x0600, 0x0700))
ascii_texts = st.text(st.sampled_from(_PRINTABLE), max_size=40)
arabic_texts = st.text(st.sampled_from(_PRINTABLE + _ARABIC), max_size=40)


class Sql:
    """One connection on its own event loop, usable from Hypothesis' synchronous examples."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(url))

    def norm(self, text: str) -> str:
        """catalog_search_norm(text) in the database."""
        return str(self.loop.run_until_complete(self.conn.fetchval("SELECT catalog_search_norm($1)", text)))

    def search_text(self, name: str, sku: str | None, name_ar: str | None) -> str:
        """What the generated column holds for a product with these fields (the insert is rolled back)."""

        async def go() -> str:
            tr = self.conn.transaction()
            await tr.start()
            try:
                return str(
                    await self.conn.fetchval(
                        "INSERT INTO products (zoho_item_id, name, sku, name_ar) "
                        "VALUES ('norm-test', $1, $2, $3) RETURNING search_text",
                        name,
                        sku,
                        name_ar,
                    )
                )
            finally:
                await tr.rollback()

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        """Close the connection and its loop."""
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


@pytest.fixture(scope="module")
def sql(database: Database) -> Iterator[Sql]:
    """A connection to this module's (migrated) database."""
    conn = Sql(database.url)
    yield conn
    conn.close()


def test_every_bmp_character_maps_the_same_in_python_and_sql(sql: Sql) -> None:
    # translate() works character by character, so one string of every character proves the whole table
    # (NUL cannot be stored in text; surrogates are not characters).
    every = "".join(chr(c) for c in range(1, 0x10000) if not 0xD800 <= c < 0xE000)
    assert sql.norm(every) == normalise(every)


@pytest.mark.parametrize(
    "every",
    [
        _PRINTABLE,  # the ASCII path: lower() under "C"
        _PRINTABLE + _ARABIC,  # the Arabic path: that, then 0004's Arabic entries
        _PRINTABLE + _ARABIC + "\u00c0",  # one Latin capital more: 0004's whole translate()
        _PRINTABLE + "\x01",  # a control character: the whole translate() too
    ],
)
def test_each_path_maps_every_character_it_can_meet_as_python_does(sql: Sql, every: str) -> None:
    assert sql.norm(every) == normalise(every)
    assert sql.norm(every[::-1]) == normalise(every[::-1])


def test_the_ascii_path_lowers_under_c_whatever_the_input_collation(sql: Sql) -> None:
    # lower() under a Turkish collation maps I to a dotless i; the function's own COLLATE "C" must win
    # (skipped where PostgreSQL was built without ICU).
    async def go() -> tuple[str, str] | None:
        icu = "SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'tr-TR-x-icu')"
        if not await sql.conn.fetchval(icu):
            return None
        row = await sql.conn.fetchrow(
            """SELECT lower('I' COLLATE "tr-TR-x-icu"), catalog_search_norm('I' COLLATE "tr-TR-x-icu")"""
        )
        assert row is not None
        return row[0], row[1]

    got = sql.loop.run_until_complete(go())
    if got is None:
        pytest.skip("no ICU collations in this PostgreSQL")
    assert got == ("\u0131", "i")


def test_null_stays_null(sql: Sql) -> None:
    assert sql.loop.run_until_complete(sql.conn.fetchval("SELECT catalog_search_norm(NULL) IS NULL")) is True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(texts, ascii_texts, arabic_texts))
def test_python_and_sql_normalisers_agree(sql: Sql, text: str) -> None:
    assert normalise(text) == sql.norm(text)
    assert normalise(normalise(text)) == normalise(text)  # a normalised q is its own normal form


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts.filter(bool), st.one_of(st.none(), texts), st.one_of(st.none(), texts))
def test_search_text_is_the_normalised_fields_apart(
    sql: Sql, name: str, sku: str | None, ar: str | None
) -> None:
    stored = sql.search_text(name, sku, ar)
    assert stored == "\x1f".join(normalise(f or "") for f in (name, sku, ar))
    # A normalised term never holds the separator, so no match can span two fields.
    assert "\x1f" not in normalise(name + "\x1f" + (sku or ""))


@pytest.mark.parametrize(
    ("plain", "variants"),
    [
        ("حليب", ["حَلِيبٌ", "حـلـيـب", "حَلِيـــبٌ"]),
        ("احمد", ["أحمد", "إحمد", "آحمد", "ٱحمد", "أَحْمَد"]),
        ("قهوه", ["قهوة", "قَهْوَة"]),
        ("مستشفي", ["مستشفى"]),
        ("sku-0012345", ["SKU-٠٠١٢٣٤٥", "sku-۰۰۱۲۳۴۵", "Sku-0012345"]),
        ("crème brûlée", ["CRÈME BRÛLÉE", "Crème Brûlée"]),
    ],
)
def test_the_required_equivalences(sql: Sql, plain: str, variants: list[str]) -> None:
    for text in variants:
        assert normalise(text) == plain == sql.norm(text), text


@pytest.mark.parametrize(
    ("term", "ok"),
    [
        ("abc", True),
        ("حلي", True),
        ("٠١٢", True),
        ("ab", False),
        ("a b c", False),
        ("%%%", False),
        ("a_b", False),
        ("حَلَ", False),
    ],
)
def test_a_term_is_searchable_with_three_letters_or_digits_in_a_row(term: str, ok: bool) -> None:
    assert searchable(normalise(term)) is ok


@settings(max_examples=500)
@given(texts)
def test_the_openapi_pattern_states_the_same_rule_on_the_raw_query(text: str) -> None:
    # Q_PATTERN (for the schema of `q`) judges the query as sent; searchable() the normalised term. The
    # empty string is no search at all (server.params), which the schema must admit; NUL is refused.
    expected = text == "" or (searchable(normalise(text).strip()) and "\x00" not in text)
    assert (re.fullmatch(Q_PATTERN, text) is not None) == expected
    # As the OpenAPI document shows it (Param.openapi anchors it): the alternation stays grouped. (Python's
    # `$` also matches before a final newline, ECMA-262's does not; params strip the query first anyway.)
    assert (re.search(f"^{Q_PATTERN}$", text) is not None) == expected or "\n" in text
