"""The Zoho client against the fake Zoho over HTTP, with real PostgreSQL and Redis: tokens, limits, paging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from catalog_testlib import Database, Services, free_port, run
from fakes.zoho import FakeZoho
from zoho_testlib import client, own_account, shared, statuses, zoho_settings

from server.settings import SettingsError, load_settings
from server.sync.zoho import (
    ZohoAuthError,
    ZohoClient,
    ZohoError,
    ZohoPaused,
    missing_credentials,
    zoho_urls,
)


@pytest.fixture
def fake() -> Iterator[FakeZoho]:
    """A fake Zoho with 30 items and an organisation of its own."""
    with FakeZoho(items=30, **own_account()) as server:
        yield server


def test_data_centre_urls() -> None:
    assert zoho_urls("com") == ("https://www.zohoapis.com/inventory/v1", "https://accounts.zoho.com")
    assert zoho_urls("eu") == ("https://www.zohoapis.eu/inventory/v1", "https://accounts.zoho.eu")
    assert zoho_urls("com.au") == ("https://www.zohoapis.com.au/inventory/v1", "https://accounts.zoho.com.au")
    assert zoho_urls("ca") == ("https://www.zohoapis.ca/inventory/v1", "https://accounts.zohocloud.ca")
    assert zoho_urls("sa")[1] == "https://accounts.zoho.sa"
    creds = {"ZOHO_CLIENT_ID": "c", "ZOHO_CLIENT_SECRET": "s", "ZOHO_REFRESH_TOKEN": "r"}
    settings = load_settings(**creds, ZOHO_ORGANIZATION_ID="1", ZOHO_DATA_CENTRE="in")
    assert ZohoClient.from_settings(settings).api_base == "https://www.zohoapis.in/inventory/v1"
    settings = load_settings(**creds, ZOHO_ORGANIZATION_ID="1", ZOHO_API_BASE="http://proxy:81/inv/")
    assert ZohoClient.from_settings(settings).api_base == "http://proxy:81/inv"
    with pytest.raises(SettingsError, match="ZOHO_ACCOUNTS_BASE"):
        load_settings(ZOHO_ACCOUNTS_BASE="accounts.zoho.com")
    with pytest.raises(SettingsError, match="ZOHO_RATE_PER_MIN"):
        load_settings(ZOHO_RATE_PER_MIN=0)
    assert missing_credentials(settings) == []
    assert missing_credentials(load_settings()) == [
        "ZOHO_CLIENT_ID",
        "ZOHO_CLIENT_SECRET",
        "ZOHO_REFRESH_TOKEN",
        "ZOHO_ORGANIZATION_ID",
    ]
    with pytest.raises(ZohoAuthError, match="ZOHO_REFRESH_TOKEN, ZOHO_ORGANIZATION_ID"):
        ZohoClient.from_settings(load_settings(ZOHO_CLIENT_ID="c", ZOHO_CLIENT_SECRET="s"))


def test_token_reused_and_organization_on_every_call(fake: FakeZoho) -> None:
    async def go() -> None:
        async with client(zoho_settings(fake)) as zoho:
            await asyncio.gather(*(zoho.get("/items", {"per_page": 5}) for _ in range(12)))
            await zoho.get("/categories")
            assert zoho.calls == 13 and zoho.tokens.minted == 1

    run(go())
    log = fake.api_log()
    assert len(fake.mints) == 1 and len(log) == 13
    assert all(r.query["organization_id"] == fake.organization_id for r in log)
    assert len({r.token for r in log}) == 1 and all(r.status == 200 for r in log)


def test_token_shared_by_processes_and_runs(fake: FakeZoho, database: Database) -> None:
    settings = zoho_settings(fake)

    async def go() -> None:
        async with shared(database.url, None) as (pool, _):
            # Two clients as two processes (own HTTP clients, own brokers), starting at once.
            async with client(settings, pool) as one, client(settings, pool) as two:
                await asyncio.gather(*(c.get("/categories") for c in (one, two) for _ in range(3)))
                assert one.tokens.minted + two.tokens.minted == 1
            async with client(settings, pool) as later_run:
                await later_run.get("/categories")
                assert later_run.tokens.minted == 0
        rows = await database.fetch("SELECT token_key, access_token FROM zoho_tokens")
        assert all(fake.refresh_token not in r["token_key"] for r in rows)

    run(go())
    assert len(fake.mints) == 1
    assert len({r.token for r in fake.api_log()}) == 1


def test_without_a_pool_each_client_mints_its_own(fake: FakeZoho) -> None:
    async def go() -> None:
        settings = zoho_settings(fake)
        async with client(settings) as one, client(settings) as two:
            await one.get("/categories")
            await two.get("/categories")

    run(go())
    assert len(fake.mints) == 2


def test_at_most_ten_mints_per_ten_minutes(database: Database) -> None:
    with FakeZoho(items=3, **own_account(), mint_cap=1000) as fake:
        settings = zoho_settings(fake)

        async def go() -> None:
            async with shared(database.url, None) as (pool, _), client(settings, pool) as zoho:
                await zoho.get("/categories")
                for _ in range(9):
                    fake.expire_tokens()
                    await zoho.get("/categories")
                assert zoho.tokens.minted == 10
                fake.expire_tokens()
                with pytest.raises(ZohoAuthError) as err:
                    await zoho.get("/categories")
                assert err.value.retry_after_s is not None and 500 < err.value.retry_after_s <= 600
                async with client(settings, pool) as other_process:  # the cap is shared, too
                    with pytest.raises(ZohoAuthError, match="cap 10"):
                        await other_process.get("/categories")

        run(go())
        assert len(fake.mints) == 10


def test_refused_refresh_raises_and_still_counts(fake: FakeZoho, database: Database) -> None:
    settings = zoho_settings(fake, ZOHO_CLIENT_SECRET="not-the-secret")

    async def go() -> None:
        async with shared(database.url, None) as (pool, _):
            for _ in range(2):
                async with client(settings, pool) as zoho:
                    with pytest.raises(ZohoAuthError, match="invalid_client"):
                        await zoho.get("/categories")
        async with client(settings) as alone:  # the same without a pool, per client
            for _ in range(2):
                with pytest.raises(ZohoAuthError, match="invalid_client"):
                    await alone.get("/categories")
            assert len(alone.tokens._mints) == 2

    run(go())
    rows = run(database.fetch("SELECT mints FROM zoho_tokens WHERE access_token IS NULL"))
    assert fake.api_log() == [] and [len(r["mints"]) for r in rows] == [2]


def test_401_refreshes_once_and_retries_once(fake: FakeZoho) -> None:
    async def go() -> None:
        async with client(zoho_settings(fake)) as zoho:
            await zoho.get("/categories")
            fake.fail_next("401")
            await zoho.get("/categories")
            assert zoho.tokens.minted == 2
            fake.clear_log()
            fake.fail_next("401", 2)
            with pytest.raises(ZohoAuthError) as err:
                await zoho.get("/categories")
            assert err.value.status == 401 and zoho.tokens.minted == 3

    run(go())
    log = fake.api_log()
    assert statuses(log) == [(401, 57), (401, 57)]
    assert log[0].token != log[1].token  # the retry used the new token


def test_expired_tokens_answer_401_and_are_replaced(fake: FakeZoho) -> None:
    async def go() -> None:
        async with client(zoho_settings(fake)) as zoho:
            await zoho.get("/categories")
            fake.expire_tokens()
            await zoho.get("/categories")

    run(go())
    assert statuses(fake.api_log()) == [(200, 0), (401, 57), (200, 0)]
    assert len(fake.mints) == 2


def test_429_retry_after_is_honoured(fake: FakeZoho) -> None:
    fake.fail_next("429", retry_after=1)

    async def go() -> None:
        async with client(zoho_settings(fake)) as zoho:
            doc = await zoho.get("/categories")
            assert doc["code"] == 0 and zoho.throttled == 1 and zoho.calls == 2

    run(go())
    first, second = fake.api_log()
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.done_at >= 1.0


def test_codes_44_and_1070_are_retried_even_under_http_200(fake: FakeZoho) -> None:
    fake.fail_next("44")
    fake.fail_next("1070")
    fake.fail_next("500")

    async def go() -> None:
        async with client(zoho_settings(fake)) as zoho:
            assert (await zoho.get("/items", {"per_page": 1}))["items"]
            assert zoho.throttled == 2 and zoho.calls == 4

    run(go())
    assert statuses(fake.api_log()) == [(200, 44), (200, 1070), (500, 500), (200, 0)]


def test_retries_are_bounded(fake: FakeZoho) -> None:
    fake.fail_next("44", 10)

    async def go() -> None:
        async with client(zoho_settings(fake, ZOHO_MAX_RETRIES=2)) as zoho:
            with pytest.raises(ZohoError) as err:
                await zoho.get("/categories")
            assert err.value.code == 44 and not isinstance(err.value, ZohoPaused)

    run(go())
    assert len(fake.api_log()) == 3


def test_code_45_pauses_and_the_day_stays_spent(fake: FakeZoho, database: Database) -> None:
    fake.fail_next("45")
    settings = zoho_settings(fake)

    async def go() -> None:
        async with shared(database.url, None) as (pool, _):
            async with client(settings, pool) as zoho:
                with pytest.raises(ZohoPaused) as err:
                    await zoho.get("/categories")
                assert err.value.code == 45
            async with client(settings, pool) as next_run:  # same UTC day: paused without a call
                with pytest.raises(ZohoPaused):
                    await next_run.get("/categories")

    run(go())
    assert len(fake.api_log()) == 1


@pytest.mark.parametrize("store", ["postgres", "redis", "process"])
def test_daily_budget_pauses(fake: FakeZoho, database: Database, services: Services, store: str) -> None:
    settings = zoho_settings(fake, ZOHO_DAILY_BUDGET=5)

    async def go() -> None:
        db = database.url if store == "postgres" else None
        async with shared(db, services.redis_url if store == "redis" else None) as (pool, redis):
            async with client(settings, pool, redis) as zoho:
                for _ in range(5):
                    await zoho.get("/categories")
                with pytest.raises(ZohoPaused, match="budget of 5"):
                    await zoho.get("/categories")
                assert await zoho.budget.used_today() >= 5
            if store != "process":
                async with client(settings, pool, redis) as other:
                    with pytest.raises(ZohoPaused):
                        await other.get("/categories")

    run(go())
    assert len(fake.api_log()) == 5


@pytest.mark.parametrize(
    ("shared_redis", "rate", "window", "inflight", "calls"),
    [
        (True, 10, 2.0, 3, 26),  # two processes sharing Redis
        (False, 10, 2.0, 3, 26),  # one process on its own limits
        (True, 100, 3.0, 5, 250),  # Zoho's own figures, 100 calls and 5 in flight, a minute made 3 s
    ],
)
def test_never_exceeds_rate_or_concurrency(
    services: Services, shared_redis: bool, rate: int, window: float, inflight: int, calls: int
) -> None:
    """The fake enforces the limits (44 and 1070 when exceeded); the clients' calls, in two processes
    sharing Redis or in one alone, all get through without one throttle, and the fake's log shows
    never more than `rate` arrivals in any window nor more than `inflight` at once."""
    with FakeZoho(
        items=5,
        **own_account(),
        rate_per_min=rate,
        rate_window_s=window,
        max_concurrency=inflight,
        latency_s=0.02,
    ) as fake:
        settings = zoho_settings(fake, ZOHO_RATE_PER_MIN=rate, ZOHO_MAX_CONCURRENCY=inflight)

        async def go() -> None:
            async with shared(None, services.redis_url if shared_redis else None) as (_, redis):
                clients = [client(settings, None, redis, rate_window_s=window) for _ in (1, 2)]
                if not shared_redis:
                    clients = clients[:1]
                try:
                    sends = [c.get("/categories") for c in clients for _ in range(calls // len(clients))]
                    await asyncio.gather(*sends)
                    assert sum(c.throttled for c in clients) == 0
                finally:  # no sockets left to a later test's garbage collection (a warning there fails it)
                    for c in clients:
                        await c.aclose()

        run(go())
        log = fake.api_log()
        assert len(log) == calls and all(r.status == 200 for r in log)
        assert max(r.concurrency for r in log) == inflight  # used to the limit, never beyond
        arrivals = sorted(r.at for r in log)
        assert all(b - a >= window for a, b in zip(arrivals, arrivals[rate:], strict=False))


def test_iter_pages_walks_has_more_page() -> None:
    with FakeZoho(items=450, **own_account()) as fake:

        async def go() -> list[tuple[int, int, bool]]:
            async with client(zoho_settings(fake)) as zoho:
                params = {"sort_column": "last_modified_time", "sort_order": "A"}
                return [
                    (page, len(rows), more)
                    async for page, rows, more in zoho.iter_pages("/items", "items", params)
                ]

        assert run(go()) == [(1, 200, True), (2, 200, True), (3, 50, False)]
        log = fake.api_log()
        assert [r.query["page"] for r in log] == ["1", "2", "3"]
        assert all(
            r.query["per_page"] == "200" and r.query["sort_column"] == "last_modified_time" for r in log
        )


def test_get_bytes_and_errors(fake: FakeZoho) -> None:
    with_image = next(i for i in fake.catalog.items.values() if i["image_id"])
    without = next(i for i in fake.catalog.items.values() if not i["image_id"])

    async def go() -> None:
        async with client(zoho_settings(fake)) as zoho:
            got = await zoho.get_bytes(f"/items/{with_image['item_id']}/image")
            assert got is not None and got[0][:2] == b"\xff\xd8" and got[1] == "image/jpeg"
            assert await zoho.get_bytes(f"/items/{without['item_id']}/image") is None
            with pytest.raises(ZohoError) as err:
                await zoho.get("/items/404404")
            assert (err.value.code, err.value.status) == (1002, 404)
            order = await zoho.post(
                "/salesorders",
                {"reference_number": "WEB-1", "line_items": [{"item_id": with_image["item_id"]}]},
            )
            assert order["salesorder"]["reference_number"] == "WEB-1"

    run(go())


def test_secrets_never_logged(fake: FakeZoho, database: Database, caplog: pytest.LogCaptureFixture) -> None:
    settings = zoho_settings(fake)
    fake.fail_next("429", retry_after=0)
    caplog.set_level(logging.DEBUG)

    async def go() -> ZohoClient:
        async with shared(database.url, None) as (pool, _), client(settings, pool) as zoho:
            await zoho.get("/categories")
            fake.fail_next("401")
            await zoho.get("/categories")
            return zoho

    zoho = run(go())
    tokens = {r.token for r in fake.api_log()}
    assert len(tokens) == 2
    shown = caplog.text + repr(zoho) + repr(zoho.tokens) + str(settings.public_view())
    for secret in (fake.client_secret, fake.refresh_token, *tokens):
        assert secret not in shown
    assert "minted a Zoho access token" in caplog.text and "retry 1" in caplog.text


def test_expiry_seen_by_two_processes_costs_one_mint(fake: FakeZoho, database: Database) -> None:
    settings = zoho_settings(fake)

    async def go() -> None:
        async with (
            shared(database.url, None) as (pool, _),
            client(settings, pool) as one,
            client(settings, pool) as two,
        ):
            await asyncio.gather(one.get("/categories"), two.get("/categories"))
            fake.expire_tokens()
            # Both see the 401; the second refresher finds the first one's token in PostgreSQL.
            await asyncio.gather(one.get("/categories"), two.get("/categories"))

    run(go())
    assert len(fake.mints) == 2


def test_a_throttle_holds_every_process(fake: FakeZoho, services: Services) -> None:
    """A 429 with Retry-After seen by one process delays the next call of another (shared via Redis)."""
    settings = zoho_settings(fake)
    fake.fail_next("429", retry_after=1)

    async def go() -> None:
        async with (
            shared(None, services.redis_url) as (_, redis),
            client(settings, None, redis) as one,
            client(settings, None, redis) as two,
        ):
            first = asyncio.create_task(one.get("/categories"))
            for _ in range(500):  # until the first process has seen its 429 (and set the hold)
                if await redis.exists(f"{settings.REDIS_KEY_PREFIX}zoho:{fake.organization_id}:hold"):
                    break
                await asyncio.sleep(0.01)
            await two.get("/items", {"per_page": 1})
            await first

    run(go())
    throttled, *later = fake.api_log()
    assert throttled.status == 429 and len(later) == 2
    assert all(r.at - throttled.done_at >= 0.95 for r in later)


def test_answers_over_the_byte_cap_are_refused(fake: FakeZoho) -> None:
    with_image = next(i for i in fake.catalog.items.values() if i["image_id"])
    fake.catalog.set_image(with_image["item_id"], b"\xff\xd8" + b"\0" * 5000)

    async def go() -> None:
        async with client(zoho_settings(fake)) as zoho:
            path = f"/items/{with_image['item_id']}/image"
            with pytest.raises(ZohoError, match="over 4096"):
                await zoho.get_bytes(path, max_bytes=4096)
            got = await zoho.get_bytes(path, max_bytes=8192)
            assert got is not None and len(got[0]) == 5002

    run(go())


def test_redis_down_falls_back_to_local_limits(fake: FakeZoho, caplog: pytest.LogCaptureFixture) -> None:
    settings = zoho_settings(fake, ZOHO_DAILY_BUDGET=4)

    async def go() -> None:
        dead = f"redis://127.0.0.1:{free_port()}/0"
        async with shared(None, dead) as (_, redis), client(settings, None, redis) as zoho:
            await asyncio.gather(*(zoho.get("/categories") for _ in range(4)))
            with pytest.raises(ZohoPaused):  # the daily budget, counted in the process
                await zoho.get("/categories")

    with caplog.at_level(logging.WARNING, logger="server.sync.budget"):
        run(go())
    assert len(fake.api_log()) == 4
    assert caplog.text.count("Redis failed") == 1
