"""Async Zoho Inventory client: one httpx client with keep-alive, shared OAuth tokens, Zoho's limits.

Every call carries `organization_id`, goes through the organisation's call budget (per minute, in flight,
per day: server/sync/budget.py) with a token from the shared broker (server/sync/tokens.py), and is retried
with jittered exponential backoff on HTTP 429 (honouring `Retry-After`), on Zoho's throttling codes 44 and
1070 whatever the HTTP status, and on 5xx/transport errors, a bounded number of times. Code 45 (Zoho's daily
limit) or our own daily budget raises ZohoPaused. A 401 (or code 57) refreshes the token once and retries
once.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from server.metrics.trace import outgoing_traceparent
from server.sync.budget import CallBudget
from server.sync.tokens import TokenBroker
from server.sync.zoho_errors import ZohoAuthError, ZohoError, ZohoPaused

if TYPE_CHECKING:
    from server.settings import Settings

__all__ = ["ZohoAuthError", "ZohoClient", "ZohoError", "ZohoPaused", "missing_credentials", "zoho_urls"]

log = logging.getLogger("server.sync.zoho")

# Data centre -> (API root, accounts server), from Zoho Inventory's "Multiple Data Centers" table; Canada's
# accounts server is on zohocloud.ca.
_ACCOUNTS_HOST = {"ca": "accounts.zohocloud.ca"}
THROTTLE_CODES = frozenset({44, 1070})  # per-minute limit, too many concurrent calls
DAILY_LIMIT_CODE = 45
AUTH_CODES = frozenset({57})  # "not authorized": an expired or revoked access token
MAX_WAIT_S = 300.0  # a Retry-After longer than this is not waited for in a run
TOO_LARGE = -413  # ZohoError code of an answer over the byte cap (no Zoho code is negative)
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a price book of 50,000 items is about 8 MB


def zoho_urls(data_centre: str) -> tuple[str, str]:
    """(Inventory API root, accounts server) of a Zoho data centre (`com`, `eu`, `in`, `com.au`, …)."""
    accounts = _ACCOUNTS_HOST.get(data_centre, f"accounts.zoho.{data_centre}")
    return f"https://www.zohoapis.{data_centre}/inventory/v1", f"https://{accounts}"


class ZohoClient:
    """Zoho Inventory API calls for one organisation; `async with` it (or `await aclose()`)."""

    def __init__(
        self,
        *,
        api_base: str,
        organization_id: str,
        tokens: TokenBroker,
        budget: CallBudget,
        http: httpx.AsyncClient,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.organization_id = organization_id
        self.tokens, self.budget, self._http = tokens, budget, http
        self.max_retries, self.backoff_base_s, self.backoff_cap_s = max_retries, backoff_base_s, backoff_cap_s
        self.max_response_bytes = MAX_RESPONSE_BYTES
        self.calls = 0  # HTTP calls to the API sent by this client (retries included)
        self.throttled = 0  # throttle answers seen (429, codes 44 and 1070)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        pool: Any = None,
        redis: Any = None,
        rate_window_s: float = 60.0,
        backoff_base_s: float = 0.5,
    ) -> ZohoClient:
        """The client the settings describe; `pool` shares tokens and the daily count, `redis` the
        per-minute and in-flight limits, across processes. Missing credentials raise ZohoAuthError."""
        if missing := missing_credentials(settings):
            raise ZohoAuthError(0, "Zoho is not configured: set " + ", ".join(missing))
        api_base, accounts_base = zoho_urls(settings.ZOHO_DATA_CENTRE)
        api_base = settings.ZOHO_API_BASE or api_base
        accounts_base = settings.ZOHO_ACCOUNTS_BASE or accounts_base
        conns = settings.ZOHO_MAX_CONCURRENCY + 1  # the token endpoint gets its own connection
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.ZOHO_TIMEOUT_S),
            limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
            headers={"User-Agent": "catalog-api-zoho-sync/1", "Accept": "application/json"},
        )
        tokens = TokenBroker(
            client_id=settings.ZOHO_CLIENT_ID,
            client_secret=settings.ZOHO_CLIENT_SECRET,
            refresh_token=settings.ZOHO_REFRESH_TOKEN,
            accounts_base=accounts_base,
            http=http,
            pool=pool,
        )
        budget = CallBudget(
            organization_id=settings.ZOHO_ORGANIZATION_ID,
            rate=settings.ZOHO_RATE_PER_MIN,
            window_s=rate_window_s,
            max_concurrency=settings.ZOHO_MAX_CONCURRENCY,
            daily_budget=settings.ZOHO_DAILY_BUDGET,
            redis=redis,
            pool=pool,
            key_prefix=settings.REDIS_KEY_PREFIX,
            # httpx's timeout bounds each read, not the whole answer: leases outlive slow answers.
            lease_ttl_s=2 * settings.ZOHO_TIMEOUT_S + 5,
        )
        return cls(
            api_base=api_base,
            organization_id=settings.ZOHO_ORGANIZATION_ID,
            tokens=tokens,
            budget=budget,
            http=http,
            max_retries=settings.ZOHO_MAX_RETRIES,
            backoff_base_s=backoff_base_s,
        )

    def __repr__(self) -> str:
        return f"ZohoClient(api_base={self.api_base!r}, organization_id={self.organization_id!r})"

    async def __aenter__(self) -> ZohoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    # ---- public calls -----------------------------------------------------------------------------
    async def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET a JSON document (`code` 0), raising ZohoError on any other code."""
        doc = await self._request("GET", path, params, None, max_bytes=None)
        assert isinstance(doc, dict)
        return doc

    async def post(
        self, path: str, json_body: dict[str, Any], params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST a JSON body; the answer's JSON document (`code` 0)."""
        doc = await self._request("POST", path, params, json_body, max_bytes=None)
        assert isinstance(doc, dict)
        return doc

    async def get_bytes(self, path: str, *, max_bytes: int | None = None) -> tuple[bytes, str | None] | None:
        """GET a file (e.g. `/items/{id}/image`): (bytes, content type), None when Zoho has none (404).
        A body over `max_bytes` (default: max_response_bytes) is not read: ZohoError, code TOO_LARGE."""
        out = await self._request("GET", path, None, None, max_bytes=max_bytes or self.max_response_bytes)
        assert out is None or isinstance(out, tuple)
        return out

    async def iter_pages(
        self, path: str, key: str, params: dict[str, Any] | None = None, per_page: int = 200
    ) -> AsyncIterator[tuple[int, list[dict[str, Any]], bool]]:
        """(page, records under `key`, has_more_page) of a list, from `params["page"]` (default 1) on."""
        query = dict(params or {})
        page = int(query.pop("page", 1))
        while True:
            doc = await self.get(path, {**query, "page": page, "per_page": min(200, per_page)})
            records = doc.get(key) or []
            context = doc.get("page_context") or {}
            more = bool(context.get("has_more_page")) and bool(records)  # an empty page ends a list
            yield page, records, more
            if not more:
                return
            page += 1

    # ---- the retry loop ----------------------------------------------------------------------------
    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json_body: dict[str, Any] | None,
        *,
        max_bytes: int | None,
    ) -> dict[str, Any] | tuple[bytes, str | None] | None:
        """Send with retries; JSON document, or (bytes, type) / None (404) when `max_bytes` is given."""
        want_bytes = max_bytes is not None
        cap = max_bytes or self.max_response_bytes
        url = self.api_base + "/" + path.lstrip("/")
        query = {**(params or {}), "organization_id": self.organization_id}
        refreshed = False
        attempt = 0
        while True:
            token = await self.tokens.token()
            try:
                async with self.budget.slot():
                    self.calls += 1
                    headers = {"Authorization": f"Zoho-oauthtoken {token}"}
                    traceparent = outgoing_traceparent()  # a run started by a request continues its trace
                    if traceparent is not None:
                        headers["traceparent"] = traceparent
                    async with self._http.stream(
                        method, url, params=query, json=json_body, headers=headers
                    ) as resp:
                        content = await _read(resp, cap, path)
            except httpx.TransportError as exc:
                attempt += 1
                if attempt > self.max_retries:
                    raise ZohoError(
                        0, f"{method} {path}: {type(exc).__name__} after {attempt} tries"
                    ) from None
                await self._sleep(path, attempt, None, f"transport error {type(exc).__name__}")
                continue
            status = resp.status_code
            ctype = resp.headers.get("content-type")
            doc = _json(ctype, content)
            code = _code(doc)
            message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
            if status == 401 or code in AUTH_CODES:
                if refreshed:
                    raise ZohoAuthError(code or 57, f"{path}: still unauthorized after a refresh", status)
                refreshed = True
                await self.tokens.refresh(stale=token)
                continue
            if code == DAILY_LIMIT_CODE:
                await self.budget.exhaust_day()
                raise ZohoPaused(code, message or "Zoho's daily API limit reached", status)
            if status == 429 or code in THROTTLE_CODES or status >= 500:
                attempt += 1
                if status == 429 or code in THROTTLE_CODES:
                    self.throttled += 1
                if attempt > self.max_retries:
                    raise ZohoError(
                        code or status, f"{path}: {message or 'gave up'} after {attempt} tries", status
                    )
                await self._sleep(
                    path,
                    attempt,
                    _retry_after(resp),
                    f"HTTP {status} code {code}",
                    hold_all=status == 429 or code == 44,
                )
                continue
            if want_bytes:
                if status == 404:
                    return None
                if status == 200 and doc is None:
                    return content, ctype
            if status >= 400 or code not in (0, None) or not isinstance(doc, dict):
                raise ZohoError(code if code is not None else status, message or "unexpected answer", status)
            return doc

    async def _sleep(
        self, path: str, attempt: int, retry_after: float | None, why: str, *, hold_all: bool = False
    ) -> None:
        """Full-jitter exponential backoff; a Retry-After is a floor (plus a little jitter). With
        `hold_all` (Zoho's rate limits) every call of the organisation waits, in every process."""
        backoff = random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1)))
        delay = backoff if retry_after is None else retry_after + random.uniform(0, self.backoff_base_s)
        if delay > MAX_WAIT_S:
            raise ZohoError(0, f"{path}: Zoho asks to wait {delay:.0f} s", 429)
        log.info("Zoho %s on %s: retry %d in %.2f s", why, path, attempt, delay)
        if hold_all:
            await self.budget.hold(delay)
        await asyncio.sleep(delay)


def missing_credentials(settings: Settings) -> list[str]:
    """Names of the unset Zoho credentials (empty: the client can be built; the schedule can run)."""
    names = ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN", "ZOHO_ORGANIZATION_ID")
    return [name for name in names if not _text(getattr(settings, name))]


def _text(value: Any) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value or "")


def _json(ctype: str | None, content: bytes) -> Any:
    if "json" not in (ctype or "") and content[:1] != b"{":
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


async def _read(resp: httpx.Response, cap: int, path: str) -> bytes:
    """The body, refusing (before reading it all) one larger than `cap` bytes."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ZohoError(TOO_LARGE, f"{path}: answer of {declared} bytes is over {cap}", resp.status_code)
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise ZohoError(TOO_LARGE, f"{path}: answer over {cap} bytes", resp.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def _code(doc: Any) -> int | None:
    if not isinstance(doc, dict) or "code" not in doc:
        return None
    try:
        return int(doc["code"])
    except (TypeError, ValueError):
        return None


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds of a Retry-After header (delta-seconds or HTTP date), None without one."""
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
