"""Helpers shared by the core_ext tests: an independent reference serializer, folder builders and a
reference catalog (plain dicts and sorting, written from repo.py's SQL rather than from either build)."""

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

from core_ext import _catalog_py, _images_py, _pages_py, _search_py

META = {"page": 1, "page_size": 50, "total": 1234, "pages": 25}
BASE_URL = "https://shop.example"


@dataclass(frozen=True)
class Impl:
    """One build of core_ext: its ImageIndex class, serializer functions, CatalogIndex and SearchIndex."""

    name: str
    ImageIndex: Any
    serialize_page: Callable[..., bytes]
    CatalogIndex: Any = None
    serialize_items: Callable[..., list[bytes]] | None = None
    join_items: Callable[..., bytes] | None = None
    SearchIndex: Any = None


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
                "price": None if r[8] is None else r[8] if isinstance(r[8], str) else format(r[8], "f"),
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
        catalog = importlib.import_module("core_ext._catalog")
        search = importlib.import_module("core_ext._search")
    except ImportError as exc:
        if REQUIRE_COMPILED:
            pytest.fail(f"compiled core_ext required but not importable: {exc}")
        return None
    return Impl(
        "compiled",
        images.ImageIndex,
        pages.serialize_page,
        catalog.CatalogIndex,
        pages.serialize_items,
        pages.join_items,
        search.SearchIndex,
    )


PURE = Impl(
    "pure",
    _images_py.ImageIndex,
    _pages_py.serialize_page,
    _catalog_py.CatalogIndex,
    _pages_py.serialize_items,
    _pages_py.join_items,
    _search_py.SearchIndex,
)


def require_compiled() -> Impl:
    """The compiled build; skips the test when it is missing and not required."""
    compiled = load_compiled()
    if compiled is None:
        pytest.skip("compiled core_ext not built (set CORE_EXT_REQUIRE_COMPILED=1 to make this a failure)")
    return compiled


@dataclass
class RefProduct:
    """One product as the catalog SQL sees it."""

    category: int | None
    price: int | None  # cents of the consumer price list; None: no consumer price
    stock: int
    created_us: int
    name_rank: int  # equal names, equal ranks
    active: bool


@dataclass
class RefCatalog:
    """The consumer catalog in plain dicts, answering as repo.py's SQL does (slow, obviously right)."""

    products: dict[int, RefProduct]
    categories: dict[int, tuple[int | None, bool]]  # id -> (parent_id, is_active)

    def _descendants(self, root: int, *, active_only: bool) -> set[int]:
        # WITH RECURSIVE sub: the root, then every category whose parent is in the set (UNION: no repeats).
        found = {root}
        while True:
            more = {
                c
                for c, (parent, on) in self.categories.items()
                if parent in found and c not in found and (on or not active_only)
            }
            if not more:
                return found
            found |= more

    def rows(
        self,
        *,
        category: int | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        in_stock: bool | None = None,
        only: Iterable[int] | None = None,
    ) -> list[int]:
        """Ids of the active products passing the filters, in no particular order."""
        sub = None if category is None else self._descendants(category, active_only=False)
        allowed = None if only is None else set(only)
        out = []
        for i, p in self.products.items():
            if not p.active:
                continue
            if sub is not None and p.category not in sub:
                continue
            if min_price is not None and (p.price is None or p.price < min_price):
                continue
            if max_price is not None and (p.price is None or p.price > max_price):
                continue
            if in_stock is not None and (p.stock > 0) != in_stock:
                continue
            if allowed is not None and i not in allowed:
                continue
            out.append(i)
        return out

    def query(self, sort: str, offset: int, limit: int, **filters: Any) -> tuple[list[int], int]:
        """(page ids, total) with the SORTS of repo.py."""
        ids = self.rows(**filters)
        p = self.products
        keys: dict[str, Callable[[int], Any]] = {
            "name": lambda i: (p[i].name_rank, i),
            "-name": lambda i: (-p[i].name_rank, -i),
            "price": lambda i: (p[i].price is None, p[i].price or 0, i),
            "-price": lambda i: (p[i].price is None, -(p[i].price or 0), -i),
            "newest": lambda i: (-p[i].created_us, -i),
        }
        ids.sort(key=keys[sort])
        return ids[offset : offset + limit], len(ids)

    def category_counts(self) -> dict[int, int]:
        """repo.CATEGORIES: per active category, active products in its tree walked through active ones."""
        out = {}
        for c, (_, on) in self.categories.items():
            if on:
                tree = self._descendants(c, active_only=True)
                out[c] = sum(1 for p in self.products.values() if p.active and p.category in tree)
        return out

    def facets(self, *, price_bounds: Sequence[int] = (), **filters: Any) -> dict[str, Any]:
        """Each facet counted under every filter but its own dimension's (the child categories under all)."""
        category = filters.get("category")
        heads = sorted(
            c
            for c, (parent, on) in self.categories.items()
            if on and (parent == category if category is not None else parent is None)
        )
        cats = [(h, len(self.rows(**{**filters, "category": h}))) for h in heads]
        unpriced = {**filters, "min_price": None, "max_price": None}
        buckets = [0] * (len(price_bounds) + 1)
        no_price = 0
        for i in self.rows(**unpriced):
            price = self.products[i].price
            if price is None:
                no_price += 1
            else:
                buckets[sum(1 for b in price_bounds if b <= price)] += 1
        unstocked = {**filters, "in_stock": None}
        states = [self.products[i].stock > 0 for i in self.rows(**unstocked)]
        return {
            "categories": cats,
            "prices": buckets,
            "no_price": no_price,
            "in_stock": sum(states),
            "out_of_stock": len(states) - sum(states),
        }


def load_catalog(index: Any, ref: RefCatalog) -> None:
    """Give a CatalogIndex the reference's categories and products (one build() call)."""
    cats = sorted(ref.categories)
    index.set_categories(cats, [ref.categories[c][0] for c in cats], [ref.categories[c][1] for c in cats])
    ids = sorted(ref.products)
    p = ref.products
    index.build(
        ids,
        [p[i].category for i in ids],
        [p[i].price for i in ids],
        [p[i].stock for i in ids],
        [p[i].created_us for i in ids],
        [p[i].name_rank for i in ids],
        [p[i].active for i in ids],
    )


def upsert(index: Any, i: int, p: RefProduct) -> None:
    """index.upsert() of one reference product."""
    index.upsert(i, p.category, p.price, p.stock, p.created_us, p.name_rank, p.active)


def upsert_rows(index: Any, rows: Sequence[tuple[int, RefProduct]]) -> None:
    """index.upsert_many() of (id, reference product) rows, in order."""
    index.upsert_many(
        [i for i, _ in rows],
        [p.category for _, p in rows],
        [p.price for _, p in rows],
        [p.stock for _, p in rows],
        [p.created_us for _, p in rows],
        [p.name_rank for _, p in rows],
        [p.active for _, p in rows],
    )
