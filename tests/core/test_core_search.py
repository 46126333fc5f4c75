"""SearchIndex (core_ext/_search*): each build answers as a naive reference (`term in text` over a dict), and
the two builds answer alike, in the same order, through loads, replacements, removals and compactions."""

from __future__ import annotations

import gc
from array import array
from typing import Any

import psutil
import pytest
from core_ext_testlib import Impl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext._catalog_tree import MAX_ID
from server.catalog.search import normalise

# Few letters, so that terms match often and overlap ("aa" in "aaaa"); Arabic and other multi-byte
# characters whose UTF-8 bytes share lead bytes (أ and ا: d8 a3 / d8 a7), so a byte-level slip shows.
ALPHABET = "ab é\u00e9ع\u0627\u0623\u0629\u0647\u064a\u0649€😀\x1f-"
TEXTS = st.text(ALPHABET, max_size=12).map(str.encode)
TERMS = st.text(ALPHABET, max_size=4).map(str.encode)
IDS = st.integers(0, 40)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), IDS, TEXTS),
        st.tuples(st.just("many"), st.lists(st.tuples(IDS, TEXTS), max_size=6), st.none()),
        st.tuples(st.just("remove"), IDS, st.none()),
        st.tuples(st.just("compact"), st.none(), st.none()),
    ),
    max_size=40,
)


def reference(texts: dict[int, bytes], term: bytes) -> list[int]:
    return sorted(i for i, t in texts.items() if term in t)


def apply(index: Any, ref: dict[int, bytes], op: tuple[str, Any, Any]) -> None:
    kind, a, b = op
    if kind == "set":
        index.set(a, b)
        ref[a] = b
    elif kind == "many":
        index.set_many([i for i, _ in a], [t for _, t in a])
        ref.update(a)  # a repeated id: the last text wins, as in the index
    elif kind == "remove":
        index.remove(a)
        ref.pop(a, None)
    else:
        index.compact()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, terms=st.lists(TERMS, min_size=1, max_size=6))
def test_builds_answer_as_the_reference(both: tuple[Impl, Impl], ops: list[Any], terms: list[bytes]) -> None:
    compiled, pure = both[0].SearchIndex(), both[1].SearchIndex()
    ref: dict[int, bytes] = {}
    for op in ops:
        apply(compiled, ref, op)
        apply(pure, {}, op)
    for term in [*terms, b"", b"a", b"aa", "ا".encode(), b"\xa7", b"\x1e"]:
        want = [] if b"\x1e" in term else reference(ref, term)
        got_c, got_p = compiled.search(term), pure.search(term)
        assert isinstance(got_c, array) and got_c.typecode == "i"
        assert list(got_c) == list(got_p), term  # the same records in the same order
        assert sorted(got_c) == want, term
    assert len(compiled) == len(pure) == compiled.count == len(ref)
    for i in range(42):
        assert compiled.get(i) == pure.get(i) == ref.get(i)
        assert (i in compiled) == (i in pure) == (i in ref)
    assert compiled.dead_bytes == pure.dead_bytes


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=30), pick=st.integers(0, 29))
def test_normalised_text_and_terms(impl: Impl, words: list[str], pick: int) -> None:
    # Any text, normalised as search_text is (no control characters, so never the separator).
    texts = {i: normalise(w).encode("utf-8", "surrogatepass") for i, w in enumerate(words)}
    index = impl.SearchIndex()
    index.set_many(list(texts), list(texts.values()))
    word = texts[pick % len(texts)]
    for term in (word, word[1:3], word[-2:], word[: len(word) // 2]):
        assert sorted(index.search(term)) == reference(texts, term)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.text("ab0 اير", max_size=40).map(str.encode), min_size=1, max_size=300),
    picks=st.lists(st.tuples(st.integers(0, 299), st.integers(0, 40), st.integers(1, 9)), max_size=8),
)
def test_long_buffers(both: tuple[Impl, Impl], texts: list[bytes], picks: list[Any]) -> None:
    # Buffers of kilobytes: the compiled scan's 16-byte blocks, their tails, and terms whose bytes repeat
    # (its choice of which two bytes to look for), against the reference and the pure build.
    compiled, pure = both[0].SearchIndex(), both[1].SearchIndex()
    ids = list(range(len(texts)))
    compiled.set_many(ids, texts)
    pure.set_many(ids, texts)
    ref = dict(zip(ids, texts, strict=True))
    terms = [texts[k % len(texts)][at : at + n] for k, at, n in picks] + [b"000", b"a a", b"\xd9\x8a\xd8"]
    for term in terms:
        got = compiled.search(term)
        assert list(got) == list(pure.search(term))
        assert sorted(got) == reference(ref, term), term


def test_one_hit_per_product_and_matches_inside_records_only(impl: Impl) -> None:
    index = impl.SearchIndex()
    index.set_many([5, 3, 9], [b"aaaa", b"xa", b"ax"])
    assert list(index.search(b"aa")) == [5]  # overlapping matches of one product: once
    assert list(index.search(b"a")) == [5, 3, 9]  # in the records' order
    assert list(index.search(b"xa")) == [3]  # "x" + "a" of the next record would span the separator
    assert list(index.search(b"aax")) == []
    assert list(index.search(b"")) == [5, 3, 9]
    index.set(3, "قهوة".encode())
    assert list(index.search("هو".encode())) == [3]
    assert list(index.search(b"x")) == [9]


def test_replacing_kills_the_old_record_and_compaction_reclaims_it(impl: Impl) -> None:
    index = impl.SearchIndex()
    big = [b"%d-" % i + b"x" * 1000 for i in range(200)]
    index.set_many(list(range(200)), big)
    assert index.dead_bytes == 0
    index.set(7, big[7])  # the same text: nothing changes
    assert index.dead_bytes == 0
    for i in range(60):
        index.set(i, b"renamed %d" % i)
    assert index.compactions == 0 and index.dead_bytes == sum(len(big[i]) + 1 for i in range(60))
    removed = 60
    while index.compactions == 0:  # past a third of the buffer: compacted
        index.remove(removed)
        removed += 1
    assert index.dead_bytes == 0 and 3 * sum(len(big[i]) + 1 for i in range(removed)) > 200 * 1004
    for i in range(removed, 80):
        index.remove(i)
    assert index.compactions == 1 and len(index) == 180
    assert sorted(index.search(b"renamed")) == list(range(60))
    assert sorted(index.search(b"xxx")) == list(range(80, 200))
    assert index.get(70) is None and index.get(100) == big[100] and index.get(3) == b"renamed 3"
    index.remove(70)  # absent: nothing
    index.set(70, b"back")
    assert list(index.search(b"back")) == [70]


def test_refused_input_changes_nothing(impl: Impl) -> None:
    index = impl.SearchIndex()
    index.set(1, b"tea")
    with pytest.raises(TypeError):
        index.set(2, "tea")
    with pytest.raises(TypeError):
        index.set(True, b"tea")
    with pytest.raises(ValueError, match="separator"):
        index.set_many([2, 3], [b"ok", b"a\x1eb"])
    with pytest.raises(ValueError, match="must be in"):
        index.set(-1, b"tea")
    with pytest.raises(ValueError, match="must be in"):
        index.set(MAX_ID + 1, b"tea")
    with pytest.raises(ValueError, match="length"):
        index.set_many([2, 3], [b"ok"])
    with pytest.raises(TypeError):
        index.search("tea")
    with pytest.raises(TypeError):
        index.remove("1")
    assert list(index.search(b"")) == [1] and index.get(2) is None and index.dead_bytes == 0
    assert index.get("1") is None and "1" not in index and -5 not in index and 1 in index


def test_memory_is_bounded(impl: Impl) -> None:
    index = impl.SearchIndex()
    texts = [b"golden juice %d\x1fsku-%07d" % (i, i) for i in range(20_000)]
    index.set_many(list(range(20_000)), texts)
    held = sum(map(len, texts)) + len(texts)
    # The texts, a separator, 16 bytes of arrays each, and the growth slack of the buffer.
    assert held <= index.memory_bytes <= 1.5 * held + 16 * len(texts) + 65536
    index.trim()  # after a load: no growth room left, 16 B of arrays a product
    assert index.memory_bytes == held + 16 * len(texts)
    assert len(index.search(b"juice")) == len(texts)
    index.set(20_000, b"one more")
    assert list(index.search(b"more")) == [20_000]


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


@pytest.mark.slow
def test_rss_flat_over_many_calls(impl: Impl) -> None:
    index = impl.SearchIndex()
    index.set_many(list(range(500)), [b"fresh tea %d" % i for i in range(500)])

    def one_round(k: int) -> None:
        index.search(b"tea")
        index.search(b"tea %d" % (k % 500))
        index.search(b"")
        index.set(k % 600, b"renamed %d" % k)
        index.remove((k * 7) % 600)
        with pytest.raises(ValueError, match="separator"):
            index.set(1, b"\x1e")
        with pytest.raises(TypeError):
            index.search(None)

    for k in range(5_000):
        one_round(k)
    before = rss()
    for k in range(50_000):
        one_round(k)
    after = rss()
    assert after - before < 4 * (1 << 20), f"RSS grew {(after - before) / (1 << 20):.1f} MiB"
