"""Catalog routes: thin adapters from validated inputs to the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from server.cache import Page
from server.catalog import schemas, service
from server.http import Call, Handler, Reply, Route
from server.resources import Resources
from server.state import AppState

# Shoppers' apps may show a page for a few seconds; the ETag makes revalidation cheap.
LIST_CACHE_CONTROL = "public, max-age=5, stale-while-revalidate=30"


def cache_key(route: str, params: dict[str, Any]) -> str:
    """Route plus the validated inputs (defaults filled in, declaration order): one key per answer."""
    return route + "?" + "&".join(f"{k}={v}" for k, v in params.items() if v is not None)


def cached_reply(page: Page) -> Reply:
    """A reply straight from the page cache: bytes, gzip bytes and ETag made once per fill."""
    return Reply(page.body, gzip_body=page.gzip, etag=page.etag, cache_control=LIST_CACHE_CONTROL)


def routes(state: AppState) -> list[Route]:
    """The consumer catalog endpoints."""

    def cached(name: str, make: Callable[[Resources, dict[str, Any]], Awaitable[bytes]]) -> Handler:
        # Every catalog read: the page cache in front, `make` on a miss.
        async def handler(call: Call) -> Reply:
            res = state.res
            page = await res.cache.get_or_fill(
                cache_key(name, call.params), res.current_generation, lambda: make(res, call.params)
            )
            return cached_reply(page)

        return handler

    list_products = cached("products", service.product_page)
    get_product = cached("product", lambda res, params: service.product_detail(res, params["id"]))
    list_categories = cached("categories", service.category_page)

    return [
        Route(
            "GET",
            "/api/consumer/products",
            list_products,
            schemas.PRODUCT_LIST_PARAMS,
            summary="List active products (filters, sort, pagination)",
            response_schema=schemas.page_schema(schemas.PRODUCT_ITEM_SCHEMA),
        ),
        Route(
            "GET",
            "/api/consumer/products/:id",
            get_product,
            (schemas.PRODUCT_ID,),
            summary="One product with every consumer-visible price",
            errors=(404, 422),
            response_schema=schemas.PRODUCT_DETAIL_SCHEMA,
        ),
        Route(
            "GET",
            "/api/consumer/categories",
            list_categories,
            schemas.CATEGORY_LIST_PARAMS,
            summary="Active categories with product counts",
            response_schema=schemas.page_schema(schemas.CATEGORY_ITEM_SCHEMA),
        ),
    ]
