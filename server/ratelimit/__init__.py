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

Degradation: on a Redis error or a timeout (`timeout_s`, default 100 ms) the limiter switches to an
in-process GCRA at 1/`processes` of each quota and burst (so one instance still enforces about the quota;
M instances enforce up to M × quota), logs one warning per outage, reports `degraded`, and probes Redis in
the background at most every `probe_interval_s` (1 s) to switch back. `check` never raises for Redis.
"""

from server.ratelimit.decision import Decision, policy_header, rate_limit_headers, ratelimit_header
from server.ratelimit.identity import ClientKeys, IPNetwork, client_key, parse_ip, user_key
from server.ratelimit.limiter import GCRA_LUA, RateLimiter, Strategy
from server.ratelimit.local import LocalLimiter
from server.ratelimit.policy import DEFAULT_POLICIES, Policy, parse_optional_policy, parse_policy

__all__ = [
    "DEFAULT_POLICIES",
    "GCRA_LUA",
    "ClientKeys",
    "Decision",
    "IPNetwork",
    "LocalLimiter",
    "Policy",
    "RateLimiter",
    "Strategy",
    "client_key",
    "parse_ip",
    "parse_optional_policy",
    "parse_policy",
    "policy_header",
    "rate_limit_headers",
    "ratelimit_header",
    "user_key",
]
