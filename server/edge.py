"""The edge of every request, before any handler work: size limits, CORS, and the rate limit.

One object per process (`Edge`), built from settings at app creation; the Redis-backed limiter is attached
in each process's start-up handler. The wrapper (server/http.py) calls `admit()` once per request and
merges the headers it returns into whatever response follows (success, 304, or error).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import TYPE_CHECKING

from robyn import Request

from server.errors import HeaderTooLarge, OriginNotAllowed, PayloadTooLarge, RateLimited, UriTooLong
from server.ratelimit import (
    ClientKeys,
    Decision,
    Identity,
    IPNetwork,
    Policy,
    RateLimiter,
    rate_limit_headers,
)

if TYPE_CHECKING:
    from server.settings import Settings

CORS_ALLOW_HEADERS = (
    "accept",
    "accept-language",
    "content-type",
    "if-none-match",
    "x-request-id",
    "authorization",
)
CORS_EXPOSE = (
    "ETag, X-Request-ID, RateLimit, RateLimit-Policy, Retry-After, Content-Encoding, WWW-Authenticate"
)
CORS_MAX_AGE_S = "600"


class Edge:
    """Per-process edge policy: limits from settings, the limiter attached at start-up."""

    def __init__(
        self,
        *,
        policies: Mapping[str, Policy | None],
        trusted_proxies: list[IPNetwork],
        cors_origins: list[str],
        max_body_bytes: int,
        max_header_bytes: int,
        max_query_bytes: int,
        max_path_bytes: int = 2048,
    ) -> None:
        self.policies = dict(policies)
        self.client_keys = ClientKeys(trusted_proxies)
        self.cors_enabled = bool(cors_origins)
        self.any_origin = "*" in cors_origins
        self.origins = frozenset(cors_origins)
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_query_bytes = max_query_bytes
        self.max_path_bytes = max_path_bytes
        self.limiter: RateLimiter | None = None
        self.rejected = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Edge:
        """The edge policy of this service's settings."""
        return cls(
            policies=settings.rate_policies(),
            trusted_proxies=list(settings.TRUSTED_PROXIES),
            cors_origins=list(settings.CORS_ORIGINS),
            max_body_bytes=settings.MAX_BODY_BYTES,
            max_header_bytes=settings.MAX_HEADER_BYTES,
            max_query_bytes=settings.MAX_QUERY_BYTES,
            max_path_bytes=settings.MAX_PATH_BYTES,
        )

    def policy(self, group: str) -> Policy | None:
        """The policy of a route group (None: not limited)."""
        return self.policies.get(group)

    def check_sizes(
        self, request: Request, query: Mapping[str, list[str]], max_body: int | None = None
    ) -> None:
        """414/431/413 for oversized query strings, headers and bodies (`max_body`: a route's own limit,
        e.g. image uploads; default MAX_BODY_BYTES)."""
        # Every line counts, repeated names included (items() would keep only the last value of each).
        items = request.headers.multi_items()
        header_bytes = sum(map(len, chain.from_iterable(items))) + 4 * len(items)
        if header_bytes > self.max_header_bytes:
            raise HeaderTooLarge()
        if len(request.url.path) > self.max_path_bytes:
            raise UriTooLong("The path is longer than the server accepts.", "المسار أطول مما يقبله الخادم.")
        if (
            query
            and sum(len(k) + sum(len(v) + 2 for v in vs) for k, vs in query.items()) > self.max_query_bytes
        ):
            raise UriTooLong()
        limit = self.max_body_bytes if max_body is None else max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge()
        body = request.body
        # Robyn hands over str for UTF-8 bodies: its UTF-8 length is at least its character count.
        if body and (len(body) > limit or (isinstance(body, str) and len(body.encode()) > limit)):
            raise PayloadTooLarge()

    def cors_headers(self, request: Request) -> dict[str, str]:
        """Access-Control-* for an allowed Origin (none for others: the browser then blocks)."""
        origin = request.headers.get("origin")
        if not origin or not (self.any_origin or origin.rstrip("/") in self.origins):
            return {}
        # Vary: Origin is added by the wrapper to every answer while CORS is on, allowed origin or not.
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": CORS_EXPOSE}

    def preflight_headers(self, request: Request, allow_methods: str) -> dict[str, str]:
        """Headers of a 204 preflight answer; OriginNotAllowed for an origin outside the allowlist."""
        cors = self.cors_headers(request)
        if not cors:
            raise OriginNotAllowed()
        wanted = request.headers.get("access-control-request-headers") or ""
        allowed = [h.strip() for h in wanted.lower().split(",") if h.strip() in CORS_ALLOW_HEADERS]
        cors.update(
            {
                "Access-Control-Allow-Methods": allow_methods,
                "Access-Control-Allow-Headers": ", ".join(allowed) or "accept",
                "Access-Control-Max-Age": CORS_MAX_AGE_S,
                "Vary": "Origin, Access-Control-Request-Headers",
            }
        )
        return cors

    def rate_limit_now(
        self, request: Request, policy: Policy, who: Identity | None = None
    ) -> dict[str, str] | None:
        """RateLimit headers when the decision needs no round trip (the hot path: no coroutine);
        None when `rate_limit` must be awaited. Raises RateLimited (429) when over the quota.
        `who`: the limiter keys of an authenticated caller; default the client's address."""
        limiter = self.limiter
        if limiter is None or not limiter.enabled:
            return {}
        key, block = who or self.client_keys(request.ip_addr or "", request.headers.get("x-forwarded-for"))
        decision = limiter.check_now(policy, key, block)
        return None if decision is None else self._headers(policy, decision)

    async def rate_limit(
        self, request: Request, policy: Policy, who: Identity | None = None
    ) -> dict[str, str]:
        """The RateLimit headers for this request, asking Redis if needed; RateLimited (429) when over."""
        limiter = self.limiter
        if limiter is None or not limiter.enabled:
            return {}
        key, block = who or self.client_keys(request.ip_addr or "", request.headers.get("x-forwarded-for"))
        return self._headers(policy, await limiter.check(policy, key, block))

    def _headers(self, policy: Policy, decision: Decision) -> dict[str, str]:
        headers = rate_limit_headers(policy, decision)
        if not decision.allowed:
            self.rejected += 1
            raise RateLimited(headers=headers)
        return headers
