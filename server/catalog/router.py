"""Catalog routes: thin adapters from validated inputs to the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from server.cache import Made, Page
from server.catalog import schemas, service
from server.catalog.query import CategoryQuery, ProductId, ProductQuery
from server.http import Call, Handler, Reply, Route
from server.resources import Resources
from server.state import AppState

# Shoppers' apps may show a page for a few seconds; the ETag makes revalidation cheap.
LIST_CACHE_CONTROL = "public, max-age=5, stale-while-revalidate=30"


def cached_reply(page: Page) -> Reply:
    """A reply straight from the page cache: bytes, their encodings and ETag made once per fill."""
    return Reply(page.body, encoded=page, etag=page.etag, cache_control=LIST_CACHE_CONTROL)


def routes(state: AppState) -> list[Route]:
    """The consumer catalog endpoints."""
    max_shared_page = state.settings.CACHE_L2_MAX_PAGE

    def cached(make: Callable[[Resources, Any], Awaitable[Made]]) -> Handler:
        # Every catalog read: the page cache in front, `make` on a miss. The key comes from the typed,
        # normalised query the wrapper built (Route.typed), the same object `make` computes from.
        async def handler(call: Call) -> Reply:
            res, query = state.res, call.input
            page = await res.cache.get_or_fill(
                query.cache_key,
                res.current_generation,
                lambda: make(res, query),
                shared=query.page <= max_shared_page,
            )
            if page.status == 404:
                raise service.product_not_found(query.id)  # only details make 404 markers
            return cached_reply(page)

        return handler

    list_products = cached(service.product_page)
    get_product = cached(service.product_detail)
    list_categories = cached(service.category_page)

    return [
        Route(
            "GET",
            "/api/consumer/products",
            list_products,
            schemas.PRODUCT_LIST_PARAMS,
            typed=ProductQuery.from_params,
            summary="List active products (filters, sort, pagination, facets), or a batch by ids or SKUs",
            response_schema=schemas.PRODUCT_PAGE_SCHEMA,
        ),
        Route(
            "GET",
            "/api/consumer/products/:id",
            get_product,
            (schemas.PRODUCT_ID,),
            typed=ProductId.from_params,
            summary="One product with every consumer-visible price",
            errors=(404, 422),
            response_schema=schemas.PRODUCT_DETAIL_SCHEMA,
        ),
        Route(
            "GET",
            "/api/consumer/categories",
            list_categories,
            schemas.CATEGORY_LIST_PARAMS,
            typed=CategoryQuery.from_params,
            summary="Active categories with product counts",
            response_schema=schemas.page_schema(schemas.CATEGORY_ITEM_SCHEMA),
        ),
    ]
