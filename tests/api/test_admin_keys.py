"""Admin API keys over the CLI and HTTP: create/list/revoke, 401 and 403 in our error format, last use,
and the admin rate limit keyed by key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from admin_testlib import admin_key_cli, bearer, create_key
from catalog_testlib import Database, ServerProcess, Services, run

PROBLEM = "application/problem+json"


def product_url(db: Database) -> str:
    pid = run(db.fetch("SELECT min(id) AS id FROM products"))[0]["id"]
    return f"/api/admin/products/{pid}/stock"


def test_cli_create_list_revoke(database: Database) -> None:
    key = create_key(database, "ops laptop", "sync:run,catalog:write")
    prefix = key.split("_")[1]
    rows = run(database.fetch("SELECT * FROM admin_keys WHERE prefix = $1", prefix))
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == "ops laptop" and row["scopes"] == ["catalog:write", "sync:run"]
    assert bytes(row["hash"]) == hashlib.sha256(key.encode()).digest()  # the key itself is not stored
    assert row["revoked_at"] is None and row["last_used_at"] is None

    listed = admin_key_cli(database, "list")
    assert listed.returncode == 0, listed.stderr
    assert prefix in listed.stdout and "ops laptop" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout  # never the secret

    done = admin_key_cli(database, "revoke", prefix)
    assert done.returncode == 0, done.stderr
    assert (
        run(database.fetch("SELECT revoked_at FROM admin_keys WHERE prefix = $1", prefix))[0][0] is not None
    )
    again = admin_key_cli(database, "revoke", str(row["id"]))  # by id, idempotent
    assert again.returncode == 0, again.stderr
    assert admin_key_cli(database, "revoke", "0123456789ab").returncode == 1
    assert admin_key_cli(database, "revoke", "not a key").returncode == 2


def test_cli_refuses_unknown_scopes_and_bad_names(database: Database) -> None:
    before = run(database.fetch("SELECT count(*) FROM admin_keys"))[0][0]
    bad = admin_key_cli(database, "create", "--name", "x", "--scopes", "catalog:write,root")
    assert bad.returncode == 2 and "root" in bad.stderr and not bad.stdout
    assert admin_key_cli(database, "create", "--name", "", "--scopes", "sync:run").returncode == 2
    assert admin_key_cli(database, "create", "--name", "x", "--scopes", ",").returncode == 2
    assert run(database.fetch("SELECT count(*) FROM admin_keys"))[0][0] == before


def check_401(resp: httpx.Response, error: str | None) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == PROBLEM
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="catalog"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    body = resp.json()
    assert body["code"] == "unauthorized" and body["status"] == 401 and body["title_ar"]
    assert body["request_id"] == resp.headers["x-request-id"]


def test_missing_malformed_and_unknown_keys_are_401(api: httpx.Client, database: Database) -> None:
    url = product_url(database)
    check_401(api.patch(url, json={"delta": 1}), None)
    check_401(
        api.patch(url, json={"delta": 1}, headers={"Authorization": "Basic dXNlcjpwYXNz"}), "invalid_request"
    )
    check_401(api.patch(url, json={"delta": 1}, headers={"Authorization": "Bearer"}), "invalid_request")
    check_401(api.patch(url, json={"delta": 1}, headers=bearer("nope")), "invalid_token")
    key = create_key(database, "real", "catalog:write")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")  # right prefix, wrong secret
    check_401(api.patch(url, json={"delta": 1}, headers=bearer(forged)), "invalid_token")
    unknown = "cat_0123456789ab_" + key.split("_", 2)[2]
    check_401(api.patch(url, json={"delta": 1}, headers=bearer(unknown)), "invalid_token")
    # A refused request is refused before its body is looked at: no 422 leaks to a caller without a key.
    check_401(api.patch(url, content=b"{not json", headers={"Content-Type": "application/json"}), None)


def test_revoked_key_is_refused_on_the_next_request(api: httpx.Client, database: Database) -> None:
    url = product_url(database)
    key = create_key(database, "to revoke", "catalog:write")
    for _ in range(4):  # both processes have seen it
        assert api.patch(url, json={"delta": 0}, headers=bearer(key)).status_code == 200
    assert admin_key_cli(database, "revoke", key.split("_")[1]).returncode == 0
    for _ in range(6):  # every process refuses it at once: there is no cache to expire
        check_401(api.patch(url, json={"delta": 0}, headers=bearer(key)), "invalid_token")


def test_a_key_without_the_scope_is_403(api: httpx.Client, database: Database) -> None:
    key = create_key(database, "sync only", "sync:run")
    resp = api.patch(product_url(database), json={"delta": 1}, headers=bearer(key))
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]
    assert 'scope="catalog:write"' in resp.headers["www-authenticate"]
    body = resp.json()
    assert body["code"] == "forbidden" and "catalog:write" in body["detail"] and body["detail_ar"]


def test_last_used_is_written_at_most_once_a_minute(api: httpx.Client, database: Database) -> None:
    key = create_key(database, "busy", "catalog:write")
    prefix = key.split("_")[1]
    for _ in range(3):
        assert api.patch(product_url(database), json={"delta": 0}, headers=bearer(key)).status_code == 200
    first = run(database.fetch("SELECT last_used_at FROM admin_keys WHERE prefix = $1", prefix))[0][0]
    assert first is not None
    for _ in range(6):
        assert api.patch(product_url(database), json={"delta": 0}, headers=bearer(key)).status_code == 200
    assert run(database.fetch("SELECT last_used_at FROM admin_keys WHERE prefix = $1", prefix))[0][0] == first


@pytest.fixture(scope="module")
def limited(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server with rate limits on and a small admin quota."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("limited"),
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_ADMIN="4/60s;burst=4",
        PROCESSES="1",
    ).start()
    yield proc
    proc.stop()


def test_admin_limit_is_per_key(limited: ServerProcess, database: Database) -> None:
    first = create_key(database, "first", "catalog:write")
    second = create_key(database, "second", "catalog:write")
    url = product_url(database)
    with limited.client() as client:
        answers = [client.patch(url, json={"delta": 0}, headers=bearer(first)) for _ in range(6)]
        assert [r.status_code for r in answers] == [200] * 4 + [429] * 2
        assert answers[0].headers["ratelimit-policy"] == '"admin";q=4;w=60'
        assert answers[-1].json()["code"] == "rate_limited" and int(answers[-1].headers["retry-after"]) >= 1
        # Same address, another key: its own quota.
        assert client.patch(url, json={"delta": 0}, headers=bearer(second)).status_code == 200
        # Without a valid key the address is charged (guessing keys is limited too).
        guesses = [client.patch(url, json={"delta": 0}, headers=bearer("nope")).status_code for _ in range(6)]
        assert guesses[:4] == [401] * 4 and guesses[4:] == [429, 429]
