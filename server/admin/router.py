"""Admin routes: product fields, prices, stock and images, behind API keys with scopes (`bearerAuth`).

Every route declares `Auth(keys, scopes=...)`: the wrapper authenticates the key, rate-limits under the
`admin` policy keyed by the key's id, and checks the scope before the handler runs. Other admin routes
(the sync's) declare theirs the same way: `admin_auth(state, "sync:run")`.
"""

from __future__ import annotations

from typing import Any

import orjson

from server.admin import schemas, service
from server.admin.keys import ApiKeys
from server.auth import Auth
from server.http import Call, Reply, Route
from server.state import AppState

CATALOG_WRITE = "catalog:write"


def admin_auth(state: AppState, *scopes: str) -> Auth:
    """The Auth of an admin route needing `scopes` (API keys checked against this process's pool)."""
    return Auth(ApiKeys(lambda: state.res.pool), "required", scopes)


def _reply(doc: dict[str, Any]) -> Reply:
    return Reply(orjson.dumps(doc, default=str))


def _actor(call: Call) -> service.Actor:
    assert call.principal is not None  # the route requires a key
    return service.Actor(call.principal.id, call.request_id)


def routes(state: AppState) -> list[Route]:
    """The admin endpoints."""
    settings = state.settings
    auth = admin_auth(state, CATALOG_WRITE)
    limits = service.ImageLimits(settings.UPLOADS_DIR, settings.IMAGE_MAX_BYTES, settings.IMAGE_MAX_PIXELS)

    async def patch_product(call: Call) -> Reply:
        async with state.res.pool.acquire() as conn:
            doc = await service.patch_product(
                conn, product_id=call.params["id"], changes=call.body, actor=_actor(call)
            )
        return _reply(doc)

    async def put_price(call: Call) -> Reply:
        async with state.res.pool.acquire() as conn:
            doc = await service.put_price(
                conn,
                product_id=call.params["id"],
                code=call.params["price_list"],
                price=call.body["price"],
                actor=_actor(call),
            )
        return _reply(doc)

    async def patch_stock(call: Call) -> Reply:
        async with state.res.pool.acquire() as conn:
            doc = await service.patch_stock(
                conn,
                product_id=call.params["id"],
                stock=call.body.get("stock_on_hand"),
                delta=call.body.get("delta"),
                actor=_actor(call),
            )
        return _reply(doc)

    async def put_image(call: Call) -> Reply:
        async with state.res.pool.acquire() as conn:
            doc = await service.put_image(
                conn, product_id=call.params["id"], data=call.body, limits=limits, actor=_actor(call)
            )
        return _reply(doc)

    async def delete_image(call: Call) -> Reply:
        async with state.res.pool.acquire() as conn:
            doc = await service.delete_image(
                conn, product_id=call.params["id"], folder=limits.folder, actor=_actor(call)
            )
        return _reply(doc)

    common: dict[str, Any] = {"tag": "admin", "group": "admin", "auth": auth, "head": False}
    product = (schemas.PRODUCT_ID,)
    return [
        Route(
            "PATCH",
            "/api/admin/products/:id",
            patch_product,
            product,
            body=schemas.PRODUCT_PATCH,
            summary="Change a product's names, descriptions, category or active flag",
            errors=(404, 422),
            response_schema=schemas.ADMIN_PRODUCT_SCHEMA,
            **common,
        ),
        Route(
            "PUT",
            "/api/admin/products/:id/prices/:price_list",
            put_price,
            (schemas.PRODUCT_ID, schemas.PRICE_LIST),
            body=schemas.PRICE_PUT,
            summary="Set a product's price in a price list (404 for an unknown list)",
            errors=(404, 422),
            response_schema=schemas.ADMIN_PRICE_SCHEMA,
            **common,
        ),
        Route(
            "PATCH",
            "/api/admin/products/:id/stock",
            patch_stock,
            product,
            body=schemas.STOCK_PATCH,
            summary="Set a product's stock, or add a delta to it atomically",
            errors=(404, 422),
            response_schema=schemas.ADMIN_PRODUCT_SCHEMA,
            **common,
        ),
        Route(
            "PUT",
            "/api/admin/products/:id/image",
            put_image,
            product,
            body=schemas.image_body(settings.IMAGE_MAX_BYTES),
            summary="Upload a product's image (raw JPEG, PNG or WebP; stored as a clean JPEG)",
            errors=(404, 413, 415, 422),
            response_schema=schemas.ADMIN_IMAGE_SCHEMA,
            **common,
        ),
        Route(
            "DELETE",
            "/api/admin/products/:id/image",
            delete_image,
            product,
            summary="Remove a product's image",
            errors=(404, 422),
            response_schema=schemas.ADMIN_IMAGE_SCHEMA,
            **common,
        ),
    ]
