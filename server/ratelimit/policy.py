"""Rate-limit policies: a quota per window with a burst, parsed from operators' settings strings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["DEFAULT_POLICIES", "OFF_WORDS", "Policy", "parse_optional_policy", "parse_policy", "scaled"]

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_QUOTA = 1_000_000_000
MAX_WINDOW_S = 86_400
OFF_WORDS = frozenset({"off", "none", "disabled"})
_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}
_RATE_RE = re.compile(r"(\d{1,10})\s*/\s*(\d{0,6})\s*([a-z]{0,4})")
_FORMAT = "'<quota>/<window>[;burst=<n>]', e.g. '600/60s;burst=100' (window units s, m, h)"

# Recommended defaults (environment: RATE_LIMIT_<NAME>). Burst = how many of the quota one client may
# spend at once; the rest refills evenly (quota/window per second).
DEFAULT_POLICIES: dict[str, str] = {
    "catalog": "600/60s;burst=100",  # 10 req/s sustained per client; a browsing spike of 100
    "images": "1200/60s;burst=300",  # a product grid fires one request per thumbnail at once
    "health": "off",  # probes come from load balancers/orchestrators; limiting them flaps health
    "auth": "20/60s;burst=10",  # password/TOTP guessing, per client address
    "admin": "120/60s;burst=30",
    "orders": "120/60s;burst=30",  # per signed-in shopper (`user:<id>`): placing, history, cancelling
}


@dataclass(frozen=True, slots=True)
class Policy:
    """`quota` requests per `window_s` seconds per client, of which up to `burst` at once."""

    name: str
    quota: int
    window_s: int
    burst: int
    # Derived once: the GCRA emission interval and the RateLimit-Policy header value.
    interval_s: float = field(init=False, repr=False, compare=False)
    header: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not NAME_RE.fullmatch(self.name):
            raise ValueError(f"rate-limit policy name {self.name!r} must match {NAME_RE.pattern}")
        if not 1 <= self.quota <= MAX_QUOTA:
            raise ValueError(
                f"rate-limit policy {self.name!r}: quota must be 1..{MAX_QUOTA}, got {self.quota}"
            )
        if not 1 <= self.window_s <= MAX_WINDOW_S:
            raise ValueError(
                f"rate-limit policy {self.name!r}: window must be 1..{MAX_WINDOW_S} s, got {self.window_s}"
            )
        if not 1 <= self.burst <= self.quota:
            raise ValueError(
                f"rate-limit policy {self.name!r}: burst must be 1..quota ({self.quota}), got {self.burst}"
            )
        object.__setattr__(self, "interval_s", self.window_s / self.quota)
        object.__setattr__(self, "header", f'"{self.name}";q={self.quota};w={self.window_s}')


def parse_policy(name: str, text: str) -> Policy:
    """Parse '<quota>/<window>[;burst=<n>]' (e.g. '600/60s;burst=100'); burst defaults to the quota."""
    rate, *params = (part.strip() for part in text.strip().lower().split(";"))
    match = _RATE_RE.fullmatch(rate)
    if match is None or match[3] not in _UNITS or (not match[2] and not match[3]):
        raise ValueError(f"rate-limit policy {name!r}: {text!r} is not {_FORMAT}")
    quota = int(match[1])
    window_s = int(match[2] or 1) * _UNITS[match[3]]
    burst = quota
    for param in params:
        if not param:
            continue  # a trailing ';'
        key, sep, value = (p.strip() for p in param.partition("="))
        if key != "burst" or not sep or not value.isdigit() or len(value) > 10:
            raise ValueError(f"rate-limit policy {name!r}: bad parameter {param!r}; expected {_FORMAT}")
        burst = int(value)
    return Policy(name, quota, window_s, burst)


def parse_optional_policy(name: str, text: str) -> Policy | None:
    """Like parse_policy, but 'off' (or 'none', 'disabled', '') means the route group is not limited."""
    if text.strip().lower() in OFF_WORDS or not text.strip():
        return None
    return parse_policy(name, text)


def scaled(policy: Policy, factor: int) -> Policy:
    """`factor` times the quota and the burst over the same window (a block budget of many clients)."""
    if factor < 1:
        raise ValueError(f"rate-limit policy {policy.name!r}: factor must be >= 1, got {factor}")
    quota = min(MAX_QUOTA, policy.quota * factor)
    return Policy(policy.name, quota, policy.window_s, min(quota, policy.burst * factor))
