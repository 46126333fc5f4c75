"""MFA over HTTP: TOTP set-up, window and replay, 5 tries per mfa_token, recovery codes, encrypted secrets,
disabling, and a password reset that does not bypass the second factor."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from accounts_testlib import (
    PASSWORD,
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
from catalog_testlib import Database, ServerProcess, run
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.accounts import totp


def with_mfa(api: httpx.Client, server: ServerProcess) -> tuple[str, bytes, list[str], dict[str, Any]]:
    """A verified account with MFA on: (email, TOTP secret, recovery codes, the setup answer).
    Enabling spends the code of the previous step, so the current and next ones stay usable."""
    address = new_email("mfa")
    sign_up(api, server, address)
    access = sign_in(api, address)["access_token"]
    setup = post(api, "/mfa/setup", {}, access)
    assert setup.status_code == 200, setup.text
    doc = setup.json()
    secret = secret_of(doc)
    fresh_step()
    enabled = post(api, "/mfa/enable", {"code": code(secret, -1)}, access)
    assert enabled.status_code == 200, enabled.text
    codes = enabled.json()["recovery_codes"]
    return address, secret, codes, doc


def challenge(api: httpx.Client, address: str, password: str = PASSWORD) -> str:
    doc = sign_in(api, address, password)
    assert doc["mfa_required"] is True and "access_token" not in doc
    return str(doc["mfa_token"])


def test_setup_gives_secret_uri_and_svg(api: httpx.Client, server: ServerProcess) -> None:
    _address, secret, codes, doc = with_mfa(api, server)
    assert len(secret) == 20
    assert (
        doc["otpauth_uri"].startswith("otpauth://totp/Catalog:")
        and f"secret={doc['secret']}" in doc["otpauth_uri"]
    )
    assert doc["qr_svg"].startswith("<svg") and doc["qr_svg"].rstrip().endswith("</svg>")
    assert len(codes) == len(set(codes)) == 10


def test_totp_window_and_replay(api: httpx.Client, server: ServerProcess) -> None:
    address, secret, _, _ = with_mfa(api, server)
    fresh_step()
    too_old = post(api, "/mfa/verify", {"mfa_token": challenge(api, address), "code": code(secret, -2)})
    assert too_old.status_code == 401
    token = challenge(api, address)
    current = code(secret, 0)
    ok = post(api, "/mfa/verify", {"mfa_token": token, "code": current})
    assert ok.status_code == 200 and ok.json()["access_token"]
    # The same code again, on a new sign-in: refused (each step once per user).
    replay = post(api, "/mfa/verify", {"mfa_token": challenge(api, address), "code": current})
    assert replay.status_code == 401
    # The next step (clock drift +1) is accepted once.
    nxt = post(api, "/mfa/verify", {"mfa_token": challenge(api, address), "code": code(secret, 1)})
    assert nxt.status_code == 200
    # The mfa_token of a finished step cannot be used again.
    assert post(api, "/mfa/verify", {"mfa_token": token, "code": code(secret, 1)}).status_code == 401


def test_five_tries_per_mfa_token(api: httpx.Client, server: ServerProcess) -> None:
    address, _secret, codes, _ = with_mfa(api, server)
    token = challenge(api, address)
    for _ in range(5):
        assert post(api, "/mfa/verify", {"mfa_token": token, "code": "000000"}).status_code == 401
    sixth = post(api, "/mfa/verify", {"mfa_token": token, "recovery_code": codes[0]})
    assert sixth.status_code == 401  # even with a good code: the token is spent
    assert (
        post(
            api, "/mfa/verify", {"mfa_token": challenge(api, address), "recovery_code": codes[0]}
        ).status_code
        == 200
    )


def test_recovery_codes_single_use_and_regenerate(api: httpx.Client, server: ServerProcess) -> None:
    address, secret, codes, _ = with_mfa(api, server)
    first = post(
        api, "/mfa/verify", {"mfa_token": challenge(api, address), "recovery_code": codes[0].upper()}
    )
    assert first.status_code == 200, first.text
    reuse = post(api, "/mfa/verify", {"mfa_token": challenge(api, address), "recovery_code": codes[0]})
    assert reuse.status_code == 401
    access = first.json()["access_token"]
    me = api.get("/api/auth/me", headers={"Authorization": f"Bearer {access}"}).json()
    assert me["mfa_enabled"] is True and me["recovery_codes_left"] == 9
    fresh_step()
    new = post(api, "/mfa/recovery-codes", {"code": code(secret, 0)}, access)
    assert new.status_code == 200, new.text
    fresh = new.json()["recovery_codes"]
    assert not set(fresh) & set(codes)
    old = post(api, "/mfa/verify", {"mfa_token": challenge(api, address), "recovery_code": codes[1]})
    assert old.status_code == 401  # the old set is gone
    assert (
        post(
            api, "/mfa/verify", {"mfa_token": challenge(api, address), "recovery_code": fresh[0]}
        ).status_code
        == 200
    )


def test_secret_is_encrypted_at_rest(api: httpx.Client, server: ServerProcess, database: Database) -> None:
    address, secret, codes, doc = with_mfa(api, server)
    row = run(
        database.fetch(
            "SELECT id, totp_secret, totp_key_id, totp_pending FROM users WHERE email = $1", address
        )
    )[0]
    stored = bytes(row["totp_secret"])
    assert secret not in stored and doc["secret"].encode() not in stored and row["totp_pending"] is None
    assert row["totp_key_id"] == "dev-totp"
    # It is AES-GCM under the key that its key id names, bound to the user.
    keys = json.loads((server.workdir / "data" / "auth-dev-keys.json").read_text())
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"catalog totp secret seal").derive(
        base64.urlsafe_b64decode(keys["totp"])
    )
    assert AESGCM(key).decrypt(stored[:12], stored[12:], f"totp:{row['id']}".encode()) == secret
    stored_codes = run(database.fetch("SELECT hash FROM recovery_codes WHERE user_id = $1", row["id"]))
    assert len(stored_codes) == 10 and all(
        c.encode() not in bytes(h["hash"]) for h in stored_codes for c in codes
    )


def test_reset_does_not_bypass_mfa(api: httpx.Client, server: ServerProcess) -> None:
    address, _secret, codes, _ = with_mfa(api, server)
    assert post(api, "/password-reset/request", {"email": address}).status_code == 202
    token = mail_token(wait_mail(server, address, 2))
    new_password = "after the reset, still two factors"
    assert (
        post(api, "/password-reset/confirm", {"token": token, "new_password": new_password}).status_code
        == 200
    )
    doc = sign_in(api, address, new_password)
    assert doc["mfa_required"] is True and "access_token" not in doc
    assert (
        post(api, "/mfa/verify", {"mfa_token": doc["mfa_token"], "recovery_code": codes[3]}).status_code
        == 200
    )


def test_disable_needs_password_and_code(api: httpx.Client, server: ServerProcess) -> None:
    address, secret, codes, _ = with_mfa(api, server)
    signed = post(api, "/mfa/verify", {"mfa_token": challenge(api, address), "recovery_code": codes[0]})
    access = signed.json()["access_token"]
    fresh_step()
    wrong_pw = post(api, "/mfa/disable", {"password": "not the password 1", "code": code(secret, 0)}, access)
    assert wrong_pw.status_code == 422 and wrong_pw.json()["errors"][0]["field"] == "body.password"
    wrong_code = post(api, "/mfa/disable", {"password": PASSWORD, "code": "123456"}, access)
    assert wrong_code.status_code in (422,)
    ok = post(api, "/mfa/disable", {"password": PASSWORD, "code": code(secret, 0)}, access)
    assert ok.status_code == 200 and ok.json() == {"mfa_enabled": False}
    assert sign_in(api, address)["mfa_required"] is False


def test_enable_refuses_a_wrong_code_and_needs_setup(api: httpx.Client, server: ServerProcess) -> None:
    address = new_email()
    sign_up(api, server, address)
    access = sign_in(api, address)["access_token"]
    assert post(api, "/mfa/enable", {"code": "123456"}, access).status_code == 422  # no setup yet
    secret = secret_of(post(api, "/mfa/setup", {}, access).json())
    fresh_step()
    wrong = totp.code_at(secret, totp.current_step() + 5)
    assert post(api, "/mfa/enable", {"code": wrong}, access).status_code == 422
    assert sign_in(api, address)["mfa_required"] is False  # still off


@pytest.mark.parametrize("body", [{"code": "12345"}, {"code": "abcdef"}, {}])
def test_mfa_verify_bad_bodies(api: httpx.Client, body: dict[str, Any]) -> None:
    resp = post(api, "/mfa/verify", {"mfa_token": "t" * 43, **body})
    assert resp.status_code in (401, 422), resp.text
