"""Passwords: the policy (8-128 characters after NFKC, not a common one) and argon2id in a bounded pool.

Hashing is deliberately slow (tens of milliseconds and 19+ MiB per call), so it never runs on the event
loop: a thread pool of AUTH_HASH_WORKERS threads does it (argon2-cffi releases the GIL), and at most
AUTH_HASH_QUEUE calls wait for a thread. Beyond that the caller gets 503 + Retry-After at once, so a burst
of sign-ins cannot pile up unbounded work (or latency) behind the catalog's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from server.errors import FieldError, ServiceUnavailable, ValidationFailed
from server.settings import Settings

MIN_CHARS = 8
MAX_CHARS = 128
T = TypeVar("T")


class HashingBusy(ServiceUnavailable):
    """Every hashing thread is busy and the queue is full: retry shortly."""

    detail_default = "Too many sign-ins at once; retry after the delay given in Retry-After."
    detail_ar_default = (
        "عدد كبير من عمليات الدخول في آن واحد؛ أعد المحاولة بعد المهلة المذكورة في Retry-After."
    )


def normalize(password: str) -> str:
    """NFKC, so that the same password typed on two keyboards is the same password (ASVS 6.2)."""
    return unicodedata.normalize("NFKC", password)


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of zxcvbn's list (from leaked password sets), lowercased."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]  # 1 MB of lists: loaded on first use only

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def policy_errors(password: str, field: str) -> list[FieldError]:
    """Why `password` (already NFKC) may not be used; [] when it may. No composition rules (ASVS 6.2.5)."""
    if len(password) < MIN_CHARS:
        return [
            FieldError(field, f"must be at least {MIN_CHARS} characters", f"يجب ألا تقل عن {MIN_CHARS} أحرف")
        ]
    if len(password) > MAX_CHARS:
        return [
            FieldError(field, f"must be at most {MAX_CHARS} characters", f"يجب ألا تزيد عن {MAX_CHARS} حرفاً")
        ]
    if password.lower() in common_passwords():
        return [
            FieldError(
                field,
                "is one of the most common passwords; choose another",
                "هذه من أكثر كلمات المرور شيوعاً؛ اختر غيرها",
            )
        ]
    return []


def check_policy(password: str, field: str) -> str:
    """The NFKC password, or 422 naming `field`."""
    password = normalize(password)
    errors = policy_errors(password, field)
    if errors:
        raise ValidationFailed(errors=errors)
    return password


async def check_policy_off_loop(password: str, field: str) -> str:
    """`check_policy`, loading the list (a third of a second, once per process) in a thread."""
    if common_passwords.cache_info().currsize == 0:
        await asyncio.to_thread(common_passwords)
    return check_policy(password, field)


class Hasher:
    """argon2id with the settings' cost, run in a bounded thread pool (created in the process using it)."""

    def __init__(self, *, memory_kib: int, time_cost: int, workers: int, queue: int, nice: int = 0) -> None:
        self.ph = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=argon2.Type.ID
        )
        self.workers = workers
        self.nice = nice
        self.limit = workers + queue  # calls running or waiting
        self.pending = 0
        self.refused = 0
        self._pool: ThreadPoolExecutor | None = None
        self._dummy: str | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> Hasher:
        """The hasher the settings describe."""
        return cls(
            memory_kib=s.AUTH_ARGON2_MEMORY_KIB,
            time_cost=s.AUTH_ARGON2_TIME_COST,
            workers=s.AUTH_HASH_WORKERS,
            queue=s.AUTH_HASH_QUEUE,
            nice=s.AUTH_HASH_NICE,
        )

    def check_capacity(self) -> None:
        """503 now when a hash would be refused: a sign-in turned away costs no Redis or SQL round trip."""
        if self.pending >= self.limit:
            self.refused += 1
            raise HashingBusy(headers={"Retry-After": "1"})

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        self.check_capacity()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.workers, thread_name_prefix="argon2", initializer=_lower_priority, initargs=(self.nice,)
            )
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.pending -= 1

    async def hash(self, password: str) -> str:
        """The PHC string of `password` (NFKC already applied)."""
        return await self._run(self.ph.hash, password)

    async def verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        """(matches, a new hash when the stored one used other parameters). `stored` None: compare with
        a dummy hash of the same cost, so an unknown email costs what a known one does."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash("dummy password for unknown accounts")
            await self._run(_verify, self.ph, self._dummy, password)
            return False, None
        ok = await self._run(_verify, self.ph, stored, password)
        if ok and self.ph.check_needs_rehash(stored):
            return True, await self.hash(password)
        return ok, None

    def close(self) -> None:
        """Stop the threads (at shutdown)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _lower_priority(nice: int) -> None:
    # Linux applies a nice value to one thread when given its id: the event loops (catalog requests) win
    # the CPU over hashing, which takes what is left. Elsewhere (or when refused) threads keep the default.
    if nice and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _verify(ph: argon2.PasswordHasher, stored: str, password: str) -> bool:
    try:
        return ph.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
