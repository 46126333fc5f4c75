"""Helpers shared by the core_ext tests: an independent reference serializer and folder builders."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from core_ext import _images_py, _pages_py

META = {"page": 1, "page_size": 50, "total": 1234, "pages": 25}
BASE_URL = "https://shop.example"


@dataclass(frozen=True)
class Impl:
    """One build of core_ext: its ImageIndex class and serialize_page function."""

    name: str
    ImageIndex: Any
    serialize_page: Callable[..., bytes]


def reference_page(
    rows: Iterable[Sequence[Any]], has: Callable[[int], bool], base_url: str, meta: Mapping[str, Any]
) -> dict[str, Any]:
    """The page as a dict, written from the contract rather than from either build."""
    items = []
    for r in rows:
        flag = has(r[0])
        items.append(
            {
                "id": r[0],
                "zoho_item_id": r[1],
                "sku": r[2],
                "name": r[3],
                "name_ar": r[4],
                "category": None if r[5] is None else {"id": r[5], "name": r[6], "name_ar": r[7]},
                "price": None if r[8] is None else format(r[8], "f"),
                "currency": r[9],
                "stock": r[10],
                "in_stock": r[10] > 0,
                "unit": r[11],
                "has_image": flag,
                "image_url": f"{base_url}/product-images/{r[1]}.jpg" if flag else None,
            }
        )
    return {"items": items, **meta}


def reference_bytes(
    rows: Iterable[Sequence[Any]], has: Callable[[int], bool], base_url: str, meta: Mapping[str, Any]
) -> bytes:
    """``orjson.dumps`` of :func:`reference_page`."""
    return orjson.dumps(reference_page(rows, has, base_url, meta))


def row(
    id_: Any = 1,
    zoho: Any = "1001",
    *,
    sku: Any = "SKU-1",
    name: Any = "Widget",
    name_ar: Any = "أداة",
    category_id: Any = 7,
    category_name: Any = "Tools",
    category_name_ar: Any = "أدوات",
    price: Any = Decimal("12.50"),
    currency: Any = "SAR",
    stock: Any = 3,
    unit: Any = "pc",
) -> tuple[Any, ...]:
    """A product row tuple in PRODUCT_COLUMNS order (any types, so tests can pass wrong ones)."""
    return (
        id_,
        zoho,
        sku,
        name,
        name_ar,
        category_id,
        category_name,
        category_name_ar,
        price,
        currency,
        stock,
        unit,
    )


# Entry kinds the image route serves (and the index counts); the others are never served.
SERVED_KINDS = ("file", "symlink")


def make_entry(folder: Path, name: str, kind: str) -> None:
    """Create one directory entry of the given kind.

    file; symlink (relative, to a file in a sub-folder of `folder`); outside (absolute, to a file outside
    `folder`); escape (relative `../`, outside); dirlink (to a folder inside); dangling; dir; fifo.
    """
    path = folder / name
    if kind == "file":
        path.write_bytes(b"\xff\xd8\xff")
    elif kind == "symlink":
        library = folder / "_lib"
        library.mkdir(exist_ok=True)
        (library / f"target-{name}").write_bytes(b"\xff\xd8\xff")
        path.symlink_to(Path("_lib") / f"target-{name}")
    elif kind in ("outside", "escape"):
        target = folder.parent / f"target-{name}"
        target.write_bytes(b"\xff\xd8\xff")
        path.symlink_to(target if kind == "outside" else Path("..") / target.name)
    elif kind == "dirlink":
        (folder / "_dir").mkdir(exist_ok=True)
        path.symlink_to("_dir")
    elif kind == "dangling":
        path.symlink_to(folder.parent / "does-not-exist" / name)
    elif kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        raise ValueError(kind)


def set_mtime(folder: Path, mtime_ns: int) -> None:
    """Put the folder's mtime back, as a file system with a coarse timestamp tick would leave it."""
    st = folder.stat()
    os.utime(folder, ns=(st.st_atime_ns, mtime_ns))


REQUIRE_COMPILED = os.environ.get("CORE_EXT_REQUIRE_COMPILED", "") == "1"


def load_compiled() -> Impl | None:
    """The compiled build, or None when it is not built (a failure when CORE_EXT_REQUIRE_COMPILED=1)."""
    try:
        images = importlib.import_module("core_ext._images")
        pages = importlib.import_module("core_ext._pages")
    except ImportError as exc:
        if REQUIRE_COMPILED:
            pytest.fail(f"compiled core_ext required but not importable: {exc}")
        return None
    return Impl("compiled", images.ImageIndex, pages.serialize_page)


PURE = Impl("pure", _images_py.ImageIndex, _pages_py.serialize_page)


def require_compiled() -> Impl:
    """The compiled build; skips the test when it is missing and not required."""
    compiled = load_compiled()
    if compiled is None:
        pytest.skip("compiled core_ext not built (set CORE_EXT_REQUIRE_COMPILED=1 to make this a failure)")
    return compiled
