"""The fake Zoho itself: its formats, generator, filters, enforcement, token endpoint and command line."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_testlib import free_port
from fakes.zoho import FakeZoho
from fakes.zoho_data import parse_zoho_time, zoho_time

ROOT = Path(__file__).resolve().parents[2]


def _token(fake: FakeZoho, **change: str) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "refresh_token": fake.refresh_token,
        **change,
    }
    return httpx.post(fake.accounts_base + "/oauth/v2/token", data=form)


@pytest.fixture
def fake() -> Iterator[FakeZoho]:
    with FakeZoho(items=300, seed=5) as server:
        yield server


@pytest.fixture
def api(fake: FakeZoho) -> Iterator[httpx.Client]:
    """An authorised HTTP client with organization_id on every request."""
    token = _token(fake).json()["access_token"]
    with httpx.Client(
        base_url=fake.api_base,
        headers={"Authorization": f"Zoho-oauthtoken {token}"},
        params={"organization_id": fake.organization_id},
    ) as client:
        yield client


def test_generator_is_deterministic_and_bilingual() -> None:
    one, two = FakeZoho(items=500, seed=9), FakeZoho(items=500, seed=9)
    assert one.catalog.items == two.catalog.items
    assert one.catalog.items != FakeZoho(items=500, seed=10).catalog.items
    items = list(one.catalog.items.values())
    with_images = sum(1 for i in items if i["image_id"])
    assert 0.6 < with_images / len(items) < 0.8
    fields = {cf["api_name"]: cf["value"] for cf in items[0]["custom_fields"]}
    assert fields["cf_name_ar"] and fields["cf_description_ar"]
    assert all(parse_zoho_time(zoho_time(t)) == t for t in (0, 1_795_000_000))
    assert items[0]["last_modified_time"].endswith("+0000") and len(items[0]["last_modified_time"]) == 24


def test_items_list_format_paging_sort_and_filters(fake: FakeZoho, api: httpx.Client) -> None:
    doc = api.get("/items", params={"page": 2, "per_page": 500}).json()
    assert doc["code"] == 0 and doc["message"] == "success"
    assert doc["page_context"]["page"] == 2 and doc["page_context"]["per_page"] == 200
    assert doc["page_context"]["has_more_page"] is False and len(doc["items"]) == 100
    item = doc["items"][0]
    for key in ("item_id", "name", "sku", "rate", "status", "available_stock", "stock_on_hand", "unit"):
        assert key in item
    assert item["cf_name_ar"] == next(
        c["value"] for c in item["custom_fields"] if c["api_name"] == "cf_name_ar"
    )

    def modified(params: dict[str, Any]) -> list[str]:
        rows = api.get("/items", params={"sort_column": "last_modified_time", **params}).json()["items"]
        return [r["last_modified_time"] for r in rows]

    every = sorted(i["last_modified_time"] for i in fake.catalog.items.values())
    assert modified({"per_page": 200}) + modified({"page": 2}) == every
    assert modified({"per_page": 5, "sort_order": "D"}) == every[::-1][:5]
    edited = fake.catalog.update_item(next(iter(fake.catalog.items)), name="Renamed")
    since = {"last_modified_time": edited["last_modified_time"]}
    assert modified(since) == [edited["last_modified_time"]]
    fake.ignore_modified_filter = True  # as Zoho sometimes does: the whole list comes back
    assert len(api.get("/items", params=since).json()["items"]) == 200


def test_state_changes_are_served(fake: FakeZoho, api: httpx.Client) -> None:
    cat = fake.catalog
    new = cat.add_item(
        name="Lamp", name_ar="مصباح", rate=12.5, image=True, category_id=next(iter(cat.categories))
    )
    got = api.get(f"/items/{new['item_id']}").json()["item"]
    assert got["name"] == "Lamp" and got["image_name"] and got["category_name"]
    image = api.get(f"/items/{new['item_id']}/image")
    assert image.headers["content-type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"
    cat.set_image(new["item_id"], None)
    assert api.get(f"/items/{new['item_id']}/image").status_code == 404
    book = next(iter(cat.pricebooks))
    cat.set_price(book, new["item_id"], 9.99)
    lines = api.get(f"/pricebooks/{book}").json()["pricebook"]["pricebook_items"]
    assert {"item_id": new["item_id"], "pricebook_rate": 9.99}.items() <= next(
        line for line in lines if line["item_id"] == new["item_id"]
    ).items()
    assert len(api.get("/pricebooks").json()["pricebooks"]) == 2
    cat.add_category("Toys", "ألعاب")
    assert "Toys" in [c["name"] for c in api.get("/categories").json()["categories"]]
    cat.delete_item(new["item_id"])
    missing = api.get(f"/items/{new['item_id']}")
    assert missing.status_code == 404 and missing.json()["code"] == 1002


def test_sales_orders_keep_reference_numbers(fake: FakeZoho, api: httpx.Client) -> None:
    item_id = next(iter(fake.catalog.items))
    body = {
        "customer_id": "1",
        "reference_number": "WEB-7",
        "line_items": [{"item_id": item_id, "quantity": 2}],
    }
    for _ in range(2):
        assert api.post("/salesorders", json=body).status_code == 201
    assert api.post("/salesorders", json={"line_items": []}).json()["code"] == 4
    found = api.get("/salesorders", params={"reference_number": "WEB-7"}).json()["salesorders"]
    assert [o["salesorder_number"] for o in found] == ["SO-00001", "SO-00002"]


def test_token_endpoint_and_expiry(fake: FakeZoho, api: httpx.Client) -> None:
    assert _token(fake, client_secret="wrong").json() == {"error": "invalid_client"}
    assert _token(fake, refresh_token="wrong").json() == {"error": "invalid_code"}
    assert api.get("/categories").status_code == 200
    fake.expire_tokens()
    denied = api.get("/categories")
    assert denied.status_code == 401 and denied.json()["code"] == 57
    fake.mint_cap = len(fake.mints)
    refused = _token(fake)
    assert refused.status_code == 400 and refused.json()["error"] == "Access Denied"
    fake.mint_cap += 1
    fresh = {"Authorization": "Zoho-oauthtoken " + _token(fake).json()["access_token"]}
    no_org = httpx.get(fake.api_base + "/categories", headers=fresh)
    assert no_org.status_code == 400 and no_org.json()["code"] == 6041
    logged = [r for r in fake.log if r.path == "/oauth/v2/token"]
    assert logged and all(r.query == {} for r in logged)  # no credentials in the log


def test_programmed_failures(fake: FakeZoho, api: httpx.Client) -> None:
    fake.fail_next("429", retry_after=3)
    fake.fail_next("44")
    fake.fail_next("1070")
    fake.fail_next("45")
    first = api.get("/categories")
    assert first.status_code == 429 and first.headers["retry-after"] == "3" and first.json()["code"] == 44
    assert [api.get("/categories").json()["code"] for _ in range(4)] == [44, 1070, 45, 0]
    with pytest.raises(ValueError, match="kind"):
        fake.fail_next("418")


def test_enforces_rate_and_concurrency() -> None:
    with FakeZoho(items=3, rate_per_min=5, rate_window_s=30, max_concurrency=2, latency_s=0.3) as fake:
        token = _token(fake).json()["access_token"]
        headers = {"Authorization": f"Zoho-oauthtoken {token}"}
        url = fake.api_base + "/categories?organization_id=" + fake.organization_id
        codes = [httpx.get(url, headers=headers).json()["code"] for _ in range(7)]
        assert codes == [0, 0, 0, 0, 0, 44, 44]
        fake.rate_per_min = None
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: httpx.get(url, headers=headers), range(4)))
        assert sorted(a.json()["code"] for a in answers).count(1070) >= 1
        assert max(r.concurrency for r in fake.api_log()) >= 3


def test_runs_from_the_command_line() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.zoho", "--items", "50", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"serving http://127.0.0.1:{port}" in first
        env = dict(line.strip().split("=", 1) for line in (proc.stdout.readline() for _ in range(6)))
        deadline = time.monotonic() + 5
        while True:
            try:
                token = httpx.post(
                    env["ZOHO_ACCOUNTS_BASE"] + "/oauth/v2/token",
                    data={
                        "grant_type": "refresh_token",
                        "client_id": env["ZOHO_CLIENT_ID"],
                        "client_secret": env["ZOHO_CLIENT_SECRET"],
                        "refresh_token": env["ZOHO_REFRESH_TOKEN"],
                    },
                ).json()["access_token"]
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        items = httpx.get(
            env["ZOHO_API_BASE"] + "/items",
            params={"organization_id": env["ZOHO_ORGANIZATION_ID"]},
            headers={"Authorization": f"Zoho-oauthtoken {token}"},
        ).json()["items"]
        assert len(items) == 50
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
