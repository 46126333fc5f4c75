"""Locust users of the catalog: a browsing shopper, a returning client that revalidates with ETags, and a
thundering herd on one product.

Requests are named by endpoint (`/api/consumer/products/{id}`, not the id) so statistics group per route.
Every task carries tags (`--tags` / `--exclude-tags`); class weights, think times and the herd's rhythm are
options (`configure`), settable in `locust.conf`, as `LOCUST_*` env vars or on the command line.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections import Counter
from typing import Any

import gevent
from gevent.pool import Group
from locust import FastHttpUser, tag, task
from locust.env import Environment

from loadtests.catalog_data import CATEGORIES, PRODUCTS, CatalogSample, sample_for

log = logging.getLogger("loadtests")

DETAIL = PRODUCTS + "/{id}"
IMAGE = "/product-images/{zoho_item_id}.jpg"
SORTS = ("name", "-name", "price", "-price", "newest")
GZIP = {"Accept-Encoding": "gzip"}

# Counts of revalidation outcomes in this process (printed at the end; Locust's stats have no status codes).
revalidation: Counter[str] = Counter()


class CatalogUser(FastHttpUser):
    """Base: the catalog sample, think time from options; not run itself."""

    abstract = True
    think_min = 0.2
    think_max = 1.0
    catalog: CatalogSample

    def wait_time(self) -> float:
        """Think time between two actions, uniform in [think_min, think_max] seconds."""
        return random.uniform(self.think_min, self.think_max)

    def on_start(self) -> None:
        """Take the process's catalog sample (fetched once, by the first user)."""
        self.catalog = sample_for(self.host or "")


class ShopperUser(CatalogUser):
    """Browses like people do: first pages heavy, deep pages rare, filters, sorts, searches, details."""

    weight = 8

    def _list(self, **params: Any) -> None:
        self.client.get(PRODUCTS, params=params, headers=GZIP, name=PRODUCTS)

    @tag("browse")
    @task(12)
    def first_pages(self) -> None:
        """Page 1 most of the time, 2 or 3 sometimes, at the page sizes apps use."""
        page = random.choices((1, 2, 3), weights=(70, 20, 10))[0]
        self._list(page=page, page_size=random.choice((20, 50, 50, 100)))

    @tag("browse", "deep")
    @task(1)
    def deep_page(self) -> None:
        """A page far down the listing (someone scrolling, or a crawler)."""
        pages = self.catalog.pages(50)
        self._list(page=random.randint(max(1, pages // 2), pages), page_size=50)

    @tag("browse", "filter")
    @task(6)
    def category_page(self) -> None:
        """A category's first pages."""
        self._list(category_id=random.choice(self.catalog.category_ids), page=random.choice((1, 1, 1, 2)))

    @tag("filter")
    @task(3)
    def price_filter(self) -> None:
        """A price band, in stock only, sometimes within a category."""
        low = round(random.uniform(0, self.catalog.max_price / 2), 2)
        params: dict[str, Any] = {
            "min_price": f"{low:.2f}",
            "max_price": f"{low * 2 + 10:.2f}",
            "in_stock": "true",
        }
        if random.random() < 0.5:
            params["category_id"] = random.choice(self.catalog.category_ids)
        self._list(**params)

    @tag("sort")
    @task(4)
    def sorted_page(self) -> None:
        """A sorted listing, first or second page."""
        self._list(sort=random.choice(SORTS), page=random.choice((1, 1, 2)))

    @tag("search")
    @task(4)
    def search(self) -> None:
        """A substring search on a word (or the start of one) seen in product names."""
        word = random.choice(self.catalog.search_words)
        self._list(q=word[: random.randint(3, len(word))])

    @tag("categories")
    @task(3)
    def categories(self) -> None:
        """The category list (the app's menu)."""
        self.client.get(CATEGORIES, params={"page": 1, "page_size": 50}, headers=GZIP, name=CATEGORIES)

    @tag("detail")
    @task(8)
    def product_detail(self) -> None:
        """One product's page."""
        pid = random.choice(self.catalog.product_ids)
        self.client.get(f"{PRODUCTS}/{pid}", headers=GZIP, name=DETAIL)

    @tag("images")
    @task(5)
    def image(self) -> None:
        """One product image (apps load a few per page; browsers cache the rest)."""
        if self.catalog.image_ids:
            zid = random.choice(self.catalog.image_ids)
            self.client.get(f"/product-images/{zid}.jpg", name=IMAGE)


class ReturningUser(CatalogUser):
    """Comes back to the same few pages and sends `If-None-Match`: expects 304s once it has the ETags."""

    weight = 3

    def on_start(self) -> None:
        """Pick this client's favourite pages: listing, a category, the menu, products, images."""
        super().on_start()
        c = self.catalog
        self.etags: dict[str, str] = {}
        self.favourites: list[tuple[str, str]] = [
            (f"{PRODUCTS}?page=1&page_size=50", PRODUCTS),
            (f"{PRODUCTS}?category_id={random.choice(c.category_ids)}", PRODUCTS),
            (f"{CATEGORIES}?page=1&page_size=50", CATEGORIES),
            *[
                (f"{PRODUCTS}/{pid}", DETAIL)
                for pid in random.sample(c.product_ids, min(3, len(c.product_ids)))
            ],
            *[
                (f"/product-images/{z}.jpg", IMAGE)
                for z in random.sample(c.image_ids, min(2, len(c.image_ids)))
            ],
        ]

    @tag("revalidate")
    @task
    def revisit(self) -> None:
        """GET a favourite with its ETag; 304 or a fresh 200 (new ETag) are both right."""
        url, name = random.choice(self.favourites)
        headers = dict(GZIP)
        if url in self.etags:
            headers["If-None-Match"] = self.etags[url]
        with self.client.get(url, headers=headers, name=name, catch_response=True) as resp:
            if resp.status_code == 304:
                revalidation["304"] += 1
                resp.success()
            elif resp.status_code == 200:
                revalidation["200 changed" if url in self.etags else "200 first"] += 1
                etag = resp.headers.get("ETag")
                if etag:
                    self.etags[url] = etag
                else:
                    resp.failure("200 without ETag")
            else:
                resp.failure(f"HTTP {resp.status_code}")


class HerdUser(CatalogUser):
    """Thundering herd: every herd user, in every process, fires a burst at the same product on the same
    wall-clock tick (e.g. a product pushed in a notification)."""

    weight = 1
    herd_interval = 2.0
    herd_burst = 5
    concurrency = 5

    def wait_time(self) -> float:
        """Until the next tick, so all herd users (and all workers) fire together."""
        return self.herd_interval - (time.time() % self.herd_interval)

    def on_start(self) -> None:
        """Join the herd on the next tick."""
        super().on_start()
        gevent.sleep(self.wait_time())

    @tag("herd")
    @task
    def stampede(self) -> None:
        """`herd_burst` concurrent GETs of the hot product."""
        url = f"{PRODUCTS}/{self.catalog.hot_product_id}"
        group = Group()
        for _ in range(self.herd_burst):
            group.spawn(self.client.get, url, headers=GZIP, name=DETAIL)
        group.join()


ALL_USERS: tuple[type[CatalogUser], ...] = (ShopperUser, ReturningUser, HerdUser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of these users (also read from locust.conf and LOCUST_* env vars)."""
    group = parser.add_argument_group("catalog users")
    group.add_argument("--shopper-weight", type=int, default=ShopperUser.weight, help="ShopperUser weight")
    group.add_argument(
        "--returning-weight", type=int, default=ReturningUser.weight, help="ReturningUser weight"
    )
    group.add_argument(
        "--herd-weight", type=int, default=HerdUser.weight, help="HerdUser weight (0: no herd)"
    )
    group.add_argument("--think-min", type=float, default=CatalogUser.think_min, help="think time min, s")
    group.add_argument("--think-max", type=float, default=CatalogUser.think_max, help="think time max, s")
    group.add_argument("--herd-interval", type=float, default=HerdUser.herd_interval, help="s between bursts")
    group.add_argument(
        "--herd-burst", type=int, default=HerdUser.herd_burst, help="requests per user per burst"
    )


def configure(environment: Environment) -> None:
    """Apply the options to the user classes; drop classes with weight 0 or no task left after --tags."""
    opts = environment.parsed_options
    if opts is None:  # used as a library without options: class defaults
        return
    if opts.think_min < 0 or opts.think_max < opts.think_min:
        raise ValueError("think times: need 0 <= --think-min <= --think-max")
    CatalogUser.think_min, CatalogUser.think_max = opts.think_min, opts.think_max
    ShopperUser.weight, ReturningUser.weight = opts.shopper_weight, opts.returning_weight
    HerdUser.weight = opts.herd_weight
    HerdUser.herd_interval = max(0.1, opts.herd_interval)
    HerdUser.herd_burst = HerdUser.concurrency = max(1, opts.herd_burst)
    kept = [u for u in environment.user_classes if (u.weight > 0 or u.fixed_count > 0) and u.tasks]
    if not kept:
        raise ValueError("no user class left: every weight is 0 or --tags filtered out every task")
    environment.user_classes[:] = kept


def report_revalidation() -> None:
    """Log how the returning users' conditional GETs were answered (this process)."""
    if revalidation:
        total = sum(revalidation.values())
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(revalidation.items()))
        log.warning("revalidation: %s (304 share %.0f %%)", parts, 100 * revalidation["304"] / total)
