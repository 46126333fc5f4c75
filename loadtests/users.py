"""Locust users of the catalog: a browsing shopper, a returning client that revalidates with ETags, a
thundering herd on one product, and a greedy client that deliberately exceeds its rate limit.

Every user is a distinct client to the rate limiter: it sends its own stable `X-Forwarded-For` address
(IPv4 from the benchmarking range 198.18.0.0/15, RFC 2544; IPv6 users from the documentation range
2001:db8::/32, each in its own /48), which a target that trusts the load generator as a proxy
(`TRUSTED_PROXIES`) believes. Without that, every user is the load generator's one address and shares one
quota. See loadtests/README.md.

Requests are named by endpoint (`/api/consumer/products/{id}`, not the id) so statistics group per route.
Every task carries tags (`--tags` / `--exclude-tags`); class weights, think times and the herd's rhythm are
options (`configure`), settable in `locust.conf`, as `LOCUST_*` env vars or on the command line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import re
import time
from collections import Counter
from typing import Any

import gevent
from gevent.pool import Group
from locust import FastHttpUser, tag, task
from locust.env import Environment

from loadtests.addresses import client_address
from loadtests.catalog_data import CATEGORIES, PRODUCTS, CatalogSample, sample_for

log = logging.getLogger("loadtests")

DETAIL = PRODUCTS + "/{id}"
IMAGE = "/product-images/{zoho_item_id}.jpg"
SORTS = ("name", "-name", "price", "-price", "newest")
GZIP = {"Accept-Encoding": "gzip"}

GREEDY = PRODUCTS + " (over quota)"  # its own statistics row: mostly 429s by design
RATELIMIT_DENIED_RE = re.compile(r'"[a-z][a-z0-9_]*";r=0;t=\d+')

# Counts of revalidation outcomes in this process (printed at the end; Locust's stats have no status codes).
revalidation: Counter[str] = Counter()
# Rate-limit observations in this process: headers seen, 429s by kind (printed at the end).
limits: Counter[str] = Counter()

_user_numbers = itertools.count()


class CatalogUser(FastHttpUser):
    """Base: the catalog sample, think time from options, its own client address; not run itself."""

    abstract = True
    think_min = 0.2
    think_max = 1.0
    forwarded_for = True  # send this user's own X-Forwarded-For address (--no-forwarded-for: off)
    ipv6_share = 0.25
    catalog: CatalogSample

    def __init__(self, environment: Environment) -> None:
        runner = environment.runner
        self.address = client_address(
            next(_user_numbers), getattr(runner, "worker_index", 0) if runner else 0, self.ipv6_share
        )
        if self.forwarded_for:
            self.default_headers = {"X-Forwarded-For": self.address}
        super().__init__(environment)

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


def check_denial(resp: Any) -> str | None:
    """What is wrong with a 429 (None: a complete answer): Retry-After, RateLimit fields, problem body."""
    retry = resp.headers.get("Retry-After") or ""
    if not retry.isdigit() or int(retry) < 1:
        return f"429 without a valid Retry-After ({retry!r})"
    if not RATELIMIT_DENIED_RE.fullmatch(resp.headers.get("RateLimit") or ""):
        return f"429 with RateLimit {resp.headers.get('RateLimit')!r}"
    if not resp.headers.get("RateLimit-Policy"):
        return "429 without RateLimit-Policy"
    try:
        code = json.loads(resp.content or b"{}").get("code")
    except ValueError:
        code = None
    if code != "rate_limited":
        return f"429 body code {code!r}, expected 'rate_limited'"
    return None


class GreedyUser(CatalogUser):
    """A client that deliberately exceeds its quota: requests at `greedy_rate` per second (twice the
    catalog's sustained 10/s) through its burst and on; after `greedy_flood` refusals it honours the last
    Retry-After once (whether the next request is allowed is counted) and starts again. Its 429s are
    expected: each is checked (Retry-After, RateLimit, problem body) and counted as a success; any other
    answer but a 200 is a failure. Shoppers never come near their quota: a 429 for them stays a failure.
    Tag `limit`; spawned as `greedy_users` fixed users (0: none)."""

    weight = 0
    fixed_count = 2
    greedy_rate = 20.0
    greedy_flood = 5

    def wait_time(self) -> float:
        """Back to back at the greedy rate."""
        return 1 / self.greedy_rate

    def on_start(self) -> None:
        """No refusal seen yet."""
        super().on_start()
        self.refused = 0  # 429s since Retry-After was last honoured
        self.waited = False  # the last 429's Retry-After was just honoured

    @tag("limit")
    @task
    def over_quota(self) -> None:
        """The cheapest cached page, again and again."""
        params = {"page": 1, "page_size": 20}
        with self.client.get(PRODUCTS, params=params, headers=GZIP, name=GREEDY, catch_response=True) as resp:
            if resp.status_code == 200:
                limits["greedy allowed"] += 1
                if self.waited:
                    limits["greedy allowed after honouring Retry-After"] += 1
                self.waited = False
                resp.success()
                return
            if resp.status_code != 429:
                resp.failure(f"HTTP {resp.status_code}")
                return
            problem = check_denial(resp)
            if problem:
                resp.failure(problem)
                return
            resp.success()
            limits["greedy 429 (expected, checked)"] += 1
            if self.waited:
                limits["greedy refused after honouring Retry-After"] += 1
            self.refused += 1
            self.waited = False
            if self.refused > self.greedy_flood:
                gevent.sleep(int(resp.headers["Retry-After"]))
                self.refused, self.waited = 0, True


ALL_USERS: tuple[type[CatalogUser], ...] = (ShopperUser, ReturningUser, HerdUser, GreedyUser)


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
    group.add_argument(
        "--greedy-users",
        type=int,
        default=GreedyUser.fixed_count,
        help="GreedyUser count: clients deliberately over their rate limit (0: none)",
    )
    group.add_argument("--greedy-rate", type=float, default=GreedyUser.greedy_rate, help="greedy req/s")
    group.add_argument(
        "--forwarded-for",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each user sends its own X-Forwarded-For address (the target must trust us: TRUSTED_PROXIES)",
    )
    group.add_argument(
        "--ipv6-share", type=float, default=CatalogUser.ipv6_share, help="share of users with IPv6 addresses"
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
    if opts.greedy_users < 0 or opts.greedy_rate <= 0 or not 0 <= opts.ipv6_share <= 1:
        raise ValueError("need --greedy-users >= 0, --greedy-rate > 0 and 0 <= --ipv6-share <= 1")
    GreedyUser.fixed_count, GreedyUser.greedy_rate = opts.greedy_users, opts.greedy_rate
    CatalogUser.forwarded_for, CatalogUser.ipv6_share = opts.forwarded_for, opts.ipv6_share
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


def count_limits(response: Any, name: str, **_kw: Any) -> None:
    """Request hook: count responses that carry RateLimit headers, and 429s outside the greedy row."""
    if response is None or not getattr(response, "status_code", 0):
        return  # a connection error: counted by Locust as a failure
    limits["responses"] += 1
    if response.headers.get("RateLimit"):
        limits["with RateLimit headers"] += 1
    if response.status_code == 429 and name != GREEDY:
        limits["429 for a user within its budget (failure)"] += 1


def report_limits() -> None:
    """Log what this process saw of the rate limits."""
    if limits:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(limits.items()))
        log.warning("rate limits: %s", parts)
