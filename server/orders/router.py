"""Shoppers' order routes under /api/consumer/orders: signed in, rate-limited by the `orders` policy per
user; every route answers 404 for another user's order (never 403, never its data)."""

from __future__ import annotations

from typing import Any

from server.accounts.router import user_auth
from server.accounts.tokens import UserPrincipal
from server.errors import AppError
from server.http import Call, Reply, Route
from server.orders import schemas
from server.orders.outbox import Outbox
from server.orders.service import Orders
from server.state import AppState

PREFIX = "/api/consumer/orders"
PROBLEM = "application/problem+json"


def _user_id(call: Call) -> int:
    assert isinstance(call.principal, UserPrincipal)  # the routes require an access token
    return call.principal.id


def routes(state: AppState, service: Orders | None = None, outbox: Outbox | None = None) -> list[Route]:
    """The order endpoints; registers the outbox worker's start-up hook and /ready section."""
    settings = state.settings
    orders = service or Orders(settings.CONSUMER_PRICE_LIST, settings.ORDER_IDEMPOTENCY_TTL_S)
    push = outbox or Outbox.from_settings(settings)
    state.on_start.append(push.start)
    state.ready_sections["orders"] = lambda: {**push.report(), "counts": orders.stats.as_dict()}

    async def place(call: Call) -> Reply:
        key = schemas.idempotency_key(call.headers.get("idempotency-key"))
        try:
            answer = await orders.place(state.res.pool, user_id=_user_id(call), key=key, body=call.body)
        except AppError as exc:  # refused: short stock, unknown products, a key in use or reused
            if state.obs is not None:
                state.obs.metrics.orders.refused(exc.code)
            raise
        if state.obs is not None and answer.status == 201 and not answer.replayed:
            state.obs.metrics.orders.placed()
        headers = {"Location": f"{PREFIX}/{answer.order_id}"} if answer.status == 201 else {}
        if answer.replayed:
            headers["Idempotent-Replayed"] = "true"
        else:
            push.wake()
        content_type = "application/json" if answer.status < 400 else PROBLEM
        return Reply(answer.body, status=answer.status, headers=headers, content_type=content_type)

    async def history(call: Call) -> Reply:
        before = schemas.decode_cursor(call.params["cursor"])
        doc = await orders.history(
            state.res.pool, user_id=_user_id(call), before_id=before, page_size=call.params["page_size"]
        )
        return Reply(doc)

    async def detail(call: Call) -> Reply:
        return Reply(await orders.get(state.res.pool, user_id=_user_id(call), order_id=call.params["id"]))

    async def cancel(call: Call) -> Reply:
        return Reply(await orders.cancel(state.res.pool, user_id=_user_id(call), order_id=call.params["id"]))

    common: dict[str, Any] = {"tag": "orders", "group": "orders", "head": False, "auth": user_auth(state)}
    s = schemas
    return [
        Route(
            "POST",
            PREFIX,
            place,
            (s.IDEMPOTENCY_KEY,),
            body=s.PLACE,
            response_schema=s.PLACED_SCHEMA,
            summary=(
                "Place an order exactly once (Idempotency-Key): 201, or the first answer replayed; 409 when "
                "stock is short (nothing ordered) or the key is in use; 422 for unknown products or a key "
                "reused with another body"
            ),
            errors=(400, 409, 422),
            **common,
        ),
        Route(
            "GET",
            PREFIX,
            history,
            (s.CURSOR, s.PAGE_SIZE),
            response_schema=s.HISTORY_SCHEMA,
            summary="The shopper's orders, newest first (keyset pages: pass next_cursor)",
            errors=(422,),
            **common,
        ),
        Route(
            "GET",
            f"{PREFIX}/:id",
            detail,
            (s.ORDER_ID,),
            response_schema=s.ORDER_SCHEMA,
            summary="One of the shopper's orders (404 for any other)",
            errors=(404, 422),
            **common,
        ),
        Route(
            "POST",
            f"{PREFIX}/:id/cancel",
            cancel,
            (s.ORDER_ID,),
            response_schema=s.ORDER_SCHEMA,
            summary="Cancel a pending order and restock it (409 once confirmed or cancelled)",
            errors=(404, 409, 422),
            **common,
        ),
    ]
