"""Zoho OAuth access tokens: minted with the refresh-token grant, shared by every process and run.

With a PostgreSQL pool the token lives in `zoho_tokens`: a process reads it there, and mints under an
advisory lock (so two processes that find it stale mint once), recording every mint so that all of them
together stay under Zoho's cap of 10 access tokens per 10 minutes per refresh token. Without a pool the same
rules hold for this process only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from server.sync import zoho_repo
from server.sync.zoho_errors import ZohoAuthError

log = logging.getLogger("server.sync.tokens")

MINT_CAP = 10  # Zoho: at most 10 access tokens per 10 minutes per refresh token
MINT_WINDOW_S = 600.0
# A token is replaced this long before it expires, so no call is sent with one about to die.
REFRESH_MARGIN_S = 300.0

Clock = Callable[[], datetime]
_Save = Callable[[str | None, datetime | None, datetime | None, list[datetime]], Awaitable[None]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TokenBroker:
    """Gives a valid access token; mints one only when none is shared and fresh, within the cap."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: SecretStr,
        refresh_token: SecretStr,
        accounts_base: str,
        http: httpx.AsyncClient,
        pool: Any = None,
        mint_cap: int = MINT_CAP,
        mint_window_s: float = MINT_WINDOW_S,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        clock: Clock = _utcnow,
    ) -> None:
        self._client_id = client_id
        self._secret = client_secret
        self._refresh = refresh_token
        self._url = accounts_base.rstrip("/") + "/oauth/v2/token"
        self._http, self._pool, self._clock = http, pool, clock
        self._cap, self._window = mint_cap, timedelta(seconds=mint_window_s)
        self._margin = timedelta(seconds=refresh_margin_s)
        digest = hashlib.sha256(
            f"{client_id}\0{refresh_token.get_secret_value()}\0{accounts_base}".encode()
        ).digest()
        self.key = digest.hex()  # names the refresh token in the database without revealing it
        self._lock_id = int.from_bytes(digest[:8], "big", signed=True)
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at: datetime | None = None
        self._mints: list[datetime] = []  # used without a pool
        self.minted = 0  # tokens this broker minted

    def __repr__(self) -> str:
        return f"TokenBroker(client_id={self._client_id!r}, key={self.key[:12]}…)"

    def _fresh(self, token: str | None, refresh_at: datetime | None) -> bool:
        return token is not None and refresh_at is not None and refresh_at > self._clock()

    async def token(self) -> str:
        """A valid access token (cached in the process, shared in the database)."""
        if self._token is not None and self._fresh(self._token, self._refresh_at):
            return self._token
        return await self._obtain(stale=None)

    async def refresh(self, stale: str) -> str:
        """After a 401 with `stale`: a newer token if another process has one, else a new mint."""
        return await self._obtain(stale=stale)

    async def _obtain(self, stale: str | None) -> str:
        async with self._lock:  # coroutines of this process wait for one mint, not each their own
            if (
                self._token is not None
                and self._token != stale
                and self._fresh(self._token, self._refresh_at)
            ):
                return self._token
            if self._pool is None:

                async def keep(
                    tok: str | None, exp: datetime | None, ref: datetime | None, times: list[datetime]
                ) -> None:
                    self._mints = times

                token, refresh_at = await self._mint_if_needed(
                    self._token, self._refresh_at, self._mints, stale, keep
                )
            else:
                refused: ZohoAuthError | None = None
                async with self._pool.acquire() as conn, conn.transaction():
                    await zoho_repo.lock_token(conn, self._lock_id)
                    shared, shared_refresh_at, mints = await zoho_repo.token_row(conn, self.key)

                    async def save(
                        tok: str | None, exp: datetime | None, ref: datetime | None, times: list[datetime]
                    ) -> None:
                        await zoho_repo.save_token(conn, self.key, tok, exp, ref, times)

                    try:
                        token, refresh_at = await self._mint_if_needed(
                            shared, shared_refresh_at, mints, stale, save
                        )
                    except ZohoAuthError as exc:
                        refused = exc  # raised after the commit: a refused attempt stays counted
                if refused is not None:
                    raise refused
            self._token, self._refresh_at = token, refresh_at
            return token

    async def _mint_if_needed(
        self,
        token: str | None,
        refresh_at: datetime | None,
        mints: list[datetime],
        stale: str | None,
        save: _Save,
    ) -> tuple[str, datetime]:
        """Reuse `token` if fresh and not the stale one; else mint (within the cap) and save."""
        if token is not None and refresh_at is not None and token != stale and self._fresh(token, refresh_at):
            return token, refresh_at
        now = self._clock()
        recent = sorted(m for m in mints if now - m < self._window)
        if len(recent) >= self._cap:
            wait = (recent[0] + self._window - now).total_seconds()
            raise ZohoAuthError(
                0,
                f"{len(recent)} access tokens minted in the last {self._window.total_seconds():.0f} s "
                f"(cap {self._cap}); next mint allowed in {wait:.0f} s",
                retry_after_s=wait,
            )
        recent.append(now)
        try:
            new_token, lifetime = await self._post()
        except ZohoAuthError:
            await save(None, None, None, recent)  # a refused attempt still counts against Zoho's cap
            raise
        expires = now + timedelta(seconds=lifetime)
        # Replaced a little before it expires (at most a tenth of its life early, for short-lived ones).
        new_refresh_at = expires - min(self._margin, timedelta(seconds=lifetime / 10))
        await save(new_token, expires, new_refresh_at, recent)
        self.minted += 1
        log.info("minted a Zoho access token (valid %d s, %d minted in the window)", lifetime, len(recent))
        return new_token, new_refresh_at

    async def _post(self) -> tuple[str, int]:
        """The refresh-token grant; credentials go in the form body, never in a URL or a log line."""
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._secret.get_secret_value(),
            "refresh_token": self._refresh.get_secret_value(),
        }
        try:
            resp = await self._http.post(self._url, data=form)
        except httpx.HTTPError as exc:
            raise ZohoAuthError(0, f"token endpoint unreachable: {type(exc).__name__}") from None
        try:
            doc = resp.json()
        except ValueError:
            doc = {}
        # Zoho answers refused grants with HTTP 200 and an "error" member as often as with a 4xx.
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if resp.status_code != 200 or not isinstance(token, str) or not token:
            reason = doc.get("error", "no access_token") if isinstance(doc, dict) else "not JSON"
            raise ZohoAuthError(0, f"token refresh refused: {reason}", resp.status_code)
        try:
            lifetime = int(doc.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600
        return token, max(1, lifetime)
