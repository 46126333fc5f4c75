"""Catalog routes: thin adapters from validated inputs to the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from server.accounts.router import user_auth
from server.cache import Made, Page
from server.catalog import schemas, service
from server.catalog.query import CategoryQuery, ProductId, ProductQuery
from server.http import Call, Reply, Route
from server.state import AppState

# Shoppers' apps may show a page for a few seconds; the ETag makes revalidation cheap.
# The page cache's counters per route (/metrics page_cache_*{route}), by the query type a route builds.
_CACHE_ROUTES = {
    ProductQuery.__name__: "/api/consumer/products",
    ProductId.__name__: "/api/consumer/products/{id}",
    CategoryQuery.__name__: "/api/consumer/categories",
}
LIST_CACHE_CONTROL = "public, max-age=5, stale-while-revalidate=30"


def cached_reply(page: Page) -> Reply:
    """A reply straight from the page cache: bytes, their encodings and ETag made once per fill."""
    return Reply(None, encoded=page, etag=page.etag, cache_control=LIST_CACHE_CONTROL)


def routes(state: AppState) -> list[Route]:
    """The consumer catalog endpoints."""
    max_shared_page = state.settings.CACHE_L2_MAX_PAGE
    # The index's answer memo keeps a list's stamp when the page cache is on (the key of a hit), the whole
    # answer when it is off (every request then makes its page from it).
    keep_answers = not state.settings.CACHE_ENABLED

    async def cached(query: Any, make: Callable[[], Awaitable[Made]], *, stamp: str | None = None) -> Reply:
        # Every catalog read: the page cache in front, `make` on a miss. The key comes from the typed,
        # normalised query the wrapper built (Route.typed), the same object `make` computes from. An answer
        # computed from the index adds its stamp (ids, row versions, counts) and lives under the index's
        # generation, which product writes do not change; any other lives under the catalog version.
        # Only SQL answers go to Redis (L2): one made from the index costs less than the round trips of
        # sharing it (get, lock, put, unlock: a fifth of a worker's time on the shopper mix), and a miss in
        # the row store costs one primary-key query.
        res = state.res
        if stamp is None:
            key, generation = query.cache_key, res.current_generation
            shared = query.page <= max_shared_page
        else:
            key, generation = f"{query.cache_key}|{stamp}", res.index_generation
            shared = False
        route = _CACHE_ROUTES.get(type(query).__name__, "other")
        page = await res.cache.get_or_fill(key, generation, make, shared=shared, route=route)
        if page.status == 404:
            raise service.product_not_found(query.id)  # only details make 404 markers
        return cached_reply(page)

    async def list_products(call: Call) -> Reply:
        res, query = state.res, call.input
        live = await res.fresh_index()
        if live is None:
            return await cached(query, lambda: service.product_page(res, query))
        if query.batch:
            # Ids alone: their row versions say everything the batch shows (an unknown id has none yet).
            ids = service.batch_ids(query)
            if ids is None:
                return await cached(query, lambda: service.product_batch(res, query))
            return await cached(query, lambda: service.product_batch(res, query), stamp=live.stamp(ids))

        def answer() -> service.IndexAnswer:
            # A search takes its hits from the memo or the in-memory search texts (service.search_hits); the
            # index does the rest, so its answer is keyed by its stamp like any other list.
            hits = None if query.q is None else service.search_hits(live, query.q)
            return service.index_answer(live, query, res.settings.FACET_PRICE_BUCKETS, hits)

        got = live.remembered(query.cache_key)
        if got is None:
            found = answer()
            live.remember(query.cache_key, found if keep_answers else found.stamp)
        elif isinstance(got, service.IndexAnswer):
            found = got
        else:
            # Only the stamp is remembered (a cached hit needs no more): a page that must be made computes
            # the answer again, with no await between here and there, so at the version the stamp was
            # remembered at (the index changes only with its version), with this very stamp.
            return await cached(query, lambda: service.indexed_page(res, query, answer()), stamp=got)
        return await cached(query, lambda: service.indexed_page(res, query, found), stamp=found.stamp)

    async def get_product(call: Call) -> Reply:
        res, query = state.res, call.input
        live = await res.fresh_index()
        if live is None:
            return await cached(query, lambda: service.product_detail(res, query))
        stamp = live.remembered(query.cache_key)
        if stamp is None:
            # "" marks a product the index does not list: exact at the index's version, a 404 with no query.
            stamp = live.stamp((query.id,)) if live.is_listed(query.id) else ""
            live.remember(query.cache_key, stamp)
        if not stamp:
            raise service.product_not_found(query.id)
        return await cached(query, lambda: service.product_detail(res, query, live), stamp=stamp)

    async def list_categories(call: Call) -> Reply:
        res, query = state.res, call.input
        live = await res.fresh_index()
        if live is None:
            return await cached(query, lambda: service.category_page(res, query))
        got = live.remembered(query.cache_key)
        if got is None:
            got = service.index_categories(live, query)
            live.remember(query.cache_key, got)
        found = got
        return await cached(query, lambda: service.indexed_categories(res, query, found), stamp=found.key)

    # Anyone may browse; a shopper's access token, when sent, makes the rate limit theirs (`user:<id>`).
    shopper = user_auth(state, "optional")
    return [
        Route(
            "GET",
            "/api/consumer/products",
            list_products,
            schemas.PRODUCT_LIST_PARAMS,
            typed=ProductQuery.from_params,
            summary="List active products (filters, sort, pagination, facets), or a batch by ids or SKUs",
            auth=shopper,
            response_schema=schemas.PRODUCT_PAGE_SCHEMA,
        ),
        Route(
            "GET",
            "/api/consumer/products/:id",
            get_product,
            (schemas.PRODUCT_ID,),
            typed=ProductId.from_params,
            summary="One product with every consumer-visible price",
            auth=shopper,
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
            auth=shopper,
            response_schema=schemas.page_schema(schemas.CATEGORY_ITEM_SCHEMA),
        ),
    ]
