"""The fake Zoho's catalog: a deterministic seeded generator and the mutable state tests edit."""

from __future__ import annotations

import io
import random
import threading
import time
import zlib
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

# Zoho's timestamp format, e.g. 2026-11-28T10:00:00+0000.
ZOHO_TIME = "%Y-%m-%dT%H:%M:%S%z"
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
ITEM_ID_BASE = 4_815_000_000_000_000
CATEGORY_ID_BASE = 4_815_100_000_000_000
PRICEBOOK_ID_BASE = 4_815_200_000_000_000

_WORDS = ("Steel", "Cotton", "Smart", "Classic", "Mini", "Pro", "Eco", "Royal", "Fresh", "Ultra")
_NOUNS = ("Kettle", "Lamp", "Chair", "Shirt", "Phone", "Bottle", "Basket", "Watch", "Towel", "Drill")
_WORDS_AR = ("فولاذ", "قطن", "ذكي", "كلاسيكي", "صغير", "احترافي", "بيئي", "ملكي", "طازج", "فائق")
_NOUNS_AR = ("غلاية", "مصباح", "كرسي", "قميص", "هاتف", "زجاجة", "سلة", "ساعة", "منشفة", "مثقاب")
_CATEGORIES = (
    ("Home", "المنزل"),
    ("Kitchen", "المطبخ"),
    ("Clothing", "الملابس"),
    ("Electronics", "الإلكترونيات"),
    ("Tools", "العدد"),
    ("Garden", "الحديقة"),
)


def zoho_time(ts: float) -> str:
    """Epoch seconds -> Zoho's `2026-11-28T10:00:00+0000`."""
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime(ZOHO_TIME)


def parse_zoho_time(text: str) -> float:
    """Zoho time (also `YYYY-MM-DD HH:MM:SS` and ISO with `Z`/`+00:00`) -> epoch seconds."""
    text = text.strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+0000"
    if len(text) == 19:
        text += "+0000"
    if len(text) > 6 and text[-3] == ":" and text[-6] in "+-":
        text = text[:-3] + text[-2:]
    return datetime.strptime(text, ZOHO_TIME).timestamp()


def make_jpeg(seed: int, size: int = 48) -> bytes:
    """A small real JPEG whose colour depends on `seed` (Pillow), or a fixed 1x1 JPEG without it."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is in the demo/test extras
        return _TINY_JPEG
    rnd = random.Random(seed)
    colour = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "JPEG", quality=70)
    return buf.getvalue()


# 1x1 grey baseline JPEG (valid, decodes everywhere).
_TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f"
    "141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b08000100010101"
    "1100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b51000020103030204030505"
    "04040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a"
    "25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a8384858687"
    "88898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2"
    "e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00fbd3ffd9"
)


class Catalog:
    """Items, categories, price books, images and sales orders, guarded by one lock."""

    def __init__(self, items: int = 0, seed: int = 1) -> None:
        self.lock = threading.RLock()
        self.version = 0  # bumped by every change; list orders are cached per version
        self.clock = BASE_TIME + 86_400.0  # "now" of generated data; edits use max(real now, clock + 1)
        self.items: dict[str, dict[str, Any]] = {}
        self.categories: dict[str, dict[str, Any]] = {}
        self.pricebooks: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, float]] = {}  # pricebook_id -> item_id -> rate
        # item_id -> JPEG bytes, or an int seed of a JPEG made on first request (50,000 items start fast)
        self.images: dict[str, bytes | int] = {}
        self.salesorders: list[dict[str, Any]] = []
        self._orders: OrderedDict[tuple[str, str], list[dict[str, Any]]] = OrderedDict()
        self._next_item = 0
        self._next_image = 0
        self._seed_data(items, seed)

    # ---- generation -------------------------------------------------------------------------------
    def _seed_data(self, n: int, seed: int) -> None:
        rnd = random.Random(seed)
        for i, (name, name_ar) in enumerate(_CATEGORIES):
            cid = str(CATEGORY_ID_BASE + i + 1)
            self.categories[cid] = {
                "category_id": cid,
                "name": name,
                "parent_category_id": "-1",
                "description": "",
                "status": "active",
                "custom_fields": [_cf("cf_name_ar", "Name (Arabic)", name_ar)],
            }
        for code, name, currency in (("consumer", "Consumer", "SAR"), ("wholesale", "Wholesale", "SAR")):
            pid = str(PRICEBOOK_ID_BASE + len(self.pricebooks) + 1)
            self.pricebooks[pid] = {
                "pricebook_id": pid,
                "name": name,
                "description": code,
                "currency_code": currency,
                "pricebook_type": "per_item",
                "sales_or_purchase_type": "sales",
                "status": "active",
                "is_default": code == "consumer",
            }
            self.prices[pid] = {}
        cat_ids = list(self.categories)
        book_ids = list(self.pricebooks)
        for i in range(n):
            w, noun = rnd.randrange(10), rnd.randrange(10)
            rate = round(rnd.uniform(1, 500), 2)
            self.add_item(
                name=f"{_WORDS[w]} {_NOUNS[noun]} {i + 1}",
                name_ar=f"{_NOUNS_AR[noun]} {_WORDS_AR[w]} {i + 1}",
                description=f"{_WORDS[w]} {_NOUNS[noun]}, model {i + 1}",
                description_ar=f"{_NOUNS_AR[noun]} {_WORDS_AR[w]}، طراز {i + 1}",
                rate=rate,
                stock=rnd.choice((0, rnd.randrange(1, 500))),
                category_id=cat_ids[rnd.randrange(len(cat_ids))],
                status="active" if rnd.random() < 0.95 else "inactive",
                image=rnd.random() < 0.7,
                modified=BASE_TIME + i,
            )
            item_id = str(ITEM_ID_BASE + i + 1)
            self.prices[book_ids[0]][item_id] = rate
            self.prices[book_ids[1]][item_id] = round(rate * 0.85, 2)
        self.clock = max(self.clock, BASE_TIME + n)

    # ---- edits (tests call these) --------------------------------------------------------------
    def _now(self) -> float:
        """Modification time of an edit: wall clock, but always after every generated time."""
        self.clock = max(time.time(), self.clock + 1)
        return self.clock

    def add_item(
        self,
        *,
        name: str,
        name_ar: str = "",
        description: str = "",
        description_ar: str = "",
        rate: float = 10.0,
        stock: float = 5,
        category_id: str = "",
        status: str = "active",
        unit: str = "pcs",
        sku: str | None = None,
        image: bool | bytes = False,
        modified: float | None = None,
        item_id: str | None = None,
    ) -> dict[str, Any]:
        """Create an item (image=True makes a generated JPEG, bytes sets that image)."""
        with self.lock:
            self._next_item += 1
            iid = item_id or str(ITEM_ID_BASE + self._next_item)
            ts = self._now() if modified is None else modified
            cat = self.categories.get(category_id)
            item: dict[str, Any] = {
                "item_id": iid,
                "name": name,
                "sku": sku if sku is not None else f"SKU-{iid[-8:]}",
                "description": description,
                "rate": rate,
                "status": status,
                "unit": unit,
                "item_type": "inventory",
                "product_type": "goods",
                "available_stock": stock,
                "actual_available_stock": stock,
                "stock_on_hand": stock,
                "category_id": category_id,
                "category_name": cat["name"] if cat else "",
                "image_id": "",
                "image_name": "",
                "image_type": "",
                "created_time": zoho_time(ts),
                "last_modified_time": zoho_time(ts),
                "custom_fields": [
                    _cf("cf_name_ar", "Name (Arabic)", name_ar),
                    _cf("cf_description_ar", "Description (Arabic)", description_ar),
                ],
            }
            self.items[iid] = item
            if image is not False:
                self._set_image(item, int(iid) if image is True else image)
            self.version += 1
            return dict(item)

    def update_item(self, item_id: str, modified: float | None = None, **fields: Any) -> dict[str, Any]:
        """Change fields (name_ar / description_ar go to the custom fields); bumps last_modified_time
        (to `modified`, epoch seconds, when given)."""
        with self.lock:
            item = self.items[item_id]
            for key, value in fields.items():
                if key in ("name_ar", "description_ar"):
                    for cf in item["custom_fields"]:
                        if cf["api_name"] == f"cf_{key}":
                            cf["value"] = value
                elif key == "stock":
                    item.update(available_stock=value, actual_available_stock=value, stock_on_hand=value)
                elif key == "category_id":
                    item["category_id"] = value
                    item["category_name"] = self.categories.get(value, {}).get("name", "")
                else:
                    item[key] = value
            item["last_modified_time"] = zoho_time(self._now() if modified is None else modified)
            self.version += 1
            return dict(item)

    def delete_item(self, item_id: str) -> None:
        """Remove an item (and its image and prices), as deleting it in Zoho does."""
        with self.lock:
            self.items.pop(item_id, None)
            self.images.pop(item_id, None)
            for book in self.prices.values():
                book.pop(item_id, None)
            self.version += 1

    def set_image(self, item_id: str, data: bytes | None) -> None:
        """Replace an item's image (None removes it); a new image id and name, like an upload in Zoho."""
        with self.lock:
            item = self.items[item_id]
            if data is None:
                self.images.pop(item_id, None)
                item.update(image_id="", image_name="", image_type="")
            else:
                self._set_image(item, data)
            item["last_modified_time"] = zoho_time(self._now())
            self.version += 1

    def image(self, item_id: str) -> bytes | None:
        """The JPEG bytes of an item's image, None when it has none."""
        with self.lock:
            data = self.images.get(item_id)
            if isinstance(data, int):
                data = self.images[item_id] = make_jpeg(data)
            return data

    def _set_image(self, item: dict[str, Any], data: bytes | int) -> None:
        self._next_image += 1
        item["image_id"] = str(ITEM_ID_BASE // 2 + self._next_image)
        item["image_name"] = f"{item['sku']}-{self._next_image}.jpg"
        item["image_type"] = "jpg"
        self.images[item["item_id"]] = data

    def set_price(self, pricebook_id: str, item_id: str, rate: float | None) -> None:
        """Set (None: remove) an item's rate in a price book."""
        with self.lock:
            if rate is None:
                self.prices[pricebook_id].pop(item_id, None)
            else:
                self.prices[pricebook_id][item_id] = rate
            self.version += 1

    def add_category(self, name: str, name_ar: str = "", parent_id: str = "-1") -> dict[str, Any]:
        """Create a category."""
        with self.lock:
            cid = str(CATEGORY_ID_BASE + len(self.categories) + 1)
            self.categories[cid] = {
                "category_id": cid,
                "name": name,
                "parent_category_id": parent_id,
                "description": "",
                "status": "active",
                "custom_fields": [_cf("cf_name_ar", "Name (Arabic)", name_ar)],
            }
            self.version += 1
            return dict(self.categories[cid])

    # ---- reads (the HTTP handler calls these) -------------------------------------------------
    def ordered_items(self, sort_column: str, descending: bool) -> list[dict[str, Any]]:
        """Items in list order; cached per catalog version (50,000 items sort once, not per page)."""
        with self.lock:
            key = (f"{self.version}:{sort_column}", "D" if descending else "A")
            hit = self._orders.get(key)
            if hit is None:
                col = sort_column if sort_column in ("name", "sku", "rate", "created_time") else None
                col = col or "last_modified_time"
                hit = sorted(self.items.values(), key=lambda it: (it[col], it["item_id"]), reverse=descending)
                self._orders[key] = hit
                while len(self._orders) > 4:
                    self._orders.popitem(last=False)
            return hit


def _cf(api_name: str, label: str, value: str) -> dict[str, Any]:
    return {
        "customfield_id": str(zlib.crc32(api_name.encode())),
        "api_name": api_name,
        "label": label,
        "data_type": "string",
        "value": value,
    }
