"""Accounts under their limits, each on a server with its own settings: no enumeration by body or timing,
503 when the hashing queue is full, JWT key rotation, and the rate limiter keying signed-in users by id."""

from __future__ import annotations

import base64
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from accounts_testlib import (
    AUTH,
    PASSWORD,
    SmtpSink,
    code,
    fresh_step,
    mail_token,
    new_email,
    post,
    secret_of,
    sign_in,
    sign_up,
    wait_mail,
)
from admin_testlib import wait_for
from catalog_testlib import Database, ServerProcess, Services, free_port, run

ROUNDS = 200  # sign-ins of each kind (the measure)
ACCOUNTS = 3  # each kind spread over this many accounts: at most 67 failures each, below the throttle's 100


def key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def start(database: Database, services: Services, folder: Path, **env: object) -> ServerProcess:
    return ServerProcess(database, services, folder, **env).start()


@pytest.fixture
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("srv")


@pytest.fixture
def quiet_server(database: Database, services: Services, folder: Path) -> Iterator[ServerProcess]:
    """A server whose account throttle never engages (hundreds of failures to measure)."""
    proc = start(database, services, folder, AUTH_THROTTLE_AFTER=100)
    yield proc
    proc.stop()


def test_failed_sign_ins_look_the_same(quiet_server: ServerProcess) -> None:
    with quiet_server.client() as api:
        verified = [new_email("v") for _ in range(ACCOUNTS)]
        unverified = [new_email("n") for _ in range(ACCOUNTS)]
        for address in verified:
            sign_up(api, quiet_server, address)
        for address in unverified:
            assert post(api, "/register", {"email": address, "password": PASSWORD}).status_code == 202
        ghosts = [new_email("ghost") for _ in range(ACCOUNTS)]
        cases = {
            "unknown email": [(a, PASSWORD) for a in ghosts],
            "wrong password": [(a, "wrong password 123") for a in verified],
            # the right password of an unverified account
            "unverified": [(a, PASSWORD) for a in unverified],
        }
        answers = set()
        times: dict[str, list[float]] = {name: [] for name in cases}
        for k in range(ROUNDS):
            for name, tries in cases.items():
                address, password = tries[k % ACCOUNTS]
                started = time.perf_counter()
                resp = post(api, "/login", {"email": address, "password": password})
                times[name].append((time.perf_counter() - started) * 1000)
                doc = resp.json()
                doc.pop("request_id")
                answers.add((resp.status_code, resp.headers["www-authenticate"], orjson.dumps(doc)))
        assert len(answers) == 1, answers
        assert next(iter(answers))[0] == 401
        medians = {name: statistics.median(ms) for name, ms in times.items()}
        print("login medians (ms):", {k: round(v, 2) for k, v in medians.items()})
        # The goal is 5 ms; the bound is generous because this machine's 2 cores are shared.
        assert max(medians.values()) - min(medians.values()) < 20, medians


def test_hashing_queue_full_is_503(database: Database, services: Services, folder: Path) -> None:
    proc = start(database, services, folder, PROCESSES=1, AUTH_HASH_WORKERS=1, AUTH_HASH_QUEUE=0)
    try:
        statuses: list[int] = []
        retry: list[str | None] = []

        def attempt() -> None:
            with proc.client() as api:
                resp = post(api, "/login", {"email": new_email(), "password": PASSWORD})
                statuses.append(resp.status_code)
                retry.append(resp.headers.get("retry-after"))

        threads = [threading.Thread(target=attempt) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {401, 503} and 401 in statuses and 503 in statuses, statuses
        # Spread over 1-4 s, so refused clients do not all come back in the same second.
        assert all(r in {"1", "2", "3", "4"} for s, r in zip(statuses, retry, strict=True) if s == 503)
        with proc.client() as api:  # the pool drains: the next sign-in is served
            assert post(api, "/login", {"email": new_email(), "password": PASSWORD}).status_code == 401
    finally:
        proc.stop()


def test_hashing_rate_cap_is_503_then_sign_in_works(
    database: Database, services: Services, folder: Path
) -> None:
    # One hash per 10 s (the bucket holds one): signing up takes it, so the sign-ins right after are refused
    # at once, an unknown email and a known one with its right password alike.
    proc = start(database, services, folder, PROCESSES=1, AUTH_HASH_MAX_PER_S=0.1)
    try:
        with proc.client() as api:
            address = new_email()
            sign_up(api, proc, address)
            answers = set()
            for email in (new_email("ghost"), address):
                started = time.monotonic()
                resp = post(api, "/login", {"email": email, "password": PASSWORD})
                assert time.monotonic() - started < 5  # refused, not queued
                assert resp.status_code == 503, resp.text
                assert resp.headers["retry-after"] in {"1", "2", "3", "4"}
                doc = resp.json()
                doc.pop("request_id")
                answers.add(orjson.dumps(doc))
            assert len(answers) == 1, answers  # the same answer: the cap tells nothing about the email
            # A token comes back within 10 s: the right password then signs in.
            wait_for(
                lambda: post(api, "/login", {"email": address, "password": PASSWORD}).status_code == 200,
                timeout=25,
                step=0.5,
            )
            assert post(api, "/login", {"email": address, "password": PASSWORD}).status_code == 503
    finally:
        proc.stop()


def _kid(token: str) -> str:
    header = token.split(".")[0]
    return str(orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def test_jwt_key_rotation_signs_nobody_out(database: Database, services: Services, folder: Path) -> None:
    k1, k2 = key(), key()
    both = f"k1:{k1},k2:{k2}"
    proc = start(database, services, folder, AUTH_JWT_KEYS=both, AUTH_JWT_ACTIVE_KID="k1")
    try:
        with proc.client() as api:
            address = new_email()
            sign_up(api, proc, address)
            old = sign_in(api, address)["access_token"]
            assert _kid(old) == "k1"
    finally:
        proc.stop()
    proc = start(database, services, folder, AUTH_JWT_KEYS=both, AUTH_JWT_ACTIVE_KID="k2")
    try:
        with proc.client() as api:
            assert api.get(AUTH + "/me", headers={"Authorization": f"Bearer {old}"}).status_code == 200
            assert _kid(sign_in(api, address)["access_token"]) == "k2"
    finally:
        proc.stop()
    proc = start(database, services, folder, AUTH_JWT_KEYS=f"k2:{k2}")  # k1 retired
    try:
        with proc.client() as api:
            assert api.get(AUTH + "/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    finally:
        proc.stop()


def test_signed_in_callers_are_limited_by_user_id(
    database: Database, services: Services, folder: Path
) -> None:
    proc = start(database, services, folder, RATE_LIMIT_ENABLED="true", RATE_LIMIT_AUTH="10/3600s;burst=10")
    try:
        with proc.client() as api:
            a, b = new_email("a"), new_email("b")
            sign_up(api, proc, a)  # 2 requests of this address's 10
            sign_up(api, proc, b)
            token_a = sign_in(api, a)["access_token"]
            token_b = sign_in(api, b)["access_token"]  # 6 used
            for _ in range(10):
                assert (
                    api.get(AUTH + "/me", headers={"Authorization": f"Bearer {token_a}"}).status_code == 200
                )
            assert api.get(AUTH + "/me", headers={"Authorization": f"Bearer {token_a}"}).status_code == 429
            # Another user on the same address has their own budget, and so has the address itself.
            assert api.get(AUTH + "/me", headers={"Authorization": f"Bearer {token_b}"}).status_code == 200
            assert post(api, "/login", {"email": a, "password": "wrong password 1"}).status_code == 401
    finally:
        proc.stop()


def test_signed_in_shoppers_browse_the_catalog_on_their_own_budget(
    database: Database, services: Services, folder: Path
) -> None:
    proc = start(
        database,
        services,
        folder,
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_AUTH="20/3600s;burst=20",
        RATE_LIMIT_CATALOG="5/3600s;burst=5",
    )
    products = "/api/consumer/products?page_size=3"
    try:
        with proc.client() as api:
            a = new_email("shop")
            sign_up(api, proc, a)
            token = sign_in(api, a)["access_token"]
            signed_in = {"Authorization": f"Bearer {token}"}
            # A token that is not valid is a 401 with the Bearer challenge, never served as anonymous (and
            # charged to the address, like any guess).
            bad = api.get(products, headers={"Authorization": f"Bearer {token[:-2]}xx"})
            assert bad.status_code == 401 and "invalid_token" in bad.headers["www-authenticate"]
            assert bad.json()["code"] == "unauthorized"
            for _ in range(4):  # the rest of the address's catalog budget
                assert api.get(products).status_code == 200
            assert api.get(products).status_code == 429
            # The same address, signed in: the shopper's budget (`user:<id>`), not the spent address's.
            answers = [api.get(products, headers=signed_in) for _ in range(6)]
            assert [r.status_code for r in answers] == [200] * 5 + [429], [r.status_code for r in answers]
            assert answers[0].json()["items"] and answers[0].headers["cache-control"].startswith("public")
    finally:
        proc.stop()


def test_new_argon2_parameters_rehash_at_sign_in(
    database: Database, services: Services, folder: Path
) -> None:
    async def stored(address: str) -> str:
        rows = await database.fetch("SELECT password_hash FROM users WHERE email = $1", address)
        return str(rows[0]["password_hash"])

    proc = start(database, services, folder)
    try:
        with proc.client() as api:
            address = new_email()
            sign_up(api, proc, address)
    finally:
        proc.stop()
    before = run(stored(address))
    assert before.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    proc = start(database, services, folder, AUTH_ARGON2_TIME_COST=3)
    try:
        with proc.client() as api:
            assert sign_in(api, address)["mfa_required"] is False
            after = run(stored(address))
            assert after.startswith("$argon2id$v=19$m=19456,t=3,p=1$") and after != before
            assert sign_in(api, address)["mfa_required"] is False  # the new hash checks the same password
    finally:
        proc.stop()


def test_undelivered_mail_stays_pending_and_a_sweep_delivers_it(
    database: Database, services: Services, folder: Path
) -> None:
    async def outbox(address: str) -> list[dict[str, object]]:
        rows = await database.fetch(
            "SELECT body, attempts, last_error, sent_at FROM mail_outbox WHERE to_addr = $1", address
        )
        return [dict(r) for r in rows]

    address = new_email()
    dead_smtp = f"smtp://127.0.0.1:{free_port()}"  # nothing listens there
    proc = start(database, services, folder, SMTP_URL=dead_smtp, MAIL_SWEEP_S=1)
    try:
        with proc.client() as api:
            assert post(api, "/register", {"email": address, "password": PASSWORD}).status_code == 202
            wait_for(lambda: int(run(outbox(address))[0]["attempts"]) >= 2, 10, step=0.1)  # retried
        (row,) = run(outbox(address))
        assert row["sent_at"] is None and row["last_error"] == "ConnectionRefusedError" and row["body"]
    finally:
        proc.stop()
    # A sender stopped mid-delivery keeps its claim for a minute: let it have lapsed.
    run(database.execute("UPDATE mail_outbox SET claimed_at = NULL WHERE to_addr = $1", address))
    proc = start(database, services, folder, MAIL_SWEEP_S=0.2)  # no SMTP: files; no new mail written
    try:
        token = mail_token(wait_mail(proc, address))
        (row,) = run(outbox(address))
        assert row["sent_at"] is not None and row["body"] == ""
        with proc.client() as api:
            assert post(api, "/verify-email", {"token": token}).status_code == 200
    finally:
        proc.stop()


def test_totp_key_rotation_moves_secrets_to_the_active_key(
    database: Database, services: Services, folder: Path
) -> None:
    k1, k2 = key(), key()
    both = f"t1:{k1},t2:{k2}"

    async def key_id(address: str) -> str:
        rows = await database.fetch("SELECT totp_key_id FROM users WHERE email = $1", address)
        return str(rows[0]["totp_key_id"])

    def sign_in_with_code(api: httpx.Client, address: str, secret: bytes, offset: int) -> int:
        doc = sign_in(api, address)
        assert doc["mfa_required"] is True
        return post(
            api, "/mfa/verify", {"mfa_token": doc["mfa_token"], "code": code(secret, offset)}
        ).status_code

    proc = start(database, services, folder, AUTH_TOTP_KEYS=both, AUTH_TOTP_ACTIVE_KID="t1")
    try:
        with proc.client() as api:
            address = new_email()
            sign_up(api, proc, address)
            access = sign_in(api, address)["access_token"]
            secret = secret_of(post(api, "/mfa/setup", {}, access).json())
            fresh_step(margin_s=15)  # three servers start within this step
            assert post(api, "/mfa/enable", {"code": code(secret, -1)}, access).status_code == 200
        assert run(key_id(address)) == "t1"
    finally:
        proc.stop()
    proc = start(database, services, folder, AUTH_TOTP_KEYS=both, AUTH_TOTP_ACTIVE_KID="t2")
    try:
        with proc.client() as api:
            assert sign_in_with_code(api, address, secret, 0) == 200  # t1 still opens it ...
        assert run(key_id(address)) == "t2"  # ... and it is sealed with t2 now
    finally:
        proc.stop()
    proc = start(database, services, folder, AUTH_TOTP_KEYS=f"t2:{k2}")  # t1 retired
    try:
        with proc.client() as api:
            assert sign_in_with_code(api, address, secret, 1) == 200
    finally:
        proc.stop()


def test_mail_goes_over_smtp_when_smtp_url_is_set(
    database: Database, services: Services, folder: Path
) -> None:
    sink = SmtpSink()
    proc = start(
        database, services, folder, SMTP_URL=f"smtp://127.0.0.1:{sink.port}", MAIL_FROM="Shop <a@shop.test>"
    )
    try:
        with proc.client() as api:
            address = new_email()
            assert post(api, "/register", {"email": address, "password": PASSWORD}).status_code == 202
            wait_for(lambda: any(m["To"] == address for m in sink.messages), 10, step=0.05)
            (msg,) = [m for m in sink.messages if m["To"] == address]
            assert msg["From"] == "Shop <a@shop.test>" and msg["Subject"] == "Confirm your email address"
            assert post(api, "/verify-email", {"token": mail_token(msg)}).status_code == 200
        assert not (folder / "data" / "mail").exists()  # no .eml files when SMTP is configured
        proc.stop()
        # With credentials, a server that offers no TLS never gets them: the mail stays pending.
        proc = start(database, services, folder, SMTP_URL=f"smtp://shop:secret@127.0.0.1:{sink.port}")
        with proc.client() as api:
            other = new_email()
            assert post(api, "/register", {"email": other, "password": PASSWORD}).status_code == 202

            async def last_error() -> object:
                rows = await database.fetch("SELECT last_error FROM mail_outbox WHERE to_addr = $1", other)
                return rows[0]["last_error"] if rows else None

            wait_for(lambda: run(last_error()) == "SMTPException", 10, step=0.05)
            assert not any(m["To"] == other for m in sink.messages)
        assert "secret" not in proc.log()
    finally:
        proc.stop()
        sink.close()
