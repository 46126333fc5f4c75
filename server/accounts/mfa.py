"""MFA: TOTP set-up and enabling, the sign-in's second step (5 tries per mfa_token), disabling, and
recovery codes (10, shown once, stored hashed, each usable once)."""

from __future__ import annotations

from typing import Any

import asyncpg

from server.accounts import passwords, repo, tokens, totp
from server.accounts.service import Accounts, bad_session, invalid
from server.db.pool import ServicePool
from server.errors import Unauthorized

MAX_TRIES = 5


def _bad_code(field: str = "body.code") -> Exception:
    return invalid(field, "is not a valid code", "الرمز غير صالح")


async def _user(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record:
    user = await repo.user_by_id(conn, user_id)
    if user is None:
        raise bad_session()
    return user


async def _check_code(
    accounts: Accounts, conn: asyncpg.Connection, user: asyncpg.Record, code: str, *, pending: bool = False
) -> int | None:
    """The step of a valid, unused code of the user's (enabled or pending) secret, recorded as used."""
    column = "totp_pending" if pending else "totp_secret"
    sealed, key_id = user[column], user[f"{column}_key_id" if pending else "totp_key_id"]
    if sealed is None:
        return None
    secret = totp.unseal(accounts.totp_ring, bytes(sealed), key_id, user["id"])
    if secret is None:
        return None
    step = totp.matching_step(secret, code.strip())
    if step is None or not await repo.use_totp_step(conn, user["id"], step):
        return None  # wrong, outside the window, or this step was used already (replay)
    if not pending and key_id != accounts.totp_ring.active:
        # Key rotation: each secret moves to the active key at its next use, so old keys can be retired.
        sealed, active = totp.seal(accounts.totp_ring, secret, user["id"])
        await repo.reseal_totp(conn, user["id"], sealed, active, key_id)
    return step


async def setup(accounts: Accounts, pool: ServicePool, *, user_id: int) -> dict[str, Any]:
    """A new secret (pending until /mfa/enable confirms a code from it): base32, URI and SVG QR code."""
    secret = totp.new_secret()
    async with pool.acquire() as conn:
        user = await _user(conn, user_id)
        if user["mfa_enabled"]:
            raise invalid(
                "body", "is already enabled; disable it first", "المصادقة الثنائية مفعّلة بالفعل؛ عطّلها أولاً"
            )
        sealed, key_id = totp.seal(accounts.totp_ring, secret, user_id)
        await repo.set_totp_pending(conn, user_id, sealed, key_id)
    uri = totp.otpauth_uri(secret, user["email"])
    return {"secret": totp.b32(secret), "otpauth_uri": uri, "qr_svg": totp.qr_svg(uri)}


async def _new_codes(conn: asyncpg.Connection, user_id: int) -> list[str]:
    codes = totp.new_recovery_codes()
    await repo.replace_recovery(conn, user_id, [totp.recovery_digest(c) for c in codes])
    return codes


async def enable(accounts: Accounts, pool: ServicePool, *, user_id: int, code: str) -> dict[str, Any]:
    """Confirm the pending secret with a code; the 10 recovery codes (shown this once)."""
    async with pool.acquire() as conn, conn.transaction():
        user = await _user(conn, user_id)
        if user["mfa_enabled"]:
            raise invalid("body", "is already enabled", "المصادقة الثنائية مفعّلة بالفعل")
        if user["totp_pending"] is None:
            raise invalid("body", "call /api/auth/mfa/setup first", "استدعِ /api/auth/mfa/setup أولاً")
        step = await _check_code(accounts, conn, user, code, pending=True)
        if step is None:
            raise _bad_code()
        await repo.enable_mfa(conn, user_id, step)
        codes = await _new_codes(conn, user_id)
    return {"mfa_enabled": True, "recovery_codes": codes}


async def verify(
    accounts: Accounts, pool: ServicePool, *, mfa_token: str, code: str | None, recovery_code: str | None
) -> dict[str, Any]:
    """The sign-in's second step: a TOTP code or a recovery code; tokens. Each try counts against the
    mfa_token (5 at most), committed even when the code is wrong."""
    digest = tokens.digest(mfa_token)
    async with pool.acquire() as conn:
        user_id = await repo.try_challenge(conn, digest, MAX_TRIES)
        if user_id is None:
            raise bad_session()
        async with conn.transaction():
            user = await _user(conn, user_id)
            if recovery_code is not None:
                ok = await repo.use_recovery(conn, user_id, totp.recovery_digest(recovery_code))
            else:
                ok = await _check_code(accounts, conn, user, code or "") is not None
            if ok:
                await repo.use_challenge(conn, digest)
                return await accounts.issue(conn, user_id)
    raise Unauthorized(
        "The code is wrong, expired or already used.",
        "الرمز خاطئ أو منتهي الصلاحية أو مستخدم من قبل.",
        headers={"WWW-Authenticate": 'Bearer realm="catalog", error="invalid_grant"'},
    )


async def disable(
    accounts: Accounts, pool: ServicePool, *, user_id: int, password: str, code: str
) -> dict[str, Any]:
    """Turn MFA off: needs the password and a current code (or a recovery code)."""
    async with pool.acquire() as conn:
        user = await _user(conn, user_id)
    ok, _ = await accounts.hasher.verify(user["password_hash"], passwords.normalize(password))
    if not ok:
        raise invalid("body.password", "is not your password", "ليست كلمة المرور الخاصة بك")
    async with pool.acquire() as conn, conn.transaction():
        if not user["mfa_enabled"]:
            raise invalid("body", "is not enabled", "المصادقة الثنائية غير مفعّلة")
        if await _check_code(accounts, conn, user, code) is None and not await repo.use_recovery(
            conn, user_id, totp.recovery_digest(code)
        ):
            raise _bad_code()
        await repo.disable_mfa(conn, user_id)
    return {"mfa_enabled": False}


async def regenerate(accounts: Accounts, pool: ServicePool, *, user_id: int, code: str) -> dict[str, Any]:
    """Replace the recovery codes (the old ones stop working); needs a current code."""
    async with pool.acquire() as conn, conn.transaction():
        user = await _user(conn, user_id)
        if not user["mfa_enabled"]:
            raise invalid("body", "is not enabled", "المصادقة الثنائية غير مفعّلة")
        if await _check_code(accounts, conn, user, code) is None:
            raise _bad_code()
        codes = await _new_codes(conn, user_id)
    return {"mfa_enabled": True, "recovery_codes": codes}
