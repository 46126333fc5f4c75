"""The password-hashing child: argon2id in a process of its own, at the lowest CPU priority.

`python -m server.accounts.hashd MEMORY_KIB TIME_COST NICE IDLE` reads requests from stdin and writes answers
to stdout, each a 4-byte big-endian length and an orjson body: `["hash", password]` -> `["ok", phc]`,
`["verify", stored, password]` -> `["ok", true|false]`, anything else -> `["error", text]`.

Why a process and not a thread of the server: a hashing thread shares its process's GIL and its scheduling
with the event loop. At nice 10 a sign-in flood still doubled the catalog's p99 on a 2-core machine; a thread
at SCHED_IDLE could be starved while it holds the GIL and stall the loop. A process of its own at SCHED_IDLE
(Linux: it runs only on CPU time nothing else wants, and any waking request preempts it at once) has no
lock to hold. It imports argon2 and orjson only, so it starts in tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
from typing import IO, Any

import argon2
import orjson
from argon2.exceptions import InvalidHashError, VerificationError

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024  # a request holds a password (<= 512 bytes) and a PHC string: far below this


def lower_priority(nice: int, idle: bool) -> None:
    """This process at SCHED_IDLE (when asked and possible) and at `nice` (both Linux; else as it is)."""
    if idle and hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed frame; None at end of stream."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: IO[bytes], body: bytes) -> None:
    """One length-prefixed frame, flushed."""
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def answer(ph: argon2.PasswordHasher, request: Any) -> list[Any]:
    """The answer to one decoded request."""
    match request:
        case ["hash", str(password)]:
            return ["ok", ph.hash(password)]
        case ["verify", str(stored), str(password)]:
            try:
                return ["ok", ph.verify(stored, password)]
            except (VerificationError, InvalidHashError):
                return ["ok", False]
        case _:
            return ["error", "unknown request"]


def main(argv: list[str]) -> int:
    """Serve requests until stdin closes (the server stopped or dropped this child)."""
    memory_kib, time_cost, nice, idle = (int(a) for a in argv)
    lower_priority(nice, bool(idle))
    ph = argon2.PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=argon2.Type.ID
    )
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (frame := read_frame(stdin)) is not None:
        write_frame(stdout, orjson.dumps(answer(ph, orjson.loads(frame))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
