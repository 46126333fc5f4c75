"""The account service's pure parts: TOTP against RFC 6238, JWTs (forged, expired, rotated keys), sealed
TOTP secrets, the key settings, the password policy and the throttle's curve."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from server.accounts import passwords, tokens, totp
from server.accounts.keys import KeyRing
from server.accounts.passwords import Hasher, HashingBusy
from server.accounts.throttle import Throttle
from server.settings import SettingsError, load_settings, parse_keys

RFC_SECRET = b"12345678901234567890"


@pytest.mark.parametrize(
    ("at", "eight_digits"),
    [(59, "94287082"), (1111111109, "07081804"), (1234567890, "89005924"), (2000000000, "69279037")],
)
def test_totp_matches_rfc_6238_sha1_vectors(at: int, eight_digits: str) -> None:
    assert totp.code_at(RFC_SECRET, at // 30) == eight_digits[-6:]


def test_totp_window_is_one_step_either_side() -> None:
    now = 1_700_000_015.0
    step = totp.current_step(now)
    for offset in (-1, 0, 1):
        assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, step + offset), now) == step + offset
    for offset in (-2, 2):
        assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, step + offset), now) is None
    assert totp.matching_step(RFC_SECRET, "12345", now) is None
    assert totp.matching_step(RFC_SECRET, "abcdef", now) is None


def ring(*kids: str, active: str | None = None) -> KeyRing:
    keys = {k: k.encode() * (32 // len(k) + 1) for k in kids}
    return KeyRing(keys, active or kids[0])


def test_jwt_round_trip_and_rotation() -> None:
    old = ring("a", "b", active="a")
    token = tokens.sign(old, user_id=7, session="s-1", ttl_s=900)
    claims = tokens.verify(old, token)
    assert claims is not None and claims.user_id == 7 and claims.session == "s-1"
    rotated = ring("a", "b", active="b")
    assert tokens.verify(rotated, token) is not None  # the old key still verifies
    assert tokens.verify(ring("b"), token) is None  # once dropped, its tokens are refused


def test_jwt_forgeries_and_expiry_are_refused() -> None:
    keys = ring("a")
    token = tokens.sign(keys, user_id=7, session="s", ttl_s=60, now=1000)
    assert tokens.verify(keys, token, now=1059) is not None
    assert tokens.verify(keys, token, now=1060) is None  # expired
    header, payload, sig = token.split(".")
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"a"}').rstrip(b"=").decode()
    assert tokens.verify(keys, f"{none_header}.{payload}.", now=1000) is None
    assert tokens.verify(keys, f"{none_header}.{payload}.{sig}", now=1000) is None
    other = (
        base64.urlsafe_b64encode(b'{"iss":"catalog","sub":"8","sid":"s","exp":9999}').rstrip(b"=").decode()
    )
    assert tokens.verify(keys, f"{header}.{other}.{sig}", now=1000) is None  # payload swapped
    assert tokens.verify(keys, "x" * 2000, now=1000) is None
    assert tokens.verify(keys, "a.b.c", now=1000) is None


def test_sealed_secret_needs_its_key_and_its_user() -> None:
    keys = ring("k1", "k2", active="k1")
    secret = totp.new_secret()
    sealed, kid = totp.seal(keys, secret, 5)
    assert kid == "k1" and secret not in sealed
    assert totp.unseal(ring("k1", "k2", active="k2"), sealed, kid, 5) == secret  # rotation: still opens
    assert totp.unseal(keys, sealed, kid, 6) is None  # copied to another user
    assert totp.unseal(ring("k2"), sealed, kid, 5) is None  # key gone
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert totp.unseal(keys, tampered, kid, 5) is None


def test_key_settings_are_checked_without_echoing_them() -> None:
    good = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")
    assert parse_keys(f"one:{good}, two:{good}") == {"one": b"k" * 32, "two": b"k" * 32}
    short = base64.urlsafe_b64encode(b"k" * 16).decode()
    with pytest.raises(SettingsError) as info:
        load_settings(AUTH_JWT_KEYS=f"one:{short}")
    assert "AUTH_JWT_KEYS" in str(info.value) and short not in str(info.value)
    with pytest.raises(SettingsError):
        load_settings(AUTH_JWT_KEYS=f"one:{good}", AUTH_JWT_ACTIVE_KID="two")
    with pytest.raises(SettingsError):
        load_settings(AUTH_ARGON2_MEMORY_KIB=8192)  # below OWASP's 19 MiB
    with pytest.raises(SettingsError):
        load_settings(AUTH_ACCESS_TTL_S=3600)  # access tokens live at most 15 minutes


def test_password_policy_and_list() -> None:
    assert len(passwords.common_passwords()) >= 10_000
    assert passwords.policy_errors("Password1", "f")  # common, whatever the case
    assert not passwords.policy_errors("a long and unusual passphrase", "f")
    assert passwords.normalize("ｐａｓｓ") == "pass"


def test_hasher_parameters_rehash_and_bound() -> None:
    async def scenario() -> None:
        weak = Hasher(memory_kib=19_456, time_cost=2, workers=1, queue=0)
        stored = await weak.hash("a long passphrase")
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert await weak.verify(stored, "a long passphrase") == (True, None)
        assert await weak.verify(stored, "another passphrase") == (False, None)
        assert await weak.verify(None, "anything") == (False, None)
        stronger = Hasher(memory_kib=19_456, time_cost=3, workers=1, queue=0)
        ok, new = await stronger.verify(stored, "a long passphrase")
        assert ok and new is not None and ",t=3," in new
        # One thread, no queue: a second call while one runs is refused at once.
        results = await asyncio.gather(weak.hash("x" * 20), weak.hash("y" * 20), return_exceptions=True)
        assert sum(isinstance(r, HashingBusy) for r in results) == 1
        weak.close()
        stronger.close()

    asyncio.run(scenario())


def test_throttle_curve_is_capped() -> None:
    throttle = Throttle(lambda: None, prefix="t:", after=5, base_s=1.0, max_s=900.0)
    assert [throttle.delay_s(n) for n in (4, 5, 6, 7)] == [0.0, 1.0, 2.0, 4.0]
    assert throttle.delay_s(10_000) == 900.0
    assert asyncio.run(throttle.wait_s("x")) == 0  # no Redis: never locks anyone out


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="SCHED_IDLE is Linux's")
def test_hashing_runs_in_idle_priority_children() -> None:
    async def scenario() -> tuple[int, int, int, bool]:
        hasher = Hasher(memory_kib=19_456, time_cost=2, workers=1, queue=0, nice=7, idle=True)
        try:
            phc = await hasher.hash("correct horse battery")
            (child,) = hasher._children
            assert child.proc is not None
            pid = child.proc.pid
            policy, nice = os.sched_getscheduler(pid), os.getpriority(os.PRIO_PROCESS, pid)
            ok, _ = await hasher.verify(phc, "correct horse battery")
            return pid, policy, nice, ok
        finally:
            hasher.close()

    pid, policy, nice, ok = asyncio.run(scenario())
    assert pid != os.getpid() and ok
    assert policy == os.SCHED_IDLE
    assert nice >= 7  # never raised back; the test runner's own nice adds to it


def test_a_dead_hashing_child_is_replaced() -> None:
    async def scenario() -> tuple[bool, bool]:
        hasher = Hasher(memory_kib=19_456, time_cost=2, workers=1, queue=0)
        try:
            phc = await hasher.hash("correct horse battery")
            (child,) = hasher._children
            assert child.proc is not None
            child.proc.kill()
            child.proc.wait()
            ok, _ = await hasher.verify(phc, "correct horse battery")
            wrong, _ = await hasher.verify(phc, "wrong horse battery")
            return ok, wrong
        finally:
            hasher.close()

    assert asyncio.run(scenario()) == (True, False)


def test_a_call_that_waits_too_long_is_refused() -> None:
    async def scenario() -> tuple[list[object], int]:
        hasher = Hasher(memory_kib=19_456, time_cost=2, workers=1, queue=1, wait_s=10)
        try:
            await hasher.hash("warm the child up")
            hasher.wait_s = 0.005  # one hash takes ~25 ms: the queued call cannot start in time
            results = await asyncio.gather(
                hasher.hash("x" * 20), hasher.hash("y" * 20), return_exceptions=True
            )
            return results, hasher.timed_out
        finally:
            hasher.close()

    results, timed_out = asyncio.run(scenario())
    assert all(isinstance(r, HashingBusy) for r in results) and timed_out == 2


def test_verified_tokens_are_remembered_only_while_valid() -> None:
    ring = KeyRing({"a": os.urandom(32)}, "a")
    current = [ring]
    auth = tokens.AccessTokens(lambda: current[0])
    good = tokens.sign(ring, user_id=7, session="s1", ttl_s=60)
    first = asyncio.run(auth.authenticate(good))
    assert first is not None and first.id == 7
    assert asyncio.run(auth.authenticate(good)) is first  # remembered: the same principal
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert asyncio.run(auth.authenticate(forged)) is None
    assert forged not in auth._verified  # only valid tokens are kept
    # Expired since it was remembered: refused, and forgotten.
    short = tokens.sign(ring, user_id=8, session="s2", ttl_s=30, now=1.0)  # expired long ago
    assert asyncio.run(auth.authenticate(short)) is None
    auth._verified[good] = (first, 1, ring)  # as if its expiry had passed
    assert asyncio.run(auth.authenticate(good)) is not None and auth._verified[good][1] > 1  # re-verified
    # Another ring (keys changed): a token of a retired key is not served from the memo.
    current[0] = KeyRing({"b": os.urandom(32)}, "b")
    assert asyncio.run(auth.authenticate(good)) is None
    # Bounded.
    for n in range(tokens.VERIFIED_MEMO_ENTRIES + 5):
        asyncio.run(auth.authenticate(tokens.sign(current[0], user_id=n, session="x", ttl_s=60)))
    assert len(auth._verified) <= tokens.VERIFIED_MEMO_ENTRIES
