"""Accounts logic: sign-up, e-mail verification, sign-in, sessions, passwords. MFA lives in mfa.py.

No answer tells whether an email has an account: sign-up and reset requests always answer 202 with the
same body, and a failed sign-in (unknown email, wrong password, unverified address) answers the same 401
after the same work (an unknown email is checked against a dummy hash of the same cost). Passwords are
hashed in the bounded pool (passwords.Hasher), and no database connection is held while they are.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from server.accounts import passwords, repo, tokens
from server.accounts.keys import KeyRing, ring
from server.accounts.mail import Mailer
from server.accounts.passwords import Hasher
from server.accounts.schemas import EMAIL_PATTERN
from server.accounts.throttle import Throttle
from server.auth import challenge
from server.db.pool import ServicePool
from server.errors import FieldError, RateLimited, Unauthorized, ValidationFailed
from server.settings import Settings

EMAIL_RE = re.compile(EMAIL_PATTERN)  # the pattern OpenAPI documents (schemas.EMAIL)
ACCEPTED = {"status": "accepted", "detail": "If this address can be used, a mail is on its way to it."}


def bad_login() -> Unauthorized:
    """The one answer of every failed sign-in."""
    return Unauthorized(
        "The email or password is wrong, or the address is not verified yet.",
        "البريد الإلكتروني أو كلمة المرور غير صحيحة، أو لم يتم تأكيد العنوان بعد.",
        headers=challenge("invalid_grant"),
    )


def bad_session() -> Unauthorized:
    """401 for an unknown, used, revoked or expired refresh token or MFA token."""
    return Unauthorized(
        "This token is not valid: sign in again.",
        "هذا الرمز غير صالح: سجّل الدخول من جديد.",
        headers=challenge("invalid_token"),
    )


def invalid(field: str, en: str, ar: str) -> ValidationFailed:
    """422 naming one body member."""
    return ValidationFailed(errors=[FieldError(field, en, ar)])


def normalize_email(raw: str, field: str = "body.email") -> str:
    """NFKC, trimmed, lowercased; 422 when it does not look like an address."""
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    if len(email) > 254 or not EMAIL_RE.fullmatch(email):
        raise invalid(field, "must be an email address", "يجب أن يكون عنوان بريد إلكتروني")
    return email


class Accounts:
    """The account service of one process: hasher, key rings, mailer, throttle and the TTLs."""

    def __init__(self, settings: Settings, throttle: Throttle) -> None:
        s = settings
        self.settings = s
        self.hasher = Hasher.from_settings(s)
        self.mailer = Mailer.from_settings(s)
        self.throttle = throttle
        self.access_ttl_s = s.AUTH_ACCESS_TTL_S
        self.refresh_ttl_s = s.AUTH_REFRESH_TTL_S
        self.link_base = (s.ACCOUNT_LINK_BASE_URL or s.PUBLIC_BASE_URL).rstrip("/")

    @functools.cached_property
    def jwt_ring(self) -> KeyRing:
        """Signing keys (resolved on first use: a development key is read from DATA_DIR)."""
        s = self.settings
        return ring(s.AUTH_JWT_KEYS, s.AUTH_JWT_ACTIVE_KID, s.DATA_DIR, "jwt")

    @functools.cached_property
    def totp_ring(self) -> KeyRing:
        """TOTP sealing keys."""
        s = self.settings
        return ring(s.AUTH_TOTP_KEYS, s.AUTH_TOTP_ACTIVE_KID, s.DATA_DIR, "totp")

    # -- sign-up ---------------------------------------------------------------------------------------

    async def register(
        self, pool: ServicePool, *, email: str, password: str, name: str | None
    ) -> dict[str, Any]:
        """Create the account (unverified) and mail a link; an existing address gets a notice instead."""
        email = normalize_email(email)
        password = await passwords.check_policy_off_loop(password, "body.password")
        hashed = await self.hasher.hash(password)  # also for a taken address: the same cost either way
        async with pool.acquire() as conn, conn.transaction():
            user_id = await repo.insert_user(conn, email, name, hashed)
            if user_id is None:
                user = await repo.user_by_email(conn, email)
                if user is not None and user["email_verified_at"] is None:
                    await self._mail_token(conn, user["id"], email, "verify")
                else:
                    await repo.insert_mail(
                        conn,
                        email,
                        "You already have an account",
                        "Someone (maybe you) tried to sign up with this address, which already has an "
                        f"account. Sign in, or reset your password: {self.link_base}/password-reset\n",
                    )
            else:
                await self._mail_token(conn, user_id, email, "verify")
        self.mailer.kick(pool)
        return ACCEPTED

    async def _mail_token(self, conn: asyncpg.Connection, user_id: int, email: str, purpose: str) -> None:
        token = tokens.opaque()
        s = self.settings
        ttl = s.AUTH_VERIFY_TOKEN_TTL_S if purpose == "verify" else s.AUTH_RESET_TOKEN_TTL_S
        await repo.retire_email_tokens(conn, user_id, purpose)
        await repo.insert_email_token(conn, tokens.digest(token), user_id, purpose, ttl)
        if purpose == "verify":
            subject, page, what = "Confirm your email address", "verify-email", "confirm your address"
        else:
            subject, page, what = "Reset your password", "password-reset", "choose a new password"
        body = (
            f"Open this link to {what} (valid for {ttl // 60} minutes, once):\n"
            f"{self.link_base}/{page}?token={token}\n\nToken: {token}\n\n"
            "If you did not ask for this, ignore this mail.\n"
        )
        await repo.insert_mail(conn, email, subject, body)

    async def verify_email(self, pool: ServicePool, *, token: str) -> dict[str, Any]:
        """Spend a verification token and mark the address verified."""
        async with pool.acquire() as conn, conn.transaction():
            user_id = await repo.use_email_token(conn, tokens.digest(token), "verify")
            if user_id is None:
                raise _bad_mail_token()
            await repo.verify_email(conn, user_id)
        return {"status": "verified"}

    # -- sign-in and sessions --------------------------------------------------------------------------

    async def login(self, pool: ServicePool, *, email: str, password: str, mfa_ttl_s: int) -> dict[str, Any]:
        """Tokens, or an MFA challenge; the same 401 for every failure; 429 while throttled."""
        email = normalize_email(email)
        password = passwords.normalize(password)
        self.hasher.admit()  # 503 before any Redis or SQL work when hashing is at its cap
        wait = await self.throttle.wait_s(email)
        if wait:
            self.hasher.refund()  # a throttled try hashes nothing: it must not use up others' share
            raise RateLimited(
                "Too many failed sign-ins for this account; retry after the time in Retry-After.",
                "محاولات دخول فاشلة كثيرة لهذا الحساب؛ أعد المحاولة بعد المدة المذكورة في Retry-After.",
                headers={"Retry-After": str(wait)},
            )
        async with pool.acquire() as conn:
            user = await repo.user_by_email(conn, email)
        stored = user["password_hash"] if user is not None else None
        ok, new_hash = await self.hasher.verify(stored, password, admitted=True)
        if not ok or user is None or user["email_verified_at"] is None:
            await self.throttle.failed(email)
            raise bad_login()
        await self.throttle.succeeded(email)
        async with pool.acquire() as conn:
            if new_hash is not None and stored is not None:
                await repo.rehash(conn, user["id"], new_hash, stored)
            if user["mfa_enabled"]:
                mfa_token = tokens.opaque()
                await repo.insert_challenge(conn, tokens.digest(mfa_token), user["id"], mfa_ttl_s)
                return {"mfa_required": True, "mfa_token": mfa_token, "expires_in": mfa_ttl_s}
            return {"mfa_required": False, **await self.issue(conn, user["id"])}

    async def issue(
        self,
        conn: asyncpg.Connection,
        user_id: int,
        family: uuid.UUID | None = None,
        expires_at: datetime | None = None,
    ) -> dict[str, Any]:
        """A new access token and refresh token (a new family, or the next token of `family`)."""
        family = family or uuid.uuid4()
        expires_at = expires_at or datetime.now(UTC) + timedelta(seconds=self.refresh_ttl_s)
        refresh = tokens.opaque()
        await repo.insert_refresh(conn, user_id, family, tokens.digest(refresh), expires_at)
        access = tokens.sign(self.jwt_ring, user_id=user_id, session=str(family), ttl_s=self.access_ttl_s)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_ttl_s,
            "refresh_token": refresh,
            "refresh_expires_at": expires_at.isoformat(),
        }

    async def refresh(self, pool: ServicePool, *, refresh_token: str) -> dict[str, Any]:
        """Rotate: the token is spent and a new pair issued; a spent token presented again revokes its
        whole family (someone else holds a copy)."""
        async with pool.acquire() as conn:
            async with conn.transaction():
                row = await repo.refresh_for_update(conn, tokens.digest(refresh_token))
                if row is None or row["revoked_at"] is not None or row["expired"]:
                    raise bad_session()
                if row["used_at"] is None:
                    await repo.mark_refresh_used(conn, row["id"])
                    return await self.issue(conn, row["user_id"], row["family"], row["expires_at"])
                await repo.revoke_family(conn, row["family"], row["user_id"])
            raise bad_session()  # after the commit: the revocation stays

    async def logout(
        self, pool: ServicePool, *, user_id: int, session: str, everywhere: bool
    ) -> dict[str, Any]:
        """Revoke this sign-in's refresh tokens (or every sign-in's); access tokens expire on their own."""
        async with pool.acquire() as conn:
            if everywhere:
                await repo.revoke_user(conn, user_id)
            else:
                try:
                    await repo.revoke_family(conn, uuid.UUID(session), user_id)
                except ValueError:
                    raise bad_session() from None
        return {"status": "signed_out"}

    async def me(self, pool: ServicePool, *, user_id: int) -> dict[str, Any]:
        """The signed-in user's profile."""
        async with pool.acquire() as conn:
            user = await repo.user_by_id(conn, user_id)
            left = await repo.recovery_left(conn, user_id)
        if user is None:
            raise bad_session()
        return {
            "id": user["id"],
            "email": user["email"],
            "name": user["name"],
            "email_verified": user["email_verified_at"] is not None,
            "mfa_enabled": user["mfa_enabled"],
            "recovery_codes_left": left,
            "created_at": user["created_at"].isoformat(),
        }

    # -- passwords -------------------------------------------------------------------------------------

    async def change_password(
        self, pool: ServicePool, *, user_id: int, current: str, new: str
    ) -> dict[str, Any]:
        """Check the current password, store the new one, sign out every session."""
        new = await passwords.check_policy_off_loop(new, "body.new")
        async with pool.acquire() as conn:
            user = await repo.user_by_id(conn, user_id)
        if user is None:
            raise bad_session()
        ok, _ = await self.hasher.verify(user["password_hash"], passwords.normalize(current))
        if not ok:
            raise invalid("body.current", "is not your current password", "ليست كلمة المرور الحالية")
        hashed = await self.hasher.hash(new)
        async with pool.acquire() as conn, conn.transaction():
            await repo.set_password(conn, user_id, hashed)
            await repo.revoke_user(conn, user_id)
        return {"status": "changed"}

    async def reset_request(self, pool: ServicePool, *, email: str) -> dict[str, Any]:
        """Mail a reset link when the address has an account; the same 202 either way."""
        email = normalize_email(email)
        async with pool.acquire() as conn, conn.transaction():
            user = await repo.user_by_email(conn, email)
            if user is not None:
                await self._mail_token(conn, user["id"], email, "reset")
        if user is not None:
            self.mailer.kick(pool)
        return ACCEPTED

    async def reset_confirm(self, pool: ServicePool, *, token: str, new_password: str) -> dict[str, Any]:
        """Spend the token, set the password, sign out everywhere. MFA stays on: the next sign-in still
        asks for the second factor."""
        new_password = await passwords.check_policy_off_loop(new_password, "body.new_password")
        hashed = await self.hasher.hash(new_password)
        async with pool.acquire() as conn, conn.transaction():
            user_id = await repo.use_email_token(conn, tokens.digest(token), "reset")
            if user_id is None:
                raise _bad_mail_token()
            await repo.set_password(conn, user_id, hashed)
            await repo.verify_email(conn, user_id)  # the link proved the mailbox is theirs
            await repo.retire_email_tokens(conn, user_id, "reset")
            await repo.revoke_user(conn, user_id)
        return {"status": "changed"}


def _bad_mail_token() -> ValidationFailed:
    return invalid(
        "body.token",
        "is not valid: unknown, used or expired",
        "غير صالح: غير معروف أو مستخدم أو منتهي الصلاحية",
    )
