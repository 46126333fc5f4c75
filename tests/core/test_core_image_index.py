"""ImageIndex behaviour, run against both builds through the ``impl`` fixture."""

from __future__ import annotations

import os
import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from core_ext_testlib import Impl, make_entry, set_mtime

CATALOG = {"1001": 1, "1002": 2, "1003": 3, "1004": 4, "1005": 5, "ABC": 6, "x": 7}


def index_for(impl: Impl, folder: Path, interval: float = 0.0, catalog: dict[str, int] | None = None) -> Any:
    ix = impl.ImageIndex(folder, interval)
    ix.set_catalog(CATALOG if catalog is None else catalog)
    return ix


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


def test_properties(impl: Impl, folder: Path) -> None:
    ix = impl.ImageIndex(folder, 2)
    assert ix.folder == str(folder)
    assert isinstance(ix.folder, str)
    assert ix.refresh_interval_s == 2.0
    assert isinstance(ix.refresh_interval_s, float)
    assert ix.count == 0
    assert ix.nbytes == 0
    assert ix.has_many([0, 1, 2]) == [False, False, False]


@pytest.mark.parametrize("interval", [-1, float("nan"), float("inf")])
def test_bad_interval(impl: Impl, folder: Path, interval: float) -> None:
    with pytest.raises(ValueError, match="refresh_interval_s"):
        impl.ImageIndex(folder, interval)


def test_entry_kinds_and_junk_names(impl: Impl, folder: Path) -> None:
    make_entry(folder, "1001.jpg", "file")
    make_entry(folder, "1002.jpg", "symlink")
    make_entry(folder, "1003.jpg", "dangling")
    make_entry(folder, "1004.jpg", "dir")
    make_entry(folder, "1005.jpg", "fifo")
    for junk in ("x.jpeg", ".jpg", "ABC.JPG", "1001.jpg.tmp", "999.jpg", "1001.JPG", "1001jpg", "1001.jpg "):
        make_entry(folder, junk, "file")
    ix = index_for(impl, folder)
    assert ix.has_many([0, 1, 2, 3, 4, 5, 6, 7, 8]) == [False, True, True] + [False] * 6
    assert ix.count == 2
    assert [ix.has(i) for i in range(9)] == ix.has_many(range(9))


def test_symlinks_count_only_when_they_stay_inside_the_folder(impl: Impl, tmp_path: Path) -> None:
    # The index agrees with the image route: a link counts only if it resolves to a regular file inside
    # the folder's real path (a folder configured through a symlink keeps its inside links).
    real = tmp_path / "real-uploads"
    real.mkdir()
    folder = tmp_path / "uploads"
    folder.symlink_to(real)
    make_entry(folder, "1001.jpg", "symlink")
    make_entry(folder, "1002.jpg", "outside")
    make_entry(folder, "1003.jpg", "escape")
    make_entry(folder, "1004.jpg", "dirlink")
    make_entry(folder, "1005.jpg", "dangling")
    (folder / "ABC.jpg").symlink_to(folder / "_lib" / "target-1001.jpg")  # absolute, through the link
    (folder / "x.jpg").symlink_to("/etc/passwd")
    (tmp_path / "sneaky").symlink_to(real / "_lib")
    make_entry(folder, "loop.jpg", "file")
    (folder / "loop.jpg").unlink()
    (folder / "loop.jpg").symlink_to("loop.jpg")
    ix = index_for(impl, folder, catalog={**CATALOG, "loop": 8})
    assert ix.has_many(range(9)) == [False, True, False, False, False, False, True, False, False]
    assert ix.count == 2
    (folder / "x.jpg").unlink()
    (folder / "x.jpg").symlink_to(tmp_path / "sneaky" / "target-1001.jpg")  # via an outside link, back in
    assert ix.refresh(force=True) is True
    assert ix.has(7)


def test_links_sharing_a_target_are_judged_alike(impl: Impl, folder: Path) -> None:
    # The scan resolves each distinct link text once; every link of that text gets the same verdict.
    (folder / "_lib").mkdir()
    (folder / "_lib" / "v.jpg").write_bytes(b"\xff\xd8\xff")
    (folder.parent / "out.jpg").write_bytes(b"\xff\xd8\xff")
    catalog = {f"in{i}": i for i in range(50)} | {f"out{i}": 100 + i for i in range(50)}
    for i in range(50):
        (folder / f"in{i}.jpg").symlink_to("_lib/v.jpg")
        (folder / f"out{i}.jpg").symlink_to("../out.jpg")
    ix = index_for(impl, folder, catalog=catalog)
    assert ix.count == 50 and all(ix.has_many(range(50))) and not any(ix.has_many(range(100, 150)))
    (folder / "_lib" / "v.jpg").unlink()
    (folder / "_lib" / "v.jpg").symlink_to(folder.parent / "out.jpg")  # the shared target now leads out
    assert ix.refresh(force=True) is True
    assert ix.count == 0


def test_has_item(impl: Impl, folder: Path) -> None:
    make_entry(folder, "1001.jpg", "file")
    make_entry(folder, "1002.jpg", "outside")
    make_entry(folder, "zzz.jpg", "file")
    ix = index_for(impl, folder, catalog={"1001": 1, "1002": 2, "1003": 3, "alias": 1})
    assert [ix.has_item(n) for n in ("1001", "1002", "1003", "alias", "zzz", "", "1001.jpg")] == [
        True,
        False,
        False,
        True,  # shares product 1's dense id
        False,  # a file whose name is not in the catalog (an inactive or unknown product)
        False,
        False,
    ]
    assert ix.has_item("\udcff") is False  # not encodable as a file name
    with pytest.raises(TypeError):
        ix.has_item(b"1001")
    with pytest.raises(TypeError):
        ix.has_item(1001)
    ix.set_catalog({"1002": 2})
    assert ix.has_item("1001") is False  # left the catalog (deactivated)


def test_has_out_of_range(impl: Impl, folder: Path) -> None:
    make_entry(folder, "1001.jpg", "file")
    ix = index_for(impl, folder)
    assert ix.has(1)
    for i in (-1, -(2**70), 8, 10**6, 2**63, 2**200):
        assert ix.has(i) is False
    assert ix.has_many([-1, 2**64, 1, 10**9]) == [False, False, True, False]
    assert ix.has_many((1,)) == [True]
    assert ix.has_many([]) == []
    with pytest.raises(TypeError):
        ix.has("1")
    with pytest.raises(TypeError):
        ix.has_many(["1"])


def test_set_catalog_validation(impl: Impl, folder: Path) -> None:
    ix = impl.ImageIndex(folder, 0)
    with pytest.raises(ValueError, match="1001"):
        ix.set_catalog({"1001": -1})
    with pytest.raises(ValueError, match="dense id"):
        ix.set_catalog({"1001": 2**31})
    with pytest.raises(TypeError):
        ix.set_catalog({"1001": "1"})
    with pytest.raises(TypeError):
        ix.set_catalog({"1001": True})
    with pytest.raises(TypeError):
        ix.set_catalog({1001: 1})


def test_set_catalog_rescans_and_remaps(impl: Impl, folder: Path) -> None:
    make_entry(folder, "1001.jpg", "file")
    make_entry(folder, "1002.jpg", "file")
    ix = index_for(impl, folder, interval=3600)
    assert ix.has_many([1, 2]) == [True, True]
    ix.set_catalog({"1001": 10, "1002": 2, "new": 3})
    assert ix.has_many([1, 2, 3, 10]) == [False, True, False, True]
    make_entry(folder, "new.jpg", "file")
    ix.set_catalog({"1001": 10, "1002": 2, "new": 3})  # rescans now, even inside the refresh interval
    assert ix.has(3)
    assert ix.count == 3


def test_set_catalog_takes_pairs(impl: Impl, folder: Path) -> None:
    names = ["b", "ab", "a", "abc", "é", "a-", "A", "zz9", "\udcff"]  # "\udcff" is the file name b"\xff"
    for name in names:
        make_entry(folder, f"{name}.jpg", "file")
    ix = impl.ImageIndex(folder, 0)
    pairs = [(name, i) for i, name in enumerate(names)]
    ix.set_catalog(iter([("ab", 40), *pairs, ("\ud800", 50), ("zz9", 12)]))  # the last of equal names wins
    assert ix.has_many(range(len(names))) == [True] * 7 + [False, True]
    assert ix.has(12) and not ix.has(40) and not ix.has(50)
    assert [ix.has_item(n) for n in [*names, "abcd", "aa", "", "\ud800"]] == [True] * 9 + [False] * 4
    assert ix.count == 9
    # Name bytes + an offset per name and one more + an id per name (the unencodable name is left out).
    size = sum(len(os.fsencode(n)) for n in names)
    assert ix.catalog_nbytes == size + (len(names) + 1) * 4 + len(names) * 4
    ix.set_catalog(dict(pairs))  # a mapping gives the same index
    assert ix.has_many(range(len(names))) == [True] * len(names)
    with pytest.raises(ValueError, match="unpack"):
        ix.set_catalog([("a", 1, 2)])  # not a pair
    ix.set_catalog([])
    assert ix.count == 0
    assert ix.catalog_nbytes == 4


def test_catalog_memory_per_name(impl: Impl, folder: Path) -> None:
    # A {name bytes: id} dict held ~95 B per 10-byte name (key object, table slot, id object; the pure
    # build's dict of str ~39 B); at 1M products that was a third of a server's RSS. The sorted arena holds
    # the name, a 4-byte offset and a 4-byte id.
    n = 200_000
    names = [f"ZI{i:08d}" for i in range(n)]
    catalog = dict(zip(names, range(n, 2 * n), strict=True))
    make_entry(folder, f"{names[-1]}.jpg", "file")
    ix = impl.ImageIndex(folder, 0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ix.set_catalog(catalog)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 24 * n, f"{held / n:.1f} B per name"
    assert ix.catalog_nbytes == 18 * n + 4
    assert ix.has_item(names[-1]) and ix.has(2 * n - 1) and not ix.has_item(names[0])


def test_shared_dense_id_counts_once(impl: Impl, folder: Path) -> None:
    make_entry(folder, "a.jpg", "file")
    make_entry(folder, "b.jpg", "file")
    ix = index_for(impl, folder, catalog={"a": 4, "b": 4})
    assert ix.count == 1


def test_fingerprint(impl: Impl, folder: Path) -> None:
    make_entry(folder, "1001.jpg", "file")
    make_entry(folder, "1003.jpg", "symlink")
    first = index_for(impl, folder)
    second = index_for(impl, folder)  # another "process" seeing the same folder and catalog
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 32
    int(first.fingerprint, 16)
    # Not tied to the bitset's size: a bigger catalog with the same image set gives the same value.
    bigger = index_for(impl, folder, catalog={**CATALOG, "zzz": 100_000})
    assert bigger.nbytes > first.nbytes
    assert bigger.fingerprint == first.fingerprint
    make_entry(folder, "1002.jpg", "file")
    assert second.refresh(force=True) is True
    assert second.fingerprint != first.fingerprint
    assert first.refresh(force=True) is True
    assert second.fingerprint == first.fingerprint


def test_empty_fingerprint_is_stable(impl: Impl, folder: Path) -> None:
    assert impl.ImageIndex(folder, 0).fingerprint == index_for(impl, folder).fingerprint


def test_refresh_add_remove_rename_symlink(impl: Impl, folder: Path) -> None:
    ix = index_for(impl, folder)
    assert ix.refresh() is False
    make_entry(folder, "1001.jpg", "file")
    assert ix.refresh() is True
    assert ix.has(1)
    assert ix.refresh() is False  # nothing changed since
    (folder / "1001.jpg").rename(folder / "1002.jpg")
    assert ix.refresh() is True
    assert ix.has_many([1, 2]) == [False, True]
    make_entry(folder, "1003.jpg", "symlink")
    assert ix.refresh() is True
    assert ix.has(3)
    make_entry(folder, "1005.jpg", "outside")
    assert ix.refresh() is False  # rescanned; a link out of the folder is not an image
    assert not ix.has(5)
    (folder / "1002.jpg").unlink()
    assert ix.refresh() is True
    assert ix.has_many([1, 2, 3]) == [False, False, True]
    make_entry(folder, "1004.jpg.tmp", "file")  # an upload in progress does not count
    assert ix.refresh() is False
    assert ix.count == 1


def test_folder_deleted_and_recreated(impl: Impl, folder: Path) -> None:
    make_entry(folder, "1001.jpg", "file")
    ix = index_for(impl, folder)
    assert ix.count == 1
    shutil.rmtree(folder)
    assert ix.refresh() is True
    assert ix.count == 0
    assert ix.refresh() is False
    folder.mkdir()
    make_entry(folder, "1002.jpg", "file")
    assert ix.refresh() is True
    assert ix.has_many([1, 2]) == [False, True]


def test_missing_folder_then_created(impl: Impl, tmp_path: Path) -> None:
    folder = tmp_path / "later"
    ix = index_for(impl, folder)
    assert ix.count == 0
    assert ix.refresh() is False
    folder.mkdir()
    assert ix.refresh() is False  # appeared, rescanned, still no images
    make_entry(folder, "1001.jpg", "file")
    assert ix.refresh() is True
    assert ix.has(1)


def test_folder_is_a_file(impl: Impl, tmp_path: Path) -> None:
    path = tmp_path / "plain-file"
    path.write_text("not a folder")
    ix = index_for(impl, path)
    assert ix.count == 0
    assert ix.refresh(force=True) is False


def test_unreadable_folder_raises(impl: Impl, folder: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any folder")
    folder.chmod(0)
    try:
        with pytest.raises(PermissionError):
            index_for(impl, folder)
    finally:
        folder.chmod(0o755)


def test_interval_respected(impl: Impl, folder: Path) -> None:
    ix = index_for(impl, folder, interval=0.5)
    started = time.monotonic()
    make_entry(folder, "1001.jpg", "file")
    # Within the interval the folder is not looked at: no rescan, no change.
    assert ix.refresh() is False
    assert ix.has(1) is False
    if time.monotonic() - started < 0.4:  # on a badly stalled machine the interval may already be over
        assert ix.refresh() is False
        assert ix.has(1) is False
    time.sleep(0.55)
    assert ix.refresh() is True
    assert ix.has(1)
    assert ix.refresh() is False  # the successful check restarted the interval


def test_force_ignores_interval(impl: Impl, folder: Path) -> None:
    ix = index_for(impl, folder, interval=3600)
    make_entry(folder, "1001.jpg", "file")
    assert ix.refresh() is False
    assert ix.refresh(force=True) is True
    assert ix.has(1)
    assert ix.refresh(force=True) is False  # rescanned again, same set


def test_unchanged_mtime_skips_rescan(impl: Impl, folder: Path) -> None:
    # An mtime far in the past makes the scan non-racy, so only an mtime change triggers a rescan.
    old = time.time_ns() - 3600 * 10**9
    set_mtime(folder, old)
    ix = index_for(impl, folder)
    make_entry(folder, "1001.jpg", "file")
    set_mtime(folder, old)
    assert ix.refresh() is False
    assert ix.has(1) is False  # proves the folder was only stat'ed, not read
    assert ix.refresh(force=True) is True
    assert ix.has(1)


def test_racy_mtime_rescans_even_if_unchanged(impl: Impl, folder: Path) -> None:
    # The folder was just modified, so the scan is racy: a file added within the same timestamp tick on a
    # coarse file system leaves the mtime as it was, and must still be found at the next refresh.
    make_entry(folder, "1001.jpg", "file")
    mtime = folder.stat().st_mtime_ns
    ix = index_for(impl, folder)
    make_entry(folder, "1002.jpg", "file")
    set_mtime(folder, mtime)
    assert ix.refresh() is True
    assert ix.has_many([1, 2]) == [True, True]


def test_memory_for_a_million_products(impl: Impl, folder: Path) -> None:
    catalog = {str(i): i for i in range(1_000_000)}
    make_entry(folder, "999999.jpg", "file")
    ix = index_for(impl, folder, catalog=catalog)
    assert ix.nbytes <= 1 << 20
    assert ix.nbytes == 125_000
    assert ix.has(999_999)
    assert ix.count == 1


def test_pathlike_folder(impl: Impl, folder: Path) -> None:
    make_entry(folder, "1001.jpg", "file")
    ix = impl.ImageIndex(folder)
    ix.set_catalog(CATALOG)
    assert ix.has(1)
    assert ix.refresh_interval_s == 1.0
    with pytest.raises(TypeError):
        impl.ImageIndex(os.fsencode(folder))
