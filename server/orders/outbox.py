"""The push of orders to Zoho Inventory as sales orders, from the outbox written with each order.

Every process runs one worker (started by the start-up hook); they share the work through the database:
a worker takes one due row with FOR UPDATE SKIP LOCKED and holds it while it talks to Zoho, so no two
processes, here or on another instance, push the same order at the same time, and a worker that dies
releases its row with its connection. A sales order carries our order number as `reference_number`, and
before every create the worker looks that number up: a retry after an unknown outcome (a timeout, a crash
between Zoho's answer and our commit) finds the sales order made the first time instead of making another.
Failed attempts wait a jittered exponential backoff (ORDER_OUTBOX_BACKOFF_*), recorded in the row with
the attempt count and the last error. Without Zoho credentials or ZOHO_ORDER_CUSTOMER_ID the worker does
not start and orders stay queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.orders import repo
from server.orders.service import order_number
from server.resources import Resources
from server.settings import Settings
from server.sync.zoho import ZohoClient, ZohoError, missing_credentials

log = logging.getLogger("server.orders.outbox")

PURGE_EVERY_S = 60.0  # expired idempotency keys are purged this often, per process
PURGE_BATCH = 5000


@dataclass(slots=True)
class Backoff:
    """Full-jitter exponential backoff between attempts of one order."""

    base_s: float
    max_s: float

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failure (1-based)."""
        ceiling = min(self.max_s, self.base_s * 2 ** min(attempts - 1, 30))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class OutboxStats:
    """This process's pushes: sent, failed attempts, found in Zoho already (unknown outcomes)."""

    sent: int = 0
    failed: int = 0
    found_existing: int = 0


@dataclass(slots=True)
class Outbox:
    """This process's worker: Zoho client and settings it needs, and a wake-up for new orders."""

    settings: Settings
    missing: list[str] = field(default_factory=list)
    stats: OutboxStats = field(default_factory=OutboxStats)
    _wake: asyncio.Event | None = None
    _res: Resources | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Outbox:
        """The worker the settings describe (off when Zoho is not configured for orders)."""
        missing = missing_credentials(settings)
        if not settings.ZOHO_ORDER_CUSTOMER_ID:
            missing.append("ZOHO_ORDER_CUSTOMER_ID")
        return cls(settings, missing)

    @property
    def enabled(self) -> bool:
        """True when orders are pushed (credentials and the customer are set)."""
        return not self.missing

    def start(self, res: Resources) -> None:
        """Start-up hook: the purge of expired keys always, the push when Zoho is configured."""
        self._res = res
        self._wake = asyncio.Event()
        res.start_task("order-keys-purge", self._purge_loop)
        if self.enabled:
            res.start_task("order-outbox", self._push_loop)
        else:
            log.info("orders are not pushed to Zoho (unset: %s); they stay queued", ", ".join(self.missing))

    def wake(self) -> None:
        """A new order was committed: look for due rows now rather than at the next poll."""
        if self._wake is not None:
            self._wake.set()

    def report(self) -> dict[str, Any]:
        """/ready's `orders` section: whether this process pushes, and what it pushed."""
        return {
            "push": self.enabled,
            **({} if self.enabled else {"missing": self.missing}),
            "sent": self.stats.sent,
            "failed_attempts": self.stats.failed,
            "found_existing": self.stats.found_existing,
        }

    async def _purge_loop(self) -> None:
        res = self._res
        assert res is not None
        while True:
            async with res.pool.acquire() as conn:
                while await repo.purge_keys(conn, PURGE_BATCH) == PURGE_BATCH:
                    pass
            await asyncio.sleep(PURGE_EVERY_S * random.uniform(0.8, 1.2))

    async def _push_loop(self) -> None:
        res, wake = self._res, self._wake
        assert res is not None and wake is not None
        backoff = Backoff(self.settings.ORDER_OUTBOX_BACKOFF_BASE_S, self.settings.ORDER_OUTBOX_BACKOFF_MAX_S)
        client = ZohoClient.from_settings(self.settings, pool=res.pool, redis=res.redis)
        try:
            while True:
                while await self.push_one(res, client, backoff):
                    pass
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.settings.ORDER_OUTBOX_POLL_S)
        finally:
            await client.aclose()

    async def push_one(self, res: Resources, client: ZohoClient, backoff: Backoff) -> bool:
        """Push one due order, if any; False when nothing was due."""
        async with res.pool.acquire() as conn, conn.transaction():
            row = await repo.claim_due(conn)
            if row is None:
                return False
            order_id = row["order_id"]
            try:
                salesorder_id = await self._push(client, row)
            except (ZohoError, OSError, TimeoutError) as exc:
                attempts = row["attempts"] + 1
                delay = backoff.delay(attempts)
                self.stats.failed += 1
                log.warning(
                    "order %s: push to Zoho failed (attempt %d), retry in %.1f s: %s",
                    order_id,
                    attempts,
                    delay,
                    exc,
                )
                await repo.mark_failed(conn, order_id, f"{type(exc).__name__}: {exc}", delay)
                return True
            await repo.mark_sent(conn, order_id, salesorder_id)
        self.stats.sent += 1
        return True

    async def _push(self, client: ZohoClient, row: Any) -> str:
        """The Zoho sales order of the order: found by reference number, else created."""
        number = order_number(row["order_id"])
        found = await client.get("/salesorders", {"reference_number": number})
        for so in found.get("salesorders") or []:
            if so.get("reference_number") == number and so.get("salesorder_id"):
                self.stats.found_existing += 1
                return str(so["salesorder_id"])
        doc = await client.post(
            "/salesorders", salesorder_body(row, number, self.settings.ZOHO_ORDER_CUSTOMER_ID)
        )
        so = doc.get("salesorder") or {}
        if not so.get("salesorder_id"):
            raise ZohoError(0, "Zoho's answer has no salesorder_id")
        return str(so["salesorder_id"])


def salesorder_body(row: Any, number: str, customer_id: str) -> dict[str, Any]:
    """Zoho's `POST /salesorders` document of an outbox row."""
    lines = orjson.loads(row["lines"] or "[]")
    delivery = [row["delivery_name"], row["delivery_phone"], row["delivery_address"], row["delivery_city"]]
    notes = "\n".join(part for part in (row["notes"], ", ".join(d for d in delivery if d)) if part)
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "reference_number": number,
        "date": row["created_at"].date().isoformat(),
        "line_items": [
            {"item_id": line["item_id"], "quantity": line["quantity"], "rate": float(line["rate"])}
            for line in lines
        ],
    }
    if notes:
        body["notes"] = notes[:5000]
    return body
