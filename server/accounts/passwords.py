"""Passwords: the policy (8-128 characters after NFKC, not a common one) and argon2id in a bounded pool.

Hashing is deliberately slow (tens of milliseconds and 19+ MiB per call), so it never runs on the event
loop, nor in this process: AUTH_HASH_WORKERS child processes (server.accounts.hashd) at SCHED_IDLE do it,
each driven by one pool thread that waits on its pipe, and at most AUTH_HASH_QUEUE calls wait for a thread.
Beyond that the caller gets 503 + Retry-After at once, and a call that waited AUTH_HASH_WAIT_S (a machine
so busy that idle-priority work gets no CPU) gets it too, so a burst of sign-ins can pile up neither
unbounded work nor latency behind the catalog's requests. AUTH_HASH_MAX_PER_S caps the hashes a second
(a token bucket per server process): at idle priority, hashing still slowed the catalog's requests in
proportion to the hashes a second (its memory traffic, or the CPU time the catalog then waits for), so only a
rate bounds what a sign-in flood costs. A sign-in takes its token before any Redis or SQL work (`admit`), so
one beyond the cap costs almost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import subprocess
import sys
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import argon2
import orjson

from server.accounts import hashd
from server.errors import FieldError, ServiceUnavailable, ValidationFailed
from server.settings import Settings

MIN_CHARS = 8
MAX_CHARS = 128
RETRY_AFTER_MAX_S = 4


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
    """argon2id with the settings' cost, in AUTH_HASH_WORKERS child processes (server.accounts.hashd) at the
    lowest CPU priority, each driven by one thread of a bounded pool (created in the process using it)."""

    def __init__(
        self,
        *,
        memory_kib: int,
        time_cost: int,
        workers: int,
        queue: int,
        nice: int = 0,
        idle: bool = True,
        wait_s: float = 10.0,
        max_per_s: float = 0.0,
    ) -> None:
        self.ph = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=argon2.Type.ID
        )
        self.workers = workers
        self.limit = workers + queue  # calls running or waiting
        self.wait_s = wait_s
        self.pending = 0
        self.refused = 0
        self.rate_refused = 0
        # Token bucket (0: no cap): max_per_s tokens a second, holding a quarter second's worth (>= 1).
        self.max_per_s = max_per_s
        self._burst = max(1.0, max_per_s / 4)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self.timed_out = 0
        self._argv = [sys.executable, "-m", "server.accounts.hashd", str(memory_kib), str(time_cost)]
        self._argv += [str(nice), str(int(idle))]
        self._children: list[_Child] = []
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._dummy: str | None = None
        self._dummy_task: asyncio.Future[str] | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> Hasher:
        """The hasher the settings describe."""
        return cls(
            memory_kib=s.AUTH_ARGON2_MEMORY_KIB,
            time_cost=s.AUTH_ARGON2_TIME_COST,
            workers=s.AUTH_HASH_WORKERS,
            queue=s.AUTH_HASH_QUEUE,
            nice=s.AUTH_HASH_NICE,
            idle=s.AUTH_HASH_IDLE,
            wait_s=s.AUTH_HASH_WAIT_S,
            max_per_s=s.AUTH_HASH_MAX_PER_S,
        )

    def check_capacity(self) -> None:
        """503 now when a hash would be refused: a sign-in turned away costs no Redis or SQL round trip."""
        if self.pending >= self.limit:
            self.refused += 1
            raise HashingBusy(headers={"Retry-After": _retry_after()})
        if self.max_per_s and self._refill() < 1.0:
            self.rate_refused += 1
            raise HashingBusy(headers={"Retry-After": _retry_after()})

    def admit(self) -> None:
        """`check_capacity`, then take the rate cap's token for one hash: a sign-in calls this before its
        Redis and SQL work, then `verify(..., admitted=True)`: one that will be refused is refused first."""
        self.check_capacity()
        if self.max_per_s:
            self._tokens -= 1.0  # on the event loop, right after the check: no await between them

    def refund(self) -> None:
        """Give back the token `admit` took, for a sign-in that ends before hashing (throttled: 429)."""
        if self.max_per_s:
            self._tokens = min(self._burst, self._tokens + 1.0)

    def _refill(self) -> float:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self.max_per_s)
        self._refilled = now
        return self._tokens

    async def _run(self, request: list[str], admitted: bool = False) -> Any:
        # admitted: the token was taken by `admit` (a sign-in), or the call is not one a client can repeat at
        # will (the rehash after a correct password, the dummy hash made once per process).
        if admitted:
            if self.pending >= self.limit:
                self.refused += 1
                raise HashingBusy(headers={"Retry-After": _retry_after()})
        else:
            self.admit()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="argon2")
        self.pending += 1
        try:
            future = self._pool.submit(self._call, request)
            # A saturated machine leaves an idle-priority child no CPU: a call waits AUTH_HASH_WAIT_S at
            # most, then answers 503 (a call not started is dropped; one started finishes unread).
            return await asyncio.wait_for(asyncio.wrap_future(future), self.wait_s)
        except TimeoutError:
            self.timed_out += 1
            raise HashingBusy(headers={"Retry-After": _retry_after()}) from None
        finally:
            self.pending -= 1

    def _call(self, request: list[str]) -> Any:
        # In a pool thread: this thread's child does the work while the thread waits on its pipe (no GIL).
        child: _Child | None = getattr(self._local, "child", None)
        if child is None:
            child = self._local.child = _Child(self._argv)
            self._children.append(child)
        return child.call(request)

    async def hash(self, password: str, *, admitted: bool = False) -> str:
        """The PHC string of `password` (NFKC already applied)."""
        return str(await self._run(["hash", password], admitted))

    async def verify(
        self, stored: str | None, password: str, *, admitted: bool = False
    ) -> tuple[bool, str | None]:
        """(matches, a new hash when the stored one used other parameters). `stored` None: compare with
        a dummy hash of the same cost, so an unknown email costs what a known one does. admitted: the
        caller took the rate cap's token with `admit`."""
        if stored is None:
            await self._run(["verify", await self._dummy_hash(), password], admitted)
            return False, None
        ok = bool(await self._run(["verify", stored, password], admitted))
        if ok and self.ph.check_needs_rehash(stored):
            return True, await self.hash(password, admitted=True)
        return ok, None

    async def _dummy_hash(self) -> str:
        # Made once per process, by the first unknown email; those arriving meanwhile wait for the same one.
        if self._dummy is not None:
            return self._dummy
        if self._dummy_task is None:
            self._dummy_task = asyncio.ensure_future(
                self.hash("dummy password for unknown accounts", admitted=True)
            )
        task = self._dummy_task
        try:
            self._dummy = await asyncio.shield(task)
        except BaseException:
            if task.done() and self._dummy_task is task:
                self._dummy_task = None  # it failed (hashing busy): the next unknown email tries again
            raise
        return self._dummy

    def close(self) -> None:
        """Stop the threads and their children (at shutdown)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for child in self._children:
            child.close()
        self._children.clear()


def _retry_after() -> str:
    # Spread over 1-4 s: a burst of sign-ins refused together and told "1" comes back together, and each
    # such wave queues the catalog's requests behind a few hundred 503s on the event loops.
    return str(random.randint(1, RETRY_AFTER_MAX_S))


class _Child:
    """One hashing process, started on first use and again if it dies; used by one thread at a time."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    def call(self, request: list[str]) -> Any:
        for _attempt in range(2):  # a child that died (killed, out of memory) is replaced once
            proc = self._started()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                hashd.write_frame(proc.stdin, orjson.dumps(request))
                frame = hashd.read_frame(proc.stdout)
            except (OSError, ValueError):
                frame = None
            if frame is not None:
                status, value = orjson.loads(frame)
                if status != "ok":
                    raise RuntimeError(f"hashing process: {value}")
                return value
            self.close()
        raise RuntimeError("the hashing process exited twice in a row")

    def _started(self) -> subprocess.Popen[bytes]:
        if self.proc is not None and self.proc.poll() is not None:
            self.close()  # died between calls: its pipes are closed before a new child starts
        if self.proc is None:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, close_fds=True
            )
        return self.proc

    def close(self) -> None:
        """End the child: closing its stdin ends its loop; kill it if it does not go."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
