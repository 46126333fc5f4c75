"""A typed client generated from the served /openapi.json (openapi-python-client) talks to the real server:
named schemas become models, and real answers (pages, a product, problems) parse into them.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from catalog_testlib import ServerProcess

PACKAGE = "catalog_client"


@pytest.fixture(scope="module")
def generated(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The client package generated from the served document, importable for this module's tests."""
    cli = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert cli is not None, "openapi-python-client is part of the test extra"
    folder = tmp_path_factory.mktemp("client")
    (folder / "spec.json").write_bytes(httpx.get(server.base_url + "/openapi.json").content)
    (folder / "config.yml").write_text("post_hooks: []\n")  # no formatter run: faster, nothing from PATH
    result = subprocess.run(
        [
            cli,
            "generate",
            "--path",
            str(folder / "spec.json"),
            "--config",
            str(folder / "config.yml"),
            "--meta",
            "none",
            "--output-path",
            str(folder / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(folder))
    try:
        yield folder / PACKAGE
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(name: str) -> ModuleType:
    """A module of the generated package."""
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture
def client(generated: Path, server: ServerProcess) -> Iterator[Any]:
    """The generated client, pointed at the running server."""
    with module("client").Client(base_url=server.base_url, raise_on_unexpected_status=True) as client:
        yield client


def test_product_page_parses_into_the_generated_models(client: Any, api: httpx.Client) -> None:
    models = module("models")
    raw = api.get("/api/consumer/products", params={"page_size": 3, "sort": "price"}).json()
    sort = models.GetApiConsumerProductsSort.PRICE
    resp = module("api.catalog.get_api_consumer_products").sync_detailed(
        client=client, page_size=3, sort=sort
    )
    assert resp.status_code == 200
    page = resp.parsed
    assert isinstance(page, models.ProductPage)
    assert isinstance(page.items[0], models.ProductItem)
    assert [i.price for i in page.items] == [i["price"] for i in raw["items"]]
    assert (page.page, page.page_size, page.total) == (1, 3, raw["total"])
    first = raw["items"][0]
    assert isinstance(page.items[0].category, models.CategoryRef) or first["category"] is None
    # The nullable reference really admits null (ProductItem.category is `CategoryRef | None`).
    assert models.ProductItem.from_dict({**first, "category": None}).category is None


def test_facets_and_batches_parse_into_the_generated_models(client: Any) -> None:
    models = module("models")
    list_products = module("api.catalog.get_api_consumer_products")
    page = list_products.sync(client=client, page_size=1, facets="category,price,in_stock")
    assert isinstance(page, models.ProductPage) and isinstance(page.facets, models.ProductFacets)
    assert page.facets.category and all(isinstance(c, models.CategoryFacet) for c in page.facets.category)
    assert isinstance(page.facets.price, models.PriceFacet)
    assert all(isinstance(b, models.PriceBucket) for b in page.facets.price.buckets)
    assert page.facets.price.buckets[-1].max_ is None
    assert [s.value for s in page.facets.in_stock] == [True, False]
    assert sum(s.count for s in page.facets.in_stock) == page.total
    batch = list_products.sync(client=client, ids="2,1,no-such-sku")
    assert isinstance(batch, models.ProductPage)
    assert [i.id for i in batch.items] == [2, 1] and batch.missing == ["no-such-sku"]


def test_product_detail_and_problems_parse(client: Any, api: httpx.Client) -> None:
    models = module("models")
    get_product = module("api.catalog.get_api_consumer_products_id")
    product_id = api.get("/api/consumer/products", params={"page_size": 1}).json()["items"][0]["id"]
    detail = get_product.sync(client=client, id=product_id)
    assert isinstance(detail, models.ProductDetail) and detail.id == product_id
    assert isinstance(detail.updated_at, datetime)
    assert all(isinstance(p, models.ProductPrice) for p in detail.prices)
    missing = get_product.sync_detailed(client=client, id=2_000_000_000)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.Problem)
    assert missing.parsed.code == models.ProblemCode.NOT_FOUND
    invalid = module("api.catalog.get_api_consumer_products").sync_detailed(client=client, page_size=0)
    assert invalid.status_code == 422 and isinstance(invalid.parsed, models.Problem)
    assert invalid.parsed.code == models.ProblemCode.VALIDATION_FAILED
    assert [e.field for e in invalid.parsed.errors] == ["query.page_size"]
    assert isinstance(invalid.parsed.errors[0], models.FieldError)


def test_categories_and_readiness_parse(client: Any) -> None:
    models = module("models")
    categories = module("api.catalog.get_api_consumer_categories").sync(client=client, page_size=5)
    assert isinstance(categories, models.CategoryPage) and categories.items
    assert all(isinstance(c, models.Category) for c in categories.items)
    ready = module("api.health.get_ready").sync(client=client)
    assert isinstance(ready, models.Readiness) and ready.status == models.ReadinessStatus.READY
