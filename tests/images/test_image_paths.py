"""The open-time folder checks on real files: the /proc answer and the portable walk agree."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.images.service import opened_inside, walked_inside


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    uploads = tmp_path / "uploads"
    (uploads / "_lib").mkdir(parents=True)
    (uploads / "_lib" / "v.jpg").write_bytes(b"\xff\xd8")
    (uploads / "a.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    (uploads / "in.jpg").symlink_to("_lib/v.jpg")
    (uploads / "out.jpg").symlink_to("../secret.jpg")
    (uploads / "abs.jpg").symlink_to(tmp_path / "secret.jpg")
    (uploads / "via-dir.jpg").symlink_to(tmp_path / "uploads-link" / "a.jpg")
    (tmp_path / "uploads-link").symlink_to(uploads)  # out of the folder and back in: inside
    return uploads


@pytest.fixture
def opened(folder: Path) -> Iterator[dict[str, int]]:
    fds = {p.name: os.open(p, os.O_RDONLY) for p in folder.iterdir() if p.suffix == ".jpg"}
    yield fds
    for fd in fds.values():
        os.close(fd)


@pytest.mark.parametrize("check", [opened_inside, walked_inside])
def test_inside_and_outside(folder: Path, opened: dict[str, int], check: object) -> None:
    assert callable(check)
    verdicts = {name: check(fd, str(folder / name), str(folder)) for name, fd in opened.items()}
    assert verdicts == {
        "a.jpg": True,
        "in.jpg": True,
        "via-dir.jpg": True,
        "out.jpg": False,
        "abs.jpg": False,
    }


@pytest.mark.parametrize("check", [opened_inside, walked_inside])
def test_outside_file_opened_before_the_path_was_made_harmless(
    folder: Path, opened: dict[str, int], check: object
) -> None:
    # The link out was opened, then replaced by an inside file: the path now looks fine, the fd is not.
    assert callable(check)
    (folder / "out.jpg").unlink()
    (folder / "out.jpg").write_bytes(b"\xff\xd8")
    assert check(opened["out.jpg"], str(folder / "out.jpg"), str(folder)) is False


@pytest.mark.parametrize("check", [opened_inside, walked_inside])
def test_sub_folder_swapped_for_a_link_out(folder: Path, opened: dict[str, int], check: object) -> None:
    # `_lib` becomes a link to a folder outside holding a file of the same name.
    assert callable(check)
    outside = folder.parent / "outside-lib"
    outside.mkdir()
    (outside / "v.jpg").write_bytes(b"secret")
    fd = os.open(folder / "in.jpg", os.O_RDONLY)
    try:
        (folder / "_lib").rename(folder.parent / "old-lib")
        (folder / "_lib").symlink_to(outside)
        # The file opened before moved out with its folder; the path now leads to another outside file.
        assert check(fd, str(folder / "in.jpg"), str(folder)) is False
        fd2 = os.open(folder / "in.jpg", os.O_RDONLY)  # now really outside
        try:
            assert check(fd2, str(folder / "in.jpg"), str(folder)) is False
        finally:
            os.close(fd2)
    finally:
        os.close(fd)
