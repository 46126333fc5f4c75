"""Compression of real product pages, every candidate codec in one run (``make bench-compress``).

    python -m loadtests.bench_compress [--url URL] [--products 10000] [--pages 5] [--repeat 5]
    python -m loadtests.bench_compress --save DIR    then    --load DIR   (time saved pages, no service)

Takes 100-item product pages from the service (without --url a throw-away one is started on the embedded
PostgreSQL/Redis with the demo seed, and stopped before timing, so it does not compete for the cores), then
times each codec and level on those bytes: best of ``--repeat`` autoranged runs over all the pages (timeit
style). Prints µs per page, MB/s, and the compressed size in % of raw, mean and worst page (the goal: every
page <= 15 %, i.e. shrunk by >= 85 %). Codecs whose package is not installed are listed as missing, not
failed. Figures are printed, never asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import timeit
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadtests.service import LocalService

Compress = Callable[[bytes], bytes]
Decompress = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Codec:
    """One codec at one level: how to compress, how to check the result."""

    name: str
    compress: Compress
    decompress: Decompress


def _deflate(module: object, level: int) -> Compress:
    # A gzip member (wbits 31), as the service sends it; a fresh stream per page, as the service makes one.
    def compress(body: bytes) -> bytes:
        comp = module.compressobj(level, zlib.DEFLATED, 31)  # type: ignore[attr-defined]
        return bytes(comp.compress(body) + comp.flush())

    return compress


def _gunzip(data: bytes) -> bytes:
    return zlib.decompress(data, 47)


def codecs() -> tuple[list[Codec], list[str]]:
    """Every candidate that imports here, and the names of those that do not."""
    found: list[Codec] = [Codec(f"zlib {lvl}", _deflate(zlib, lvl), _gunzip) for lvl in (1, 4, 5, 6, 9)]
    missing: list[str] = []

    def optional(label: str, build: Callable[[], list[Codec]]) -> None:
        try:
            found.extend(build())
        except ImportError:
            missing.append(label)

    def zlib_ng() -> list[Codec]:
        mod = importlib.import_module("zlib_ng.zlib_ng")
        return [Codec(f"zlib-ng {lvl}", _deflate(mod, lvl), _gunzip) for lvl in (1, 2, 3, 4, 5, 6)]

    def isal() -> list[Codec]:
        mod = importlib.import_module("isal.isal_zlib")
        return [Codec(f"isal {lvl}", _deflate(mod, lvl), _gunzip) for lvl in (0, 1, 2, 3)]

    def brotli() -> list[Codec]:
        mod = importlib.import_module("brotli")
        text = mod.MODE_TEXT

        def at(q: int) -> Compress:
            return lambda body: bytes(mod.compress(body, mode=text, quality=q))

        return [Codec(f"brotli {q}", at(q), mod.decompress) for q in (0, 1, 2, 3, 4, 5, 6)]

    def zstandard() -> list[Codec]:
        mod = importlib.import_module("zstandard")
        out = []
        for lvl in (-1, 1, 2, 3, 4, 6):
            # One compressor per level, reused: how a server keeps it (one event-loop thread per process).
            comp = mod.ZstdCompressor(level=lvl)
            out.append(Codec(f"zstandard {lvl}", comp.compress, mod.ZstdDecompressor().decompress))
        return out

    def std_zstd() -> list[Codec]:
        try:
            mod = importlib.import_module("compression.zstd")  # Python 3.14+
        except ImportError:
            mod = importlib.import_module("backports.zstd")

        def at(lvl: int) -> Compress:
            # One compressor per level, reused; FLUSH_FRAME ends a whole frame per page.
            comp, frame = mod.ZstdCompressor(level=lvl), mod.ZstdCompressor.FLUSH_FRAME
            return lambda body: bytes(comp.compress(body, frame))

        return [Codec(f"stdlib zstd {lvl}", at(lvl), mod.decompress) for lvl in (1, 3)]

    optional("zlib-ng (pip install zlib-ng)", zlib_ng)
    optional("isal (pip install isal)", isal)
    optional("brotli (pip install brotli)", brotli)
    optional("zstandard (pip install zstandard)", zstandard)
    optional("compression.zstd / backports.zstd", std_zstd)
    return found, missing


def best(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call: best of ``repeat`` runs of an autoranged loop."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def _get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return bytes(resp.read())


def fetch_pages(base: str, count: int) -> list[bytes]:
    """`count` distinct 100-item product pages: first pages of a few sorts and of a category."""
    first = json.loads(_get(f"{base}/api/consumer/products?page=1&page_size=100"))
    if len(first["items"]) < 100:
        raise SystemExit("bench_compress: the catalog has fewer than 100 products")
    category = next((it["category"]["id"] for it in first["items"] if it.get("category")), None)
    queries = ["sort=name", "sort=-price", "sort=newest", "page=7"]
    if category is not None:
        queries.insert(1, f"category_id={category}")
    pages = []
    for q in queries[:count]:
        body = _get(f"{base}/api/consumer/products?page_size=100&{q}")
        if len(json.loads(body)["items"]) == 100:
            pages.append(body)
    return pages


def measure(pages: list[bytes], repeat: int) -> list[tuple[str, float, float, float]]:
    """(codec, µs per page, mean and worst compressed % of raw) over the pages; checks every round trip."""
    found, missing = codecs()
    for label in missing:
        print(f"missing: {label}", file=sys.stderr)
    rows = []
    for codec in found:
        shares = []
        for body in pages:
            out = codec.compress(body)
            if codec.decompress(out) != body:
                raise SystemExit(f"bench_compress: {codec.name} does not round-trip")
            shares.append(len(out) / len(body) * 100)

        def all_pages(c: Codec = codec) -> None:
            for body in pages:
                c.compress(body)

        micros = best(all_pages, repeat) * 1e6 / len(pages)
        rows.append((codec.name, micros, sum(shares) / len(shares), max(shares)))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Fetch the pages, time the codecs, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running service (default: start a throw-away one)")
    ap.add_argument("--products", type=int, default=10_000, help="catalog size of the started service")
    ap.add_argument("--pages", type=int, default=5, help="how many distinct 100-item pages")
    ap.add_argument("--repeat", type=int, default=5, help="best of this many timing runs")
    ap.add_argument("--save", type=Path, help="also write the pages to this folder (page-N.json)")
    ap.add_argument("--load", type=Path, help="time the pages saved in this folder (no service)")
    args = ap.parse_args(argv)
    if args.load:
        pages = [p.read_bytes() for p in sorted(args.load.glob("page-*.json"))]
    elif args.url:
        pages = fetch_pages(args.url.rstrip("/"), args.pages)
    else:
        with LocalService(products=args.products, processes=1) as svc:
            pages = fetch_pages(svc.url, args.pages)
    if not pages:
        raise SystemExit("bench_compress: no 100-item page found")
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for n, body in enumerate(pages):
            (args.save / f"page-{n}.json").write_bytes(body)
    raw = sum(map(len, pages)) / len(pages)
    print(
        f"{len(pages)} product pages of 100 items, {raw / 1024:.1f} KiB raw on average "
        f"(zlib {zlib.ZLIB_VERSION})"
    )
    print(f"{'codec level':<16} {'µs/page':>8} {'MB/s':>6} {'size % raw':>11} {'worst page':>11}")
    for name, micros, share, worst in measure(pages, args.repeat):
        goal = "" if worst <= 15 else "  (misses the 85 % shrink goal)"
        print(f"{name:<16} {micros:>8.0f} {raw / micros:>6.0f} {share:>10.1f}% {worst:>10.1f}%{goal}")


if __name__ == "__main__":
    main()
