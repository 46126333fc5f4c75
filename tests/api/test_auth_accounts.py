"""Accounts over HTTP: sign-up by mail, sign-in, sessions (rotation, reuse, logout), passwords, throttling."""

from __future__ import annotations

import time

import httpx
from accounts_testlib import (
    AUTH,
    PASSWORD,
    mail_token,
    mails_to,
    new_email,
    post,
    sign_in,
    sign_up,
    wait_mail,
)
from catalog_testlib import Database, ServerProcess, run


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_sign_up_mails_a_link_and_verified_sign_in_gives_tokens(
    api: httpx.Client, server: ServerProcess
) -> None:
    address = new_email()
    resp = post(api, "/register", {"email": address.upper(), "password": PASSWORD, "name": "Lina"})
    assert resp.status_code == 202
    msg = wait_mail(server, address)  # lowercased; written as an .eml file under DATA_DIR/mail
    assert msg["Subject"] == "Confirm your email address"
    token = mail_token(msg)
    # Before verification: the same 401 as a wrong password.
    assert post(api, "/login", {"email": address, "password": PASSWORD}).status_code == 401
    assert post(api, "/verify-email", {"token": token}).json() == {"status": "verified"}
    again = post(api, "/verify-email", {"token": token})  # single use
    assert again.status_code == 422 and again.json()["errors"][0]["field"] == "body.token"
    doc = sign_in(api, address)
    assert doc["mfa_required"] is False and doc["token_type"] == "Bearer" and doc["expires_in"] <= 900
    me = api.get(AUTH + "/me", headers=bearer(doc["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["email"] == address and me.json()["name"] == "Lina" and me.json()["email_verified"]
    assert me.headers["cache-control"] == "no-store" or "private" in me.headers["cache-control"]


def test_register_existing_address_same_answer_and_notice_mail(
    api: httpx.Client, server: ServerProcess
) -> None:
    address = new_email()
    sign_up(api, server, address)
    first = post(api, "/register", {"email": new_email(), "password": PASSWORD})
    second = post(api, "/register", {"email": address, "password": "another long password 9"})
    assert first.status_code == second.status_code == 202
    assert first.content == second.content
    notice = wait_mail(server, address, 2)
    assert notice["Subject"] == "You already have an account"


def test_password_policy(api: httpx.Client) -> None:
    for bad, why in (("short1", "at least 8"), ("x" * 129, "at most 128"), ("password1", "common")):
        resp = post(api, "/register", {"email": new_email(), "password": bad})
        assert resp.status_code == 422, resp.text
        assert why in resp.json()["errors"][0]["message"]
    # Lengths count after NFKC: 4 "ﬀ" ligatures are 8 characters ("ffffffff"), 3 are 6.
    assert post(api, "/register", {"email": new_email(), "password": "ﬀﬀﬀﬀ"}).status_code == 202
    assert post(api, "/register", {"email": new_email(), "password": "ﬀﬀﬀ"}).status_code == 422


def test_nfkc_password_signs_in_typed_either_way(api: httpx.Client, server: ServerProcess) -> None:
    address = new_email()
    sign_up(api, server, address, "ｐａｓｓｐｈｒａｓｅ ｗｉｄｅ ７")  # full-width forms
    assert sign_in(api, address, "passphrase wide 7")["mfa_required"] is False


def test_no_token_is_401_with_bearer_challenge(api: httpx.Client) -> None:
    resp = api.get(AUTH + "/me")
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
    forged = api.get(AUTH + "/me", headers=bearer("e30.e30.AAAA"))
    assert forged.status_code == 401 and 'error="invalid_token"' in forged.headers["www-authenticate"]


def test_refresh_rotates_and_reuse_revokes_the_family(api: httpx.Client, server: ServerProcess) -> None:
    address = new_email()
    sign_up(api, server, address)
    first = sign_in(api, address)
    second = post(api, "/refresh", {"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"]
    assert pair["refresh_expires_at"] == first["refresh_expires_at"]  # absolute expiry: rotation keeps it
    # The first token again (a thief's copy): refused, and the whole family with it.
    reused = post(api, "/refresh", {"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    assert post(api, "/refresh", {"refresh_token": pair["refresh_token"]}).status_code == 401
    # Another sign-in is another family: untouched.
    other = sign_in(api, address)
    assert post(api, "/refresh", {"refresh_token": other["refresh_token"]}).status_code == 200


def test_logout_and_logout_all(api: httpx.Client, server: ServerProcess) -> None:
    address = new_email()
    sign_up(api, server, address)
    a, b, c = sign_in(api, address), sign_in(api, address), sign_in(api, address)
    assert post(api, "/logout", {}, a["access_token"]).json() == {"status": "signed_out"}
    assert post(api, "/refresh", {"refresh_token": a["refresh_token"]}).status_code == 401
    fresh_b = post(api, "/refresh", {"refresh_token": b["refresh_token"]})
    assert fresh_b.status_code == 200
    assert post(api, "/logout-all", {}, c["access_token"]).status_code == 200
    assert post(api, "/refresh", {"refresh_token": fresh_b.json()["refresh_token"]}).status_code == 401
    assert post(api, "/refresh", {"refresh_token": c["refresh_token"]}).status_code == 401


def test_password_change_revokes_sessions(api: httpx.Client, server: ServerProcess) -> None:
    address = new_email()
    sign_up(api, server, address)
    doc = sign_in(api, address)
    wrong = post(
        api, "/password", {"current": "not it at all 1", "new": "a brand new passphrase"}, doc["access_token"]
    )
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "body.current"
    ok = post(api, "/password", {"current": PASSWORD, "new": "a brand new passphrase"}, doc["access_token"])
    assert ok.status_code == 200, ok.text
    assert post(api, "/refresh", {"refresh_token": doc["refresh_token"]}).status_code == 401
    assert post(api, "/login", {"email": address, "password": PASSWORD}).status_code == 401
    assert sign_in(api, address, "a brand new passphrase")["mfa_required"] is False


def test_password_reset(api: httpx.Client, server: ServerProcess) -> None:
    address = new_email()
    sign_up(api, server, address)
    session = sign_in(api, address)
    unknown = post(api, "/password-reset/request", {"email": new_email()})
    known = post(api, "/password-reset/request", {"email": address})
    assert unknown.status_code == known.status_code == 202 and unknown.content == known.content
    token = mail_token(wait_mail(server, address, 2))
    weak = post(api, "/password-reset/confirm", {"token": token, "new_password": "qwerty123"})
    assert weak.status_code == 422  # common password; the token is not spent by a refused password
    done = post(api, "/password-reset/confirm", {"token": token, "new_password": "reset to something long"})
    assert done.status_code == 200, done.text
    again = post(api, "/password-reset/confirm", {"token": token, "new_password": "and once more, longer"})
    assert again.status_code == 422  # single use
    assert post(api, "/refresh", {"refresh_token": session["refresh_token"]}).status_code == 401
    assert sign_in(api, address, "reset to something long")["mfa_required"] is False


def test_mail_is_an_eml_file_and_the_outbox_forgets_the_token(
    api: httpx.Client, server: ServerProcess, database: Database
) -> None:
    address = new_email()
    post(api, "/register", {"email": address, "password": PASSWORD})
    msg = wait_mail(server, address)
    assert msg["From"] and msg["Message-ID"] and msg.get_content_type() == "text/plain"
    token = mail_token(msg)

    def outbox() -> list[tuple[str, bool]]:
        rows = run(
            database.fetch(
                "SELECT body, sent_at IS NOT NULL AS sent FROM mail_outbox WHERE to_addr = $1", address
            )
        )
        return [(r["body"], r["sent"]) for r in rows]

    deadline = time.monotonic() + 5
    while not all(sent for _, sent in outbox()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert outbox() == [("", True)]
    stored = run(database.fetch("SELECT hash FROM email_tokens"))
    assert all(token.encode() not in bytes(r["hash"]) for r in stored)
    assert len(mails_to(server, address)) == 1


def test_throttle_after_five_failures_then_exponential_never_permanent(
    api: httpx.Client, server: ServerProcess
) -> None:
    address = new_email()
    sign_up(api, server, address)
    for _ in range(5):
        assert post(api, "/login", {"email": address, "password": "wrong password 123"}).status_code == 401
    held = post(api, "/login", {"email": address, "password": PASSWORD})
    assert held.status_code == 429 and held.headers["retry-after"] == "1"
    # An unknown address is throttled the same way (the throttle tells nothing about accounts).
    ghost = new_email()
    for _ in range(5):
        assert post(api, "/login", {"email": ghost, "password": "wrong password 123"}).status_code == 401
    assert post(api, "/login", {"email": ghost, "password": PASSWORD}).status_code == 429
    time.sleep(1.1)
    assert post(api, "/login", {"email": address, "password": "wrong password 123"}).status_code == 401
    doubled = post(api, "/login", {"email": address, "password": PASSWORD})
    assert doubled.status_code == 429 and doubled.headers["retry-after"] == "2"
    time.sleep(2.1)
    assert sign_in(api, address)["mfa_required"] is False  # the delay ends; success resets the count
    assert post(api, "/login", {"email": address, "password": "wrong password 123"}).status_code == 401
    assert sign_in(api, address)["mfa_required"] is False


def test_bad_bodies_are_4xx(api: httpx.Client) -> None:
    assert post(api, "/login", {"email": "not-an-address", "password": "x"}).status_code == 422
    assert post(api, "/login", {"email": "a@b.co"}).status_code == 422
    assert (
        api.post(AUTH + "/login", content=b"{", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert api.post(AUTH + "/login", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert post(api, "/refresh", {"refresh_token": "x" * 43}).status_code == 401
    assert post(api, "/verify-email", {"token": "y" * 43}).status_code == 422


def test_register_again_while_unverified_mails_a_fresh_link(api: httpx.Client, server: ServerProcess) -> None:
    address = new_email()
    assert post(api, "/register", {"email": address, "password": PASSWORD}).status_code == 202
    first = mail_token(wait_mail(server, address))
    assert post(api, "/register", {"email": address, "password": "some other passphrase"}).status_code == 202
    second = mail_token(wait_mail(server, address, 2))
    assert first != second
    assert post(api, "/verify-email", {"token": first}).status_code == 422  # the older link is retired
    assert post(api, "/verify-email", {"token": second}).status_code == 200
    assert sign_in(api, address)["mfa_required"] is False  # the first password stands
