"""Catalog routes: thin adapters from validated inputs to the service."""

from __future__ import annotations

from server.catalog import schemas, service
from server.http import Call, Reply, Route
from server.state import AppState

# Shoppers' apps may show a page for a few seconds; the ETag makes revalidation cheap.
LIST_CACHE_CONTROL = "public, max-age=5, stale-while-revalidate=30"


def routes(state: AppState) -> list[Route]:
    """The consumer catalog endpoints."""

    async def list_products(call: Call) -> Reply:
        return Reply(await service.product_page(state.res, call.params), cache_control=LIST_CACHE_CONTROL)

    async def get_product(call: Call) -> Reply:
        return Reply(
            await service.product_detail(state.res, call.params["id"]), cache_control=LIST_CACHE_CONTROL
        )

    async def list_categories(call: Call) -> Reply:
        return Reply(await service.category_page(state.res, call.params), cache_control=LIST_CACHE_CONTROL)

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
