"""Per-route authentication for the wrapper: who is calling (a Principal) and what they may do (scopes).

A route declares `Auth(authenticator, mode, scopes)`; the authenticator is pluggable (admin API keys
today, shoppers' JWTs later), so the wrapper knows only the Bearer scheme and the error shapes:
401 + `WWW-Authenticate: Bearer` for missing or invalid credentials, 403 for a missing scope (RFC 6750).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from server.errors import Forbidden, Unauthorized

AuthMode = Literal["optional", "required"]
REALM = "catalog"
MAX_TOKEN_CHARS = 512  # far above any key or JWT we issue; longer headers are refused without a lookup


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a stable id (for audit), its scopes, and the key it is rate-limited by."""

    id: int
    kind: str  # "key" (admin API keys); "u" for shoppers later (ratelimit.user_key's prefix)
    name: str
    scopes: frozenset[str]

    @property
    def rate_key(self) -> str:
        """The limiter key of this caller: `key:<id>`, never colliding with `ip:`, `b6:` or `u:` keys."""
        return f"{self.kind}:{self.id}"


class Authenticator(Protocol):
    """Turns a bearer token into a Principal, or None when the token is not valid."""

    scheme: str  # the OpenAPI security scheme it implements, e.g. "bearerAuth"
    description: str  # how a client gets a token (shown in the OpenAPI scheme)

    async def authenticate(self, token: str) -> Principal | None:
        """The caller of `token`, or None (unknown, malformed, revoked, expired)."""
        ...


@dataclass(frozen=True, slots=True)
class Auth:
    """A route's authentication: which authenticator, whether a caller is required, which scopes."""

    authenticator: Authenticator
    mode: AuthMode = "required"
    scopes: tuple[str, ...] = ()


def challenge(error: str | None = None, scopes: tuple[str, ...] = ()) -> dict[str, str]:
    """The WWW-Authenticate header of a 401/403 (RFC 6750 section 3)."""
    value = f'Bearer realm="{REALM}"'
    if error:
        value += f', error="{error}"'
    if scopes:
        value += f', scope="{" ".join(scopes)}"'
    return {"WWW-Authenticate": value}


class _Headers(Protocol):
    def get(self, key: str) -> str | None: ...


def bearer_token(headers: _Headers) -> str | None:
    """The token of `Authorization: Bearer <token>`; None when absent; 401 when malformed."""
    raw = headers.get("authorization")
    if raw is None:
        return None
    scheme, _, token = raw.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS or " " in token:
        raise Unauthorized(
            "The Authorization header must be `Bearer <token>`.",
            "يجب أن تكون ترويسة Authorization بالشكل `Bearer <token>`.",
            headers=challenge("invalid_request"),
        )
    return token


async def identify(auth: Auth, headers: _Headers) -> tuple[Principal | None, Unauthorized | None]:
    """The caller and, when the request must be refused with 401, the error (the wrapper raises it after
    the rate limit, so that guessing keys is charged to the client's address)."""
    try:
        token = bearer_token(headers)
    except Unauthorized as exc:
        return None, exc
    if token is None:
        return None, missing() if auth.mode == "required" else None
    principal = await auth.authenticator.authenticate(token)
    return principal, invalid() if principal is None else None


def missing() -> Unauthorized:
    """401 for a request without credentials."""
    return Unauthorized(headers=challenge())


def invalid() -> Unauthorized:
    """401 for credentials that are not (or no longer) valid."""
    return Unauthorized(
        "The credentials are not valid: unknown, malformed, expired or revoked.",
        "بيانات الاعتماد غير صالحة: غير معروفة أو مشوّهة أو منتهية أو ملغاة.",
        headers=challenge("invalid_token"),
    )


def require_scopes(principal: Principal, scopes: tuple[str, ...]) -> None:
    """403 unless the principal holds every scope."""
    lacking = tuple(s for s in scopes if s not in principal.scopes)
    if lacking:
        raise Forbidden(
            f"These credentials lack the scope {', '.join(lacking)}.",
            f"لا تملك بيانات الاعتماد هذه الصلاحية {', '.join(lacking)}.",
            headers=challenge("insufficient_scope", scopes),
        )


__all__ = [
    "Auth",
    "AuthMode",
    "Authenticator",
    "Principal",
    "bearer_token",
    "challenge",
    "identify",
    "invalid",
    "missing",
    "require_scopes",
]
