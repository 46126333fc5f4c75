"""Deterministic demo catalog: nested bilingual categories, products, three price lists, stock, JPEGs.

`python -m server seed --products N --seed S` gives the same catalog and the same image files for the same
N and S on every machine. About 70 % of products get an image; a tenth of those are symlinks, the rest hard
links to the same 24 variants. Rows go in by COPY, with the secondary indexes built once after the load.
"""

from __future__ import annotations

import io
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

# (English, Arabic) word pairs for names.
_DEPARTMENTS = [
    ("Beverages", "مشروبات"),
    ("Bakery", "مخبوزات"),
    ("Dairy", "ألبان"),
    ("Snacks", "وجبات خفيفة"),
    ("Household", "أدوات منزلية"),
    ("Personal Care", "عناية شخصية"),
    ("Electronics", "إلكترونيات"),
    ("Stationery", "قرطاسية"),
]
_SUBS = [
    ("Classic", "كلاسيكي"),
    ("Premium", "فاخر"),
    ("Organic", "عضوي"),
    ("Family", "عائلي"),
    ("Value", "اقتصادي"),
]
_ADJECTIVES = [
    ("Fresh", "طازج"),
    ("Golden", "ذهبي"),
    ("Crispy", "مقرمش"),
    ("Smooth", "ناعم"),
    ("Royal", "ملكي"),
    ("Light", "خفيف"),
    ("Rich", "غني"),
    ("Pure", "نقي"),
    ("Sparkling", "فوّار"),
    ("Natural", "طبيعي"),
]
_NOUNS = [
    ("Juice", "عصير"),
    ("Bread", "خبز"),
    ("Milk", "حليب"),
    ("Chips", "رقائق"),
    ("Soap", "صابون"),
    ("Cable", "كابل"),
    ("Notebook", "دفتر"),
    ("Tea", "شاي"),
    ("Coffee", "قهوة"),
    ("Dates", "تمر"),
    ("Honey", "عسل"),
    ("Rice", "أرز"),
    ("Cheese", "جبن"),
    ("Shampoo", "شامبو"),
    ("Charger", "شاحن"),
]
_UNITS = ["pcs", "box", "kg", "pack", "bottle"]
_IMAGE_VARIANTS = 24
_BATCH = 5_000


def _progress(label: str, done: int, total: int, started: float) -> None:
    if not sys.stderr.isatty() and done not in (total,) and done % (_BATCH * 4):
        return
    width = 30
    filled = width * done // max(total, 1)
    elapsed = max(time.monotonic() - started, 1e-6)
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done >= total else "\r"
    sys.stderr.write(
        f"{label:<9} [{bar}] {done:>9,}/{total:,} {done / elapsed:>9,.0f}/s {elapsed:>6.1f} s{end}"
    )
    sys.stderr.flush()


def _jpegs(rng: random.Random) -> list[bytes]:
    try:
        from PIL import Image, ImageDraw
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit("seeding images needs Pillow: pip install 'catalog-api[demo]'") from exc
    out = []
    for i in range(_IMAGE_VARIANTS):
        colour = (rng.randrange(40, 256), rng.randrange(40, 256), rng.randrange(40, 256))
        img = Image.new("RGB", (160, 160), colour)
        draw = ImageDraw.Draw(img)
        draw.ellipse((30, 30, 130, 130), fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]))
        draw.text((10, 10), f"#{i}", fill=(0, 0, 0))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def zoho_item_id(index: int) -> str:
    """Zoho-like numeric item id for the demo product number `index`."""
    return str(4_600_000_000_000 + index * 37)


async def seed(
    conn: asyncpg.Connection, *, products: int, seed_value: int, uploads: Path, if_empty: bool = False
) -> int:
    """Insert the demo catalog; returns the number of products created (0 if skipped)."""
    rng = random.Random(seed_value)
    started = time.monotonic()
    async with conn.transaction():
        # Checked under the lock, so two seeders cannot both find the catalog empty.
        await conn.execute("LOCK TABLE products IN SHARE ROW EXCLUSIVE MODE")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM products)"):
            if if_empty:
                return 0
            raise SystemExit("the database already has products; seed only fills an empty catalog")
        deferred = await _drop_secondary_indexes(conn)
        category_ids = await _seed_categories(conn)
        lists = await conn.fetch(
            "INSERT INTO price_lists (code, name, name_ar, currency, consumer_visible, sort_order) VALUES "
            "('consumer', 'Consumer', 'المستهلك', 'SAR', true, 0),"
            "('retail', 'Retail', 'التجزئة', 'SAR', true, 1),"
            "('wholesale', 'Wholesale', 'الجملة', 'SAR', false, 2) RETURNING id"
        )
        list_ids = [r["id"] for r in lists]
        now = datetime(2026, 1, 1, tzinfo=UTC)
        for start in range(0, products, _BATCH):
            rows, prices = [], []
            for i in range(start, min(start + _BATCH, products)):
                pid = i + 1
                adj, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
                size = rng.choice([250, 500, 750, 1000, 2000])
                stock = 0 if rng.random() < 0.15 else rng.randrange(1, 500)
                rows.append(
                    (
                        pid,
                        zoho_item_id(i),
                        f"SKU-{pid:07d}",
                        f"{adj[0]} {noun[0]} {size}",
                        f"{noun[1]} {adj[1]} {size}",
                        f"{adj[0]} {noun[0].lower()}, {size} units. Item {pid}.",
                        f"{noun[1]} {adj[1]}، {size} وحدة. المنتج رقم {pid}.",
                        rng.choice(category_ids),
                        rng.choice(_UNITS),
                        stock,
                        rng.random() > 0.02,
                        now - timedelta(minutes=rng.randrange(0, 525_600)),
                    )
                )
                consumer = Decimal(rng.randrange(100, 500_000)) / 100
                for list_id, factor in zip(list_ids, ("1", "0.95", "0.80"), strict=True):
                    prices.append((pid, list_id, (consumer * Decimal(factor)).quantize(Decimal("0.01"))))
            await conn.copy_records_to_table(
                "products",
                records=rows,
                columns=[
                    "id",
                    "zoho_item_id",
                    "sku",
                    "name",
                    "name_ar",
                    "description",
                    "description_ar",
                    "category_id",
                    "unit",
                    "stock_on_hand",
                    "is_active",
                    "created_at",
                ],
            )
            await conn.copy_records_to_table(
                "product_prices", records=prices, columns=["product_id", "price_list_id", "price"]
            )
            _progress("products", start + len(rows), products, started)
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('products', 'id'), (SELECT max(id) FROM products))"
        )
        await _create_indexes(conn, deferred)
    await conn.execute("ANALYZE categories, price_lists, products, product_prices")
    _write_images(rng, products, uploads)
    return products


# Indexes of the bulk-loaded tables that back no constraint: maintained row by row they made the COPY about
# twice as slow (100,000 products: 10.9 s against 5.5-6.7 s), so they are built once after the load, from
# their own definitions (the migrations stay the only source of them).
_SECONDARY_INDEXES = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i
WHERE i.indrelid IN ('products'::regclass, 'product_prices'::regclass)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY 1
"""


async def _drop_secondary_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drop (inside the seed's transaction) the indexes _create_indexes rebuilds; returns their DDL."""
    rows = await conn.fetch(_SECONDARY_INDEXES)
    for name, _ in rows:
        await conn.execute(f"DROP INDEX {name}")
    return [ddl for _, ddl in rows]


async def _create_indexes(conn: asyncpg.Connection, ddl: list[str]) -> None:
    # A sorted build needs memory; SET LOCAL ends with the seed's transaction.
    await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    started = time.monotonic()
    for n, statement in enumerate(ddl, 1):
        await conn.execute(statement)
        _progress("indexes", n, len(ddl), started)


async def _seed_categories(conn: asyncpg.Connection) -> list[int]:
    leaf_ids: list[int] = []
    for d, (name, name_ar) in enumerate(_DEPARTMENTS):
        parent = await conn.fetchval(
            "INSERT INTO categories (zoho_category_id, name, name_ar, sort_order) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            f"cat-{d}",
            name,
            name_ar,
            d,
        )
        for s, (sub, sub_ar) in enumerate(_SUBS):
            leaf_ids.append(
                await conn.fetchval(
                    "INSERT INTO categories (zoho_category_id, name, name_ar, parent_id, sort_order) "
                    "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    f"cat-{d}-{s}",
                    f"{sub} {name}",
                    f"{name_ar} {sub_ar}",
                    parent,
                    s,
                )
            )
    return leaf_ids


def _write_images(rng: random.Random, products: int, uploads: Path) -> None:
    uploads.mkdir(parents=True, exist_ok=True)
    library = uploads / "_library"
    library.mkdir(exist_ok=True)
    variants = _jpegs(rng)
    for n, data in enumerate(variants):
        (library / f"variant-{n}.jpg").write_bytes(data)
    started = time.monotonic()
    for i in range(products):
        if rng.random() >= 0.7:
            continue
        target = uploads / f"{zoho_item_id(i)}.jpg"
        n = rng.randrange(_IMAGE_VARIANTS)
        target.unlink(missing_ok=True)
        if rng.random() < 0.1:
            os.symlink(os.path.join("_library", f"variant-{n}.jpg"), target)
        else:
            # A hard link: a regular file with the variant's bytes, without writing them again (writing
            # 630,000 files dominated a 1M seed). Nothing writes uploads in place, only by rename.
            os.link(library / f"variant-{n}.jpg", target)
        if (i + 1) % _BATCH == 0:
            _progress("images", i + 1, products, started)
    _progress("images", products, products, started)
