"""Admin API keys: made (`cat_<prefix>_<secret>`, 256 random bits), stored as SHA-256, checked per request.

Checking a key costs one indexed query by prefix and a constant-time comparison of digests; there is no
cache, so a revocation takes effect on the next request in every process and instance. `last_used_at` is
written at most once per KEY_TOUCH_S per key: each process remembers when it last touched a key (a
bounded dict), and the UPDATE itself skips a key touched recently by another process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from server.admin import repo
from server.auth import Principal
from server.db.pool import ServicePool

KEY_PREFIX = "cat"
PREFIX_BYTES = 6  # 12 hex characters: finds the row; not secret
SECRET_BYTES = 32  # 256 bits
KEY_RE = re.compile(r"cat_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
# Every scope a key may hold. Routes declare the ones they need (Auth.scopes).
SCOPES: dict[str, str] = {
    "catalog:write": "change products, prices, stock and images (/api/admin/products/...)",
    "sync:run": "start and watch the Zoho sync (/api/admin/sync...)",
}
KEY_TOUCH_S = 60.0
_TOUCH_MEMO_MAX = 10_000


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: the secret string (shown once), and what is stored."""

    key: str
    prefix: str
    digest: bytes


def digest(key: str) -> bytes:
    """SHA-256 of the whole key string (a 256-bit random secret needs no slow hash)."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> NewKey:
    """A new random key."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    key = f"{KEY_PREFIX}_{prefix}_{secret}"
    return NewKey(key, prefix, digest(key))


def parse_scopes(text: str) -> list[str]:
    """`catalog:write,sync:run` -> sorted unique scopes; ValueError naming an unknown one."""
    scopes = sorted({s.strip() for s in text.split(",") if s.strip()})
    if not scopes:
        raise ValueError(f"give at least one scope of: {', '.join(SCOPES)}")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return scopes


def check_name(name: str) -> str:
    """A key's label: 1-100 printable characters."""
    name = name.strip()
    if not NAME_RE.fullmatch(name):
        raise ValueError("the name must be 1-100 printable characters")
    return name


async def create(conn: asyncpg.Connection, *, name: str, scopes: list[str]) -> tuple[NewKey, asyncpg.Record]:
    """Make and store a key; (the key, its row's id and created_at). Retries the rare prefix clash."""
    for _ in range(5):
        made = new_key()
        try:
            row = await repo.insert_key(
                conn, name=name, prefix=made.prefix, digest=made.digest, scopes=scopes
            )
        except asyncpg.UniqueViolationError:
            continue
        return made, row
    raise RuntimeError("could not find a free key prefix")  # pragma: no cover - 2^48 prefixes


class ApiKeys:
    """The `bearerAuth` authenticator of admin routes (server.auth.Authenticator)."""

    scheme = "bearerAuth"
    description = (
        "An admin API key, `Authorization: Bearer cat_<prefix>_<secret>`, made with "
        "`python -m server admin-key create --name NAME --scopes catalog:write,sync:run`."
    )

    def __init__(self, pool: Callable[[], ServicePool], touch_s: float = KEY_TOUCH_S) -> None:
        self._pool = pool  # this process's pool, known only once it started
        self.touch_s = touch_s
        self._touched: dict[int, float] = {}

    async def authenticate(self, token: str) -> Principal | None:
        """The key's Principal, or None for a malformed, unknown or revoked key."""
        match = KEY_RE.fullmatch(token)
        if match is None:
            return None  # no query for what cannot be a key
        async with self._pool().acquire() as conn:
            row = await repo.active_key(conn, match[1])
            if row is None or not hmac.compare_digest(bytes(row["hash"]), digest(token)):
                return None
            now = time.monotonic()
            if now - self._touched.get(row["id"], -self.touch_s) >= self.touch_s:
                if len(self._touched) >= _TOUCH_MEMO_MAX:
                    self._touched.clear()
                self._touched[row["id"]] = now
                await repo.touch_key(conn, row["id"], self.touch_s)
        return Principal(row["id"], "key", row["name"], frozenset(row["scopes"]))
