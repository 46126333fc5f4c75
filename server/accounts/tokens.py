"""Access tokens (JWT, HS256, `kid` header) checked without I/O, and opaque random tokens stored hashed.

An access token is verified with the key ring alone (no PostgreSQL, no Redis), so a signed-in catalog
request costs one HMAC. Keys rotate without signing anyone out: every key of the ring verifies, the active
one signs. Refresh, mail and MFA tokens are 256-bit random values; only their SHA-256 is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from server.accounts.keys import KeyRing
from server.auth import Principal

ISSUER = "catalog"
MAX_JWT_CHARS = 1024
USER_SCOPES = frozenset({"account"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def opaque() -> str:
    """A new 256-bit random token (43 base64url characters)."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    """SHA-256 of a token: what is stored (a 256-bit random value needs no slow hash)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class UserPrincipal(Principal):
    """A signed-in shopper: rate-limited as `user:<id>`; `session` is the sign-in's refresh family."""

    session: str = ""


@dataclass(frozen=True, slots=True)
class Claims:
    """What an access token says."""

    user_id: int
    session: str
    expires: int


def sign(ring: KeyRing, *, user_id: int, session: str, ttl_s: int, now: float | None = None) -> str:
    """A JWT for this user and session, signed with the ring's active key."""
    issued = int(time.time() if now is None else now)
    header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": ring.active}))
    payload = _b64(
        orjson.dumps(
            {"iss": ISSUER, "sub": str(user_id), "sid": session, "iat": issued, "exp": issued + ttl_s}
        )
    )
    signing = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{_b64(hmac.new(ring.active_key, signing, hashlib.sha256).digest())}"


def verify(ring: KeyRing, token: str, now: float | None = None) -> Claims | None:
    """The claims of a valid, unexpired token signed by a key of the ring; None otherwise."""
    if len(token) > MAX_JWT_CHARS or token.count(".") != 2:
        return None
    header_b64, payload_b64, sig_b64 = token.split(".")
    try:
        header = orjson.loads(_unb64(header_b64))
        key = ring.keys.get(str(header.get("kid"))) if isinstance(header, dict) else None
        if key is None or header.get("alg") != "HS256":  # never "none", never another algorithm
            return None
        expected = hmac.new(key, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(sig_b64)):
            return None
        claims = orjson.loads(_unb64(payload_b64))
        exp, sub, sid = claims["exp"], claims["sub"], claims["sid"]
        if claims.get("iss") != ISSUER or not isinstance(exp, int) or not isinstance(sid, str):
            return None
        if exp <= (time.time() if now is None else now):
            return None
        return Claims(int(sub), sid, exp)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


VERIFIED_MEMO_ENTRIES = 10_000  # per process: a few MB at most


class AccessTokens:
    """The `userBearer` authenticator of account routes (server.auth.Authenticator): no I/O."""

    scheme = "userBearer"
    description = (
        "A shopper's access token (JWT, at most 15 minutes), `Authorization: Bearer <access_token>`, from "
        "POST /api/auth/login, /api/auth/mfa/verify or /api/auth/refresh."
    )

    def __init__(self, ring: Callable[[], KeyRing]) -> None:
        self._ring = ring  # resolved on first use (a development key may need DATA_DIR)
        # Tokens verified before, with their principal, expiry and the ring that verified them: a shopper
        # sends the same token for up to 15 minutes, and verifying it (base64, JSON, HMAC) was most of the
        # 12-17 % a signed-in catalog request cost over an anonymous one. Only valid tokens get in (what an
        # attacker sends is verified and dropped), keys are at most MAX_JWT_CHARS, entries bounded.
        self._verified: dict[str, tuple[UserPrincipal, int, KeyRing]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        """The token's user, or None for a malformed, forged or expired token."""
        ring = self._ring()
        hit = self._verified.get(token)
        if hit is not None:
            principal, exp, verified_by = hit
            if exp > time.time() and verified_by is ring:
                return principal
            del self._verified[token]
        claims = verify(ring, token)
        if claims is None:
            return None
        principal = UserPrincipal(claims.user_id, "user", "", USER_SCOPES, claims.session)
        if len(self._verified) >= VERIFIED_MEMO_ENTRIES:
            self._verified.clear()
        self._verified[token] = (principal, claims.expires, ring)
        return principal
