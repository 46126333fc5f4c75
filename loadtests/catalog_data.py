"""What the scenarios pick from: ids, image ids, categories and search words, read from the running service.

Nothing is hard-coded: a sample is fetched once per Locust process (master and every worker) before the
first user runs, with plain urllib so the fetch never shows up in the statistics.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

PRODUCTS = "/api/consumer/products"
CATEGORIES = "/api/consumer/categories"
SAMPLE_PAGES = 6  # pages of 200 products read at start: enough spread for ids, cheap to fetch


class CatalogUnavailable(RuntimeError):
    """The service did not return a usable catalog sample (down, empty, or not the catalog API)."""


@dataclass(frozen=True)
class CatalogSample:
    """Ids and words the users choose from; `hot_product_id` is the target of the thundering herd."""

    product_ids: tuple[int, ...]
    image_ids: tuple[str, ...]
    category_ids: tuple[int, ...]
    search_words: tuple[str, ...]
    max_price: float
    total: int

    @property
    def hot_product_id(self) -> int:
        """The first product of the default listing: what a promoted product looks like."""
        return self.product_ids[0]

    def pages(self, page_size: int) -> int:
        """Number of pages of the unfiltered listing at `page_size`."""
        return max(1, -(-self.total // page_size))


def _get(base_url: str, path: str, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(base_url.rstrip("/") + path, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def fetch_sample(base_url: str, seed: int = 1) -> CatalogSample:
    """Read categories and a spread of product pages from the service at `base_url`."""
    rnd = random.Random(seed)
    categories: list[int] = []
    page = 1
    while True:
        doc = _get(base_url, f"{CATEGORIES}?page={page}&page_size=200")
        categories += [c["id"] for c in doc["items"] if c.get("product_count", 1) > 0]
        if page >= doc["pages"]:
            break
        page += 1
    first = _get(base_url, f"{PRODUCTS}?page=1&page_size=200")
    pages = max(1, int(first["pages"]))
    if not first["items"]:
        raise CatalogUnavailable(f"{base_url}{PRODUCTS} returned no products: seed the catalog first")
    items = list(first["items"])
    for n in rnd.sample(range(2, pages + 1), min(SAMPLE_PAGES - 1, pages - 1)):
        items += _get(base_url, f"{PRODUCTS}?page={n}&page_size=200")["items"]
    words = sorted({w.lower() for it in items for w in it["name"].split() if w.isalpha() and len(w) >= 4})
    return CatalogSample(
        product_ids=tuple(it["id"] for it in items),
        image_ids=tuple(it["zoho_item_id"] for it in items if it["has_image"]),
        category_ids=tuple(categories),
        search_words=tuple(words) or ("milk",),  # q needs 3 letters in a row
        max_price=max(float(it["price"]) for it in items if it["price"] is not None),
        total=int(first["total"]),
    )


_lock = threading.Lock()  # gevent patches threading: this is a greenlet lock under Locust
_cache: dict[str, CatalogSample] = {}


def sample_for(base_url: str) -> CatalogSample:
    """The sample for `base_url`, fetched once per process (concurrent callers wait for the first)."""
    with _lock:
        if base_url not in _cache:
            try:
                _cache[base_url] = fetch_sample(base_url)
            except (OSError, ValueError, KeyError) as exc:
                raise CatalogUnavailable(f"cannot read the catalog from {base_url}: {exc}") from exc
        return _cache[base_url]
