"""Rate limiting: per-route-group policies, per-client keys, one quota shared by every process and instance.

Algorithm: GCRA (a leaky bucket kept as one "theoretical arrival time" per client and policy). A policy
`quota/window;burst=b` admits up to `b` requests at once and then one per `window/quota` seconds. The state
lives in Redis under `{prefix}rl:{policy}:{client}` and is updated by one Lua script (EVALSHA, cached)
that reads Redis's own `TIME`, so processes and instances with skewed clocks agree; the key expires when
the bucket is full again (at most the window).

Strategy (loadtests/bench_ratelimit.py, CPU of this process per decision on the dev box): one EVALSHA per
request costs 110-300 µs in redis-py asyncio (hiredis does not help: the cost is the client machinery),
10-30 times the 10 µs per request the design allows at 10k req/s. So each process takes a small *lease*
of requests from Redis in one round trip (`burst // (10 × processes)`, 1..lease_max) and spends it
locally for a dict lookup; a denial is cached
locally until Redis said a request will be available again, so a flood of denied requests costs no round
trips. Concurrent requests of one client share one round trip, and the lease fetches of *different* clients
queued in one event-loop tick go to Redis together, in one script call over all their keys (up to 256).
Measured in one process with 64 requests in flight (catalog policy 600/60s;burst=100, 2 processes, so
leases of 5): one hot client ~1.6 µs per decision; 1,000 clients round-robin 6.9 µs (20.2 µs with one call
per client); 20,000 clients each seen once 27.7 µs (83.5 µs). A hot client under a generous policy gets
leases of up to `lease_max` (1024): ~2 µs. A denial costs ~1.3 µs, the local fallback ~1.6 µs.

Accuracy: a lease is taken from the shared bucket before it is spent, so the limit is never exceeded.
The cost is under-admission: requests leased by one process but not spent there (the client moved to
other processes and stopped coming back) are lost until the bucket refills — at most
`processes × (lease − 1)` per instance, i.e. ≤ 10 % of the burst by construction and usually 0 (a client
pressing against its limit spends every lease). With 100/60s and 2 processes, 300 interleaved requests
admit exactly 100. `RateLimit` `r` is this process's best knowledge (other processes' unspent leases are
not visible). `strategy="direct"` (one EVALSHA per request, exact `r`) remains available.

Provider blocks: an IPv6 client is keyed by its /64, but one site is delegated a whole /48 (65,536 /64s)
and can rotate through it. So every request is also charged to its block (`b6:<the /48>`; `b4:<the /24>`
when enabled), a budget of `multiplier` × the policy's quota and burst (RATE_LIMIT_IPV6_BLOCK_MULTIPLIER,
default 16; RATE_LIMIT_IPV4_BLOCK_MULTIPLIER, default 0 = off, see the README for why). A request is allowed
only if both budgets allow it: the script checks and charges both keys atomically, in the same batched call
(still one round trip). A client's first round trip under a block takes a lease of 1, so clients seen once
strand nothing of the block's budget, and a block Redis reported full is refused locally until it has room,
so rotating through fresh /64s costs no round trips either.

Memory: every table keyed by client input is bounded in entries and key size: the identity memos
(ClientKeys: peers, and forwarded headers of at most 128 bytes), leases, cached block denials and the local
fallback's table (`max_keys`, 100,000 each; keys are normalised `ip:`/`b6:`/`b4:` strings, never raw input).

Degradation: on a Redis error or a timeout (`timeout_s`, default 100 ms) the limiter switches to an
in-process GCRA at 1/`processes` of each quota and burst (so one instance still enforces about the quota;
M instances enforce up to M × quota), logs one warning per outage, reports `degraded`, and probes Redis in
the background at most every `probe_interval_s` (1 s) to switch back. `check` never raises for Redis.
"""

from server.ratelimit.decision import Decision, policy_header, rate_limit_headers, ratelimit_header
from server.ratelimit.identity import (
    ClientKeys,
    Identity,
    IPNetwork,
    client_identity,
    client_key,
    parse_ip,
    user_key,
)
from server.ratelimit.limiter import GCRA_LUA, RateLimiter, Strategy
from server.ratelimit.local import LocalLimiter
from server.ratelimit.policy import DEFAULT_POLICIES, Policy, parse_optional_policy, parse_policy, scaled

__all__ = [
    "DEFAULT_POLICIES",
    "GCRA_LUA",
    "ClientKeys",
    "Decision",
    "IPNetwork",
    "Identity",
    "LocalLimiter",
    "Policy",
    "RateLimiter",
    "Strategy",
    "client_identity",
    "client_key",
    "parse_ip",
    "parse_optional_policy",
    "parse_policy",
    "policy_header",
    "rate_limit_headers",
    "ratelimit_header",
    "scaled",
    "user_key",
]
