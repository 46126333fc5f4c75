"""`OrderingUser` (tags `orders`, `checkout`, `history`, `browse`): signs up (the verification mail, like
SignInUser), signs in, browses in-stock products, opens one, and places orders with an Idempotency-Key,
retrying some on purpose: the same key and body again after the answer (must replay the same order with
`Idempotent-Replayed: true`), and now and then two sends at once (one order; the other answer is that order
or 409 `idempotency_key_in_use`). Reads its history (keyset pages) and an order, and cancels some.

A 409 `insufficient_stock` is a correct answer (the demo stock runs out under load), not a failure; any
answer that breaks the rules above is. Weight 0 unless `--orders-weight N` (or `make load-orders`).
Request names are the route templates; retries have rows of their own.
"""

from __future__ import annotations

import argparse
import random
import uuid
from typing import Any

import gevent
from locust import User, tag, task
from locust.env import Environment

from loadtests.account_users import AUTH, PASSWORD, PRODUCTS, mailed_token, post_auth
from loadtests.users import GZIP, CatalogUser

ORDERS = "/api/consumer/orders"
RETRY_SHARE = 0.25  # orders sent again with the same key after the answer
DOUBLE_SHARE = 0.05  # orders sent twice at once
CANCEL_SHARE = 0.1


class OrderingUser(CatalogUser):
    """A signed-in shopper who orders, retries on purpose, reads its orders and cancels a few."""

    weight = 1  # kept until configure() applies --orders-weight (default 0: dropped)

    def wait_time(self) -> float:
        """Twice the catalog's think time: checkout is slower than browsing, and it keeps a shopper well
        inside the `orders` policy (120/min) for runs of any length."""
        return 2 * super().wait_time()

    def on_start(self) -> None:
        """Sign up through the mailed link and sign in (no MFA)."""
        super().on_start()
        self.email = f"order-{uuid.uuid4().hex[:12]}@example.com"
        self.access = ""
        self.orders: list[int] = []
        post_auth(self.client, "/register", {"email": self.email, "password": PASSWORD}, 202)
        token = mailed_token(self.email)
        self.client.post(f"{AUTH}/verify-email", json={"token": token}, name=f"{AUTH}/verify-email")
        self._sign_in()

    def _sign_in(self) -> None:
        resp = post_auth(self.client, "/login", {"email": self.email, "password": PASSWORD}, 200)
        if resp.status_code == 200:
            self.access = resp.json().get("access_token", "")

    def _auth(self, key: str | None = None) -> dict[str, str]:
        headers = {**GZIP, "Authorization": f"Bearer {self.access}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def _place(self, key: str, body: dict[str, Any], name: str) -> dict[str, Any] | None:
        """POST the order; the answer's JSON when 201, None otherwise (409 stock is not a failure)."""
        with self.client.post(
            ORDERS, json=body, headers=self._auth(key), name=name, catch_response=True
        ) as resp:
            if resp.status_code == 401:  # the 15-minute access token expired: sign in again
                resp.success()
                self._sign_in()
                return None
            if resp.status_code == 409 and resp.json().get("code") in (
                "insufficient_stock",
                "idempotency_key_in_use",
            ):
                resp.success()
                return {"conflict": resp.json()["code"]}
            if resp.status_code != 201:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")
                return None
            doc: dict[str, Any] = resp.json()
            doc["replayed"] = resp.headers.get("Idempotent-Replayed") == "true"
            return doc

    @tag("browse")
    @task(6)
    def browse(self) -> None:
        """In-stock products, then one of them."""
        params = {"in_stock": "true", "page_size": 20, "page": random.choice((1, 1, 2))}
        self.client.get(PRODUCTS, params=params, headers=self._auth(), name=PRODUCTS)
        pid = random.choice(self.catalog.product_ids)
        self.client.get(f"{PRODUCTS}/{pid}", headers=self._auth(), name=f"{PRODUCTS}/{{id}}")

    @tag("orders", "checkout")
    @task(3)
    def order(self) -> None:
        """Place an order; retry it on purpose now and then, checking the replay is the same order."""
        chosen = random.sample(
            self.catalog.product_ids, k=min(len(self.catalog.product_ids), random.randint(1, 3))
        )
        body = {"lines": [{"product_id": p, "quantity": random.randint(1, 2)} for p in chosen]}
        key = str(uuid.uuid4())
        if random.random() < DOUBLE_SHARE:
            both = [gevent.spawn(self._place, key, body, f"{ORDERS} (sent twice at once)") for _ in range(2)]
            gevent.joinall(both)
            ids = {d.get("id") for g in both if (d := g.value) and "id" in d}
            if len(ids) > 1:
                self.environment.events.request.fire(
                    request_type="CHECK",
                    name=f"{ORDERS} (one order per key)",
                    response_time=0,
                    response_length=0,
                    exception=AssertionError(f"two orders for one key: {ids}"),
                )
            self.orders += [i for i in ids if i is not None]
            return
        first = self._place(key, body, ORDERS)
        if not first or "id" not in first:
            return
        self.orders.append(first["id"])
        if random.random() < RETRY_SHARE:
            with self.client.post(
                ORDERS, json=body, headers=self._auth(key), name=f"{ORDERS} (retry)", catch_response=True
            ) as resp:
                same = resp.status_code == 201 and resp.json().get("id") == first["id"]
                if not same or resp.headers.get("Idempotent-Replayed") != "true":
                    resp.failure(f"retry was not a replay: {resp.status_code} {resp.text[:200]}")

    @tag("orders", "history")
    @task(2)
    def history(self) -> None:
        """The first page of the order history, sometimes the next one, and one order."""
        resp = self.client.get(
            ORDERS, params={"page_size": 20}, headers=self._auth(), name=f"{ORDERS} (history)"
        )
        if resp.status_code == 200 and (cursor := resp.json().get("next_cursor")) and random.random() < 0.3:
            self.client.get(
                ORDERS,
                params={"page_size": 20, "cursor": cursor},
                headers=self._auth(),
                name=f"{ORDERS} (history, next page)",
            )
        if self.orders:
            oid = random.choice(self.orders)
            self.client.get(f"{ORDERS}/{oid}", headers=self._auth(), name=f"{ORDERS}/{{id}}")

    @tag("orders")
    @task(1)
    def cancel(self) -> None:
        """Cancel one of this user's orders now and then (409 once confirmed is correct)."""
        if not self.orders or random.random() > CANCEL_SHARE:
            return
        oid = self.orders.pop()
        with self.client.post(
            f"{ORDERS}/{oid}/cancel",
            headers=self._auth(),
            name=f"{ORDERS}/{{id}}/cancel",
            catch_response=True,
        ) as resp:
            if resp.status_code == 409 and resp.json().get("code") == "order_not_cancellable":
                resp.success()


USERS: list[type[User]] = [OrderingUser]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ordering users."""
    parser.add_argument_group("ordering users").add_argument(
        "--orders-weight", type=int, default=0, help="OrderingUser weight (0: none)"
    )


def configure(environment: Environment) -> None:
    """Apply --orders-weight (before users.configure drops the classes of weight 0)."""
    opts = environment.parsed_options
    if opts is not None:
        OrderingUser.weight = opts.orders_weight
