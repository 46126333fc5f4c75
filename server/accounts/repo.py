"""Accounts SQL: users, refresh token families, MFA, mail tokens, the outbox. Inputs are $n parameters."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

# -- users ------------------------------------------------------------------------------------------

INSERT_USER = """
INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3)
ON CONFLICT (email) DO NOTHING RETURNING id
"""
USER_BY_EMAIL = """
SELECT id, email, password_hash, email_verified_at, mfa_enabled FROM users WHERE email = $1
"""
USER_BY_ID = """
SELECT id, email, name, password_hash, email_verified_at, mfa_enabled, created_at,
       totp_secret, totp_key_id, totp_pending, totp_pending_key_id, totp_last_step
FROM users WHERE id = $1
"""
SET_PW_HASH = "UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1"
# Only if nobody changed the password meanwhile (a rehash must not undo a password change).
REHASH = "UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3"
VERIFY_EMAIL = "UPDATE users SET email_verified_at = coalesce(email_verified_at, now()) WHERE id = $1"
SET_TOTP_PENDING = "UPDATE users SET totp_pending = $2, totp_pending_key_id = $3 WHERE id = $1"
ENABLE_MFA = """
UPDATE users SET totp_secret = totp_pending, totp_key_id = totp_pending_key_id, totp_pending = NULL,
    totp_pending_key_id = NULL, mfa_enabled = true, totp_last_step = $2
WHERE id = $1 AND totp_pending IS NOT NULL
"""
DISABLE_MFA = """
UPDATE users SET mfa_enabled = false, totp_secret = NULL, totp_key_id = NULL, totp_pending = NULL,
    totp_pending_key_id = NULL
WHERE id = $1
"""
# A secret sealed with a key that is no longer the active one, sealed again with the active one.
RESEAL_TOTP = "UPDATE users SET totp_secret = $2, totp_key_id = $3 WHERE id = $1 AND totp_key_id = $4"
# Each 30 s step once per user: the code of a step at or before the last one accepted is refused.
USE_TOTP_STEP = "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2 RETURNING id"

# -- refresh tokens ---------------------------------------------------------------------------------

INSERT_REFRESH = """
INSERT INTO refresh_tokens (user_id, family, hash, expires_at) VALUES ($1, $2, $3, $4)
"""
REFRESH_FOR_UPDATE = """
SELECT id, user_id, family, expires_at, expires_at <= now() AS expired, used_at, revoked_at
FROM refresh_tokens WHERE hash = $1 FOR UPDATE
"""
MARK_REFRESH_USED = "UPDATE refresh_tokens SET used_at = now() WHERE id = $1"
REVOKE_FAMILY = """
UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family = $1 AND user_id = $2
"""
REVOKE_USER = "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"

# -- MFA --------------------------------------------------------------------------------------------

INSERT_CHALLENGE = """
INSERT INTO mfa_challenges (hash, user_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
"""
# One try of a challenge: counted before the code is checked, refused once `$2` tries were made.
TRY_CHALLENGE = """
UPDATE mfa_challenges SET attempts = attempts + 1
WHERE hash = $1 AND used_at IS NULL AND expires_at > now() AND attempts < $2
RETURNING user_id
"""
USE_CHALLENGE = "UPDATE mfa_challenges SET used_at = now() WHERE hash = $1"
DELETE_RECOVERY = "DELETE FROM recovery_codes WHERE user_id = $1"
INSERT_RECOVERY = "INSERT INTO recovery_codes (user_id, hash) SELECT $1, h FROM unnest($2::bytea[]) AS h"
USE_RECOVERY = """
UPDATE recovery_codes SET used_at = now() WHERE user_id = $1 AND hash = $2 AND used_at IS NULL RETURNING id
"""
RECOVERY_LEFT = "SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL"

# -- mail tokens and outbox -------------------------------------------------------------------------

INSERT_MAIL_LINK = """
INSERT INTO email_tokens (hash, user_id, purpose, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
"""
USE_MAIL_LINK = """
UPDATE email_tokens SET used_at = now()
WHERE hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
RETURNING user_id
"""
# A new reset link (or a finished reset) makes the older ones of the same account useless.
RETIRE_MAIL_LINKS = """
UPDATE email_tokens SET used_at = now() WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL
"""
INSERT_MAIL = "INSERT INTO mail_outbox (to_addr, subject, body) VALUES ($1, $2, $3)"
# Claim a batch: rows another sender claimed in the last minute are skipped, as are locked ones.
CLAIM_MAIL = """
UPDATE mail_outbox SET claimed_at = now(), attempts = attempts + 1
WHERE id IN (
    SELECT id FROM mail_outbox
    WHERE sent_at IS NULL AND attempts < 10 AND (claimed_at IS NULL OR claimed_at < now() - interval '60 s')
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, to_addr, subject, body
"""
MAIL_SENT = "UPDATE mail_outbox SET sent_at = now(), body = '' WHERE id = $1"
MAIL_FAILED = "UPDATE mail_outbox SET last_error = $2, claimed_at = NULL WHERE id = $1"


async def insert_user(
    conn: asyncpg.Connection, email: str, name: str | None, password_hash: str
) -> int | None:
    """The new user's id, or None when the email is taken."""
    value = await conn.fetchval(INSERT_USER, email, name, password_hash)
    return None if value is None else int(value)


async def user_by_email(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    """(id, email, password_hash, email_verified_at, mfa_enabled), or None."""
    return await conn.fetchrow(USER_BY_EMAIL, email)


async def user_by_id(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    """The whole user row, or None."""
    return await conn.fetchrow(USER_BY_ID, user_id)


async def set_password(conn: asyncpg.Connection, user_id: int, password_hash: str) -> None:
    """Store a new password hash."""
    await conn.execute(SET_PW_HASH, user_id, password_hash)


async def rehash(conn: asyncpg.Connection, user_id: int, new: str, old: str) -> None:
    """Replace the hash `old` by `new` (same password, current parameters)."""
    await conn.execute(REHASH, user_id, new, old)


async def verify_email(conn: asyncpg.Connection, user_id: int) -> None:
    """Mark the address verified (idempotent)."""
    await conn.execute(VERIFY_EMAIL, user_id)


async def set_totp_pending(conn: asyncpg.Connection, user_id: int, sealed: bytes, key_id: str) -> None:
    """Store a set-up secret awaiting its first code."""
    await conn.execute(SET_TOTP_PENDING, user_id, sealed, key_id)


async def enable_mfa(conn: asyncpg.Connection, user_id: int, step: int) -> bool:
    """Make the pending secret the enabled one; False when there was none."""
    return str(await conn.execute(ENABLE_MFA, user_id, step)).endswith(" 1")


async def disable_mfa(conn: asyncpg.Connection, user_id: int) -> None:
    """Remove the secret and every recovery code."""
    await conn.execute(DISABLE_MFA, user_id)
    await conn.execute(DELETE_RECOVERY, user_id)


async def reseal_totp(
    conn: asyncpg.Connection, user_id: int, sealed: bytes, key_id: str, old_key_id: str
) -> None:
    """Store the secret sealed with the active key (unless another request did already)."""
    await conn.execute(RESEAL_TOTP, user_id, sealed, key_id, old_key_id)


async def use_totp_step(conn: asyncpg.Connection, user_id: int, step: int) -> bool:
    """Record `step` as used; False when it (or a later one) was used already."""
    return await conn.fetchval(USE_TOTP_STEP, user_id, step) is not None


async def insert_refresh(
    conn: asyncpg.Connection, user_id: int, family: uuid.UUID, digest: bytes, expires_at: datetime
) -> None:
    """Store a refresh token's hash in its family."""
    await conn.execute(INSERT_REFRESH, user_id, family, digest, expires_at)


async def refresh_for_update(conn: asyncpg.Connection, digest: bytes) -> asyncpg.Record | None:
    """The refresh token row, locked; None if unknown."""
    return await conn.fetchrow(REFRESH_FOR_UPDATE, digest)


async def mark_refresh_used(conn: asyncpg.Connection, token_id: int) -> None:
    """Mark a refresh token used (presenting it again revokes its family)."""
    await conn.execute(MARK_REFRESH_USED, token_id)


async def revoke_family(conn: asyncpg.Connection, family: uuid.UUID, user_id: int) -> None:
    """Revoke every token of one sign-in."""
    await conn.execute(REVOKE_FAMILY, family, user_id)


async def revoke_user(conn: asyncpg.Connection, user_id: int) -> None:
    """Revoke every refresh token of a user."""
    await conn.execute(REVOKE_USER, user_id)


async def insert_challenge(conn: asyncpg.Connection, digest: bytes, user_id: int, ttl_s: int) -> None:
    """Start an MFA step."""
    await conn.execute(INSERT_CHALLENGE, digest, user_id, ttl_s)


async def try_challenge(conn: asyncpg.Connection, digest: bytes, max_tries: int) -> int | None:
    """Count one try; the user id, or None when the challenge is unknown, used, expired or exhausted."""
    value = await conn.fetchval(TRY_CHALLENGE, digest, max_tries)
    return None if value is None else int(value)


async def use_challenge(conn: asyncpg.Connection, digest: bytes) -> None:
    """Close an MFA step that succeeded."""
    await conn.execute(USE_CHALLENGE, digest)


async def replace_recovery(conn: asyncpg.Connection, user_id: int, digests: list[bytes]) -> None:
    """Replace the user's recovery codes."""
    await conn.execute(DELETE_RECOVERY, user_id)
    await conn.execute(INSERT_RECOVERY, user_id, digests)


async def use_recovery(conn: asyncpg.Connection, user_id: int, digest: bytes) -> bool:
    """Spend one recovery code; False when unknown or spent."""
    return await conn.fetchval(USE_RECOVERY, user_id, digest) is not None


async def recovery_left(conn: asyncpg.Connection, user_id: int) -> int:
    """Unused recovery codes."""
    return int(await conn.fetchval(RECOVERY_LEFT, user_id))


async def insert_email_token(
    conn: asyncpg.Connection, digest: bytes, user_id: int, purpose: str, ttl_s: int
) -> None:
    """Store a mail token's hash."""
    await conn.execute(INSERT_MAIL_LINK, digest, user_id, purpose, ttl_s)


async def use_email_token(conn: asyncpg.Connection, digest: bytes, purpose: str) -> int | None:
    """Spend a mail token; its user id, or None when unknown, spent or expired."""
    value = await conn.fetchval(USE_MAIL_LINK, digest, purpose)
    return None if value is None else int(value)


async def retire_email_tokens(conn: asyncpg.Connection, user_id: int, purpose: str) -> None:
    """Spend every open token of this purpose."""
    await conn.execute(RETIRE_MAIL_LINKS, user_id, purpose)


async def insert_mail(conn: asyncpg.Connection, to: str, subject: str, body: str) -> None:
    """Queue one mail."""
    await conn.execute(INSERT_MAIL, to, subject, body)


async def pending_mail(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Claim up to `limit` mails to send."""
    return list(await conn.fetch(CLAIM_MAIL, limit))


async def mail_sent(conn: asyncpg.Connection, mail_id: int) -> None:
    """Mark a mail delivered and erase its body."""
    await conn.execute(MAIL_SENT, mail_id)


async def mail_failed(conn: asyncpg.Connection, mail_id: int, error: str) -> None:
    """Record a failed delivery (retried by a later flush)."""
    await conn.execute(MAIL_FAILED, mail_id, error)
