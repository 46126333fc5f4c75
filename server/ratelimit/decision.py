"""A limiter's answer and its IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-10)."""

from __future__ import annotations

from dataclasses import dataclass

from server.ratelimit.policy import Policy

__all__ = ["Decision", "policy_header", "rate_limit_headers", "ratelimit_header"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or not; requests left now; whole seconds until the quota is full again / until a retry."""

    allowed: bool
    remaining: int
    reset_s: int
    retry_after_s: int  # 0 when allowed, >= 1 when denied


def policy_header(policy: Policy) -> str:
    """`RateLimit-Policy` value: `"catalog";q=600;w=60`."""
    return policy.header


def ratelimit_header(policy: Policy, decision: Decision) -> str:
    """`RateLimit` value: `"catalog";r=599;t=1`."""
    return f'"{policy.name}";r={decision.remaining};t={decision.reset_s}'


def rate_limit_headers(policy: Policy, decision: Decision) -> dict[str, str]:
    """RateLimit-Policy and RateLimit, plus Retry-After when the request is denied."""
    headers = {"RateLimit-Policy": policy.header, "RateLimit": ratelimit_header(policy, decision)}
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after_s)
    return headers
