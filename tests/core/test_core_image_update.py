"""ImageIndex.update_catalog: the same index as a set_catalog of the whole changed catalog (both builds), and
the compiled build and the pure twin agree on every result (Hypothesis)."""

from __future__ import annotations

import string
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from core_ext_testlib import Impl, make_entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KINDS = ("file", "symlink", "outside", "escape", "dirlink", "dangling", "dir", "fifo")
# Names a directory entry cannot have too (a slash, NUL, empty): they never count.
ZOHO = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=6),
    st.sampled_from(["", "a/b", "a\0b", "..", "é", "\udcff"]),
)
IDS = st.integers(0, 300)


def state(ix: Any, names: list[str], top: int) -> tuple[Any, ...]:
    """Everything a reader sees."""
    return (
        ix.has_many(range(top + 10)),
        [ix.has_item(n) for n in names],
        ix.count,
        ix.fingerprint,
        ix.nbytes,
        ix.catalog_nbytes,
    )


def expected_catalog(
    catalog: list[tuple[str, int]], upserts: list[tuple[str, int]], remove_ids: list[int]
) -> list[tuple[str, int]]:
    """What update_catalog means: the names of removed ids dropped, then the upserts (last one wins)."""
    gone = set(remove_ids)
    return [(n, i) for n, i in dict(catalog).items() if i not in gone] + upserts


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, ...]:
    """A catalog, folder entries, then a few updates (upserts, ids to remove), each as pairs."""
    catalog = draw(st.lists(st.tuples(ZOHO, IDS), max_size=30))
    known = sorted({n for n, _ in catalog} | set(draw(st.lists(ZOHO, max_size=8))))
    entries: dict[str, str] = {}
    for name in draw(st.lists(st.sampled_from(known), unique=True)) if known else []:
        if name and "/" not in name and "\0" not in name and name.isprintable():
            entries[f"{name}.jpg"] = draw(st.sampled_from(KINDS))
    updates = draw(
        st.lists(
            st.tuples(
                st.lists(st.tuples(st.sampled_from(known) if known else ZOHO, IDS) | st.tuples(ZOHO, IDS)),
                st.lists(IDS | st.integers(-5, 2**40), max_size=6),
            ),
            max_size=4,
        )
    )
    return catalog, entries, updates, known


def build_folder(tmp: str, entries: dict[str, str]) -> Path:
    folder = Path(tmp) / "uploads"
    folder.mkdir()
    for name, kind in entries.items():
        make_entry(folder, name, kind)
    return folder


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_update_is_a_set_catalog_of_the_result(both: tuple[Impl, Impl], case: tuple[Any, ...]) -> None:
    catalog, entries, updates, known = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(tmp, entries)
        states = []
        for build in both:
            ix = build.ImageIndex(folder, 3600)
            ix.set_catalog(catalog)
            current = list(catalog)
            seen = []
            for upserts, remove_ids in updates:
                ix.update_catalog(upserts, remove_ids)
                current = expected_catalog(current, upserts, remove_ids)
                full = build.ImageIndex(folder, 3600)
                full.set_catalog(current)
                names = [*known, *(n for n, _ in current), "missing"]
                top = max((i for _, i in current), default=0)
                seen.append(state(ix, names, top))
                assert seen[-1] == state(full, names, top)
            states.append(seen)
        assert states[0] == states[1]


def test_update_looks_only_at_changed_names(impl: Impl, tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    make_entry(folder, "a.jpg", "file")
    ix = impl.ImageIndex(folder, 3600)
    ix.set_catalog({"a": 1, "b": 2})
    assert ix.has_many([1, 2]) == [True, False]
    make_entry(folder, "b.jpg", "file")  # not seen: b is not among the changes (no rescan)
    make_entry(folder, "c.jpg", "symlink")
    ix.update_catalog({"c": 3})
    assert ix.has_many([1, 2, 3]) == [True, False, True]
    assert ix.count == 2
    (folder / "a.jpg").unlink()
    ix.update_catalog([("a", 4)], [2])  # a moves to id 4 (its file is gone now), b is dropped
    assert ix.has_many([1, 2, 3, 4]) == [False, False, True, False]
    assert not ix.has_item("b")
    assert ix.has_item("c")
    ix.update_catalog({}, [3, 99, -1, 2**70])
    assert ix.count == 0
    assert ix.nbytes == 1  # id 4 (a) is the largest left
    assert ix.refresh(force=True) is False  # the folder holds no file of a catalog name


def test_update_keeps_the_folder_check(impl: Impl, tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    ix = impl.ImageIndex(folder, 0)
    ix.set_catalog({"a": 1})
    make_entry(folder, "a.jpg", "file")
    ix.update_catalog({"b": 2})
    assert not ix.has(1)
    assert ix.refresh() is True  # the folder's mtime moved: the next refresh rescans
    assert ix.has(1)


def test_update_on_a_missing_folder(impl: Impl, tmp_path: Path) -> None:
    ix = impl.ImageIndex(tmp_path / "nope", 0)
    ix.update_catalog({"a": 1, "b": 2}, [1])
    assert ix.has_many([0, 1, 2]) == [False, False, False]
    assert ix.has_item("a") is False
    assert ix.catalog_nbytes == impl.ImageIndex(tmp_path / "nope", 0).catalog_nbytes + 2 + 2 * 8


@pytest.mark.parametrize(
    ("upserts", "remove_ids", "error", "match"),
    [
        ({"a": -1}, (), ValueError, "dense id"),
        ({"a": "1"}, (), TypeError, "expected int"),
        ([(1, 1)], (), TypeError, "catalog key"),
        ({}, ["1"], TypeError, "remove_ids"),
        ({}, [True], TypeError, "remove_ids"),
        ({}, [1.0], TypeError, "remove_ids"),
    ],
)
def test_update_rejects_bad_input_and_changes_nothing(
    impl: Impl, tmp_path: Path, upserts: Any, remove_ids: Any, error: type[Exception], match: str
) -> None:
    make_entry(tmp_path, "x.jpg", "file")
    ix = impl.ImageIndex(tmp_path, 0)
    ix.set_catalog({"x": 1})
    before = (ix.has_many([0, 1]), ix.fingerprint, ix.catalog_nbytes)
    with pytest.raises(error, match=match):
        ix.update_catalog(upserts, remove_ids)
    assert (ix.has_many([0, 1]), ix.fingerprint, ix.catalog_nbytes) == before


def test_refresh_in_a_thread_never_undoes_an_update(impl: Impl, tmp_path: Path) -> None:
    """The service rescans in a worker thread while the event loop applies catalog updates: whatever the
    interleaving, the index ends as a set_catalog of the final catalog would leave it (a rescan that read the
    names before an update must not store bits made for them, nor an update undo a rescan)."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    for k in range(400):
        make_entry(folder, f"old{k}.jpg", "file" if k % 3 else "symlink")
    ix = impl.ImageIndex(folder, 0)
    ix.set_catalog({f"old{k}": k for k in range(400)})
    stop = threading.Event()
    errors: list[BaseException] = []

    def rescans() -> None:
        try:
            while not stop.is_set():
                ix.refresh(force=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=rescans)
    thread.start()
    try:
        for k in range(300):
            make_entry(folder, f"new{k}.jpg", "file")
            ix.update_catalog({f"new{k}": 1000 + k}, [k] if k % 5 == 0 else [])
    finally:
        stop.set()
        thread.join()
    assert not errors
    final = impl.ImageIndex(folder, 3600)
    final.set_catalog(
        {
            **{f"old{k}": k for k in range(400) if not (k < 300 and k % 5 == 0)},
            **{f"new{k}": 1000 + k for k in range(300)},
        }
    )
    top = 1400
    assert ix.has_many(range(top)) == final.has_many(range(top))
    assert (ix.count, ix.fingerprint) == (final.count, final.fingerprint)
