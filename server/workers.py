"""The Robyn process pool: one listening socket, PROCESSES forked workers, each replaced when it dies.

Robyn's own pool (`robyn.processpool.run_processes`) forks its workers once and never looks at them again:
a crashed worker is gone for good, and its signal handling either hangs (one process) or SIGKILLs the
workers (several). We keep Robyn's building blocks (`SocketHeld`, `spawn_process`) and replace the pool:

- The master opens the socket once and keeps it open while it runs. Every worker is forked with a dup of
  that one socket, so all workers accept from a single queue: a worker that dies loses only the requests it
  was serving, never connections waiting in the queue. (Separate SO_REUSEPORT sockets per worker each have
  their own queue, and Linux resets what is queued in a closing one unless net.ipv4.tcp_migrate_req=1.)
- The master waits on the workers' sentinels: a death is noticed at once, logged, and the worker is
  replaced (immediately, or with a growing delay when workers die right after starting).
- A table in shared memory (inherited across fork) holds each worker's pid and state; `/ready` reads it to
  report live/expected processes.
- Stop (SIGTERM/SIGINT to the master): the master shuts the socket down (connecting is refused from then
  on) and sends SIGTERM to each worker. In a worker, SIGTERM reaches Actix too (its graceful stop: no new
  connections, existing ones keep being served) and our handler ends the event loop at a callback
  boundary, so Robyn runs the shutdown handler, which first waits for in-flight requests (`drain`) and
  then closes the resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import mmap
import os
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

log = logging.getLogger("server.workers")

MAX_SLOTS = 64  # PROCESSES is bounded by settings to the same number
EMPTY, STARTING, SERVING, DRAINING = 0, 1, 2, 3
STATE_NAMES = {EMPTY: "empty", STARTING: "starting", SERVING: "serving", DRAINING: "draining"}
QUICK_DEATH_S = 5.0  # a worker dying sooner than this after its start is restarted with a growing delay
MAX_RESPAWN_DELAY_S = 10.0
START_TIMEOUT_S = 60.0  # a worker not serving this long after its start is killed (and replaced)
_HEADER = struct.Struct("<iI")  # expected processes, replacements so far
_SLOT = struct.Struct("<iid")  # pid, state, time.time() of the last state change
_PID, _STATE = struct.Struct("<i"), struct.Struct("<id")  # its two halves: each has one writer
_PR_SET_PDEATHSIG = 1


class ProcessTable:
    """The master's view of its workers, in anonymous shared memory that forked workers inherit.

    Only the master writes pids; a worker writes its own state (the master too, around fork and death). A
    reader may see a slot mid-update at worst, which the report tolerates.
    """

    def __init__(self, expected: int) -> None:
        self._mem = mmap.mmap(-1, _HEADER.size + MAX_SLOTS * _SLOT.size)
        self.expected = expected
        _HEADER.pack_into(self._mem, 0, expected, 0)

    def set(self, slot: int, pid: int, state: int) -> None:
        """Record a worker's pid and state."""
        _SLOT.pack_into(self._mem, _HEADER.size + slot * _SLOT.size, pid, state, time.time())

    def set_pid(self, slot: int, pid: int) -> None:
        """Record a worker's pid, keeping its state (the master writes pids)."""
        _PID.pack_into(self._mem, _HEADER.size + slot * _SLOT.size, pid)

    def set_state(self, slot: int, state: int) -> None:
        """Change a worker's state, keeping its pid (a worker writes its own state)."""
        _STATE.pack_into(self._mem, _HEADER.size + slot * _SLOT.size + _PID.size, state, time.time())

    def get(self, slot: int) -> tuple[int, int, float]:
        """(pid, state, since) of a slot."""
        pid, state, since = _SLOT.unpack_from(self._mem, _HEADER.size + slot * _SLOT.size)
        return int(pid), int(state), float(since)

    def count_replacement(self) -> None:
        """One more worker replaced."""
        expected, replaced = _HEADER.unpack_from(self._mem, 0)
        _HEADER.pack_into(self._mem, 0, expected, replaced + 1)

    def snapshot(self) -> dict[str, Any]:
        """expected, live (serving), replaced, and each worker's pid and state."""
        expected, replaced = _HEADER.unpack_from(self._mem, 0)
        slots = [self.get(i) for i in range(expected)]
        return {
            "expected": expected,
            "live": sum(1 for _, state, _ in slots if state == SERVING),
            "replaced": replaced,
            "workers": [{"pid": pid, "state": STATE_NAMES.get(state, "?")} for pid, state, _ in slots],
        }


@dataclass(slots=True)
class WorkerContext:
    """This worker's place in the pool (set in the forked child before Robyn starts)."""

    slot: int
    table: ProcessTable
    master: int
    port: int
    loop: asyncio.AbstractEventLoop | None = None
    draining: bool = False


_current: WorkerContext | None = None


def current() -> WorkerContext | None:
    """This process's worker context (None outside a pool, e.g. in tests of the app object)."""
    return _current


def serving(loop: asyncio.AbstractEventLoop) -> None:
    """Called by the start-up handler once this worker can serve."""
    ctx = _current
    if ctx is not None:
        ctx.loop = loop
        ctx.table.set_state(ctx.slot, SERVING)


def draining() -> bool:
    """True once this worker was told to stop."""
    return _current is not None and _current.draining


def processes() -> dict[str, Any] | None:
    """The pool's live/expected report (None outside a pool)."""
    return None if _current is None else _current.table.snapshot()


async def drain(budget_s: float, in_flight: Callable[[], int], quiet_s: float = 0.05) -> int:
    """Wait until no request is being handled (`in_flight()` is 0 for `quiet_s` in a row) or `budget_s`
    passed; return how many are still running. The count is the HTTP wrapper's, kept for every request
    (server/http.py), so it cannot confuse a request with a background task.
    """
    deadline = time.monotonic() + budget_s
    quiet_since: float | None = None
    while True:
        busy = in_flight()
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return 0
        if now >= deadline:
            return busy
        await asyncio.sleep(0.01)


def _raise_interrupt() -> None:
    raise KeyboardInterrupt  # ends Robyn's run_forever: it then runs the shutdown handler and exits


def _on_stop_signal(signum: int, _frame: FrameType | None) -> None:
    # One-shot: a second signal must not cut the drain short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = _current
    if ctx is None or ctx.loop is None:
        raise KeyboardInterrupt  # still starting: nothing is in flight
    ctx.draining = True
    ctx.table.set_state(ctx.slot, DRAINING)
    log.info("received %s, draining", signal.Signals(signum).name)
    if os.getppid() != ctx.master:
        # The master died and the supervisor starts a new tree beside us: stop this tree's socket from
        # taking connections that nobody would accept any more, before Actix stops accepting (as the master
        # does on a normal stop).
        _shutdown_listener(_find_listener(ctx.port))
    # Raised from a loop callback, not from here: here it could land inside a request's task and kill it.
    ctx.loop.call_soon_threadsafe(_raise_interrupt)


def _find_listener(port: int) -> int | None:
    """The descriptor of this process's listening TCP socket on `port` (Robyn's SocketHeld hides it)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) and sock.getsockname()[1] == port:
                    return fd
        except OSError:
            continue
    return None


def _shutdown_listener(fd: int | None) -> None:
    """Stop a listening socket for every process sharing it: connecting is refused from now on."""
    if fd is not None:
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RD)


def _die_with_parent(parent: int) -> None:
    # If the master dies (kill -9), the kernel sends us SIGTERM: we drain and exit instead of serving on
    # as an orphan nobody stops.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


class WorkerPool:
    """The master: owns the socket, forks PROCESSES Robyn workers and replaces any that dies."""

    def __init__(self, host: str, port: int, processes: int, grace_s: float, robyn_args: dict[str, Any]):
        self.host, self.port, self.processes, self.grace_s = host, port, processes, grace_s
        self.robyn_args = robyn_args  # spawn_process's arguments except the socket
        # An app with a start-up handler says when a worker serves (`serving()`); others serve at once.
        self.reports_ready = any(getattr(e, "name", "") == "STARTUP" for e in robyn_args["event_handlers"])
        self.socket: Any = None
        self.listen_fd: int | None = None
        self.table = ProcessTable(processes)
        self.procs: dict[int, Any] = {}  # slot -> multiprocess.Process
        self.started: dict[int, float] = {}
        self.delay: dict[int, float] = {}
        self.due: dict[int, float] = {}  # slot -> monotonic time of its replacement
        self._stopping = False

    def run(self) -> None:
        """Fork the workers, watch them until SIGTERM/SIGINT, then stop them within the grace period."""
        from multiprocess.connection import wait  # type: ignore[import-untyped]  # Robyn forks with it
        from robyn.robyn import SocketHeld

        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        wake_r, wake_w = os.pipe()  # a signal wakes the wait below at once (it would sleep on otherwise)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        self.socket = SocketHeld(self.host, self.port)
        self.listen_fd = _find_listener(self.port)
        for slot in range(self.processes):
            self._spawn(slot)
        while not self._stopping:
            sentinels = {p.sentinel: slot for slot, p in self.procs.items()}
            now = time.monotonic()
            timeout = min([0.5, *(max(0.0, t - now) for t in self.due.values())])
            for ready in wait([*sentinels, wake_r], timeout=timeout):
                if ready == wake_r:
                    os.read(wake_r, 512)
                else:
                    self._on_death(sentinels[ready])
            now = time.monotonic()
            self._kill_stuck_starters(now)
            for slot, when in list(self.due.items()):
                if when <= now and not self._stopping:
                    del self.due[slot]
                    self._spawn(slot)
                    self.table.count_replacement()
        self._stop()

    def _kill_stuck_starters(self, now: float) -> None:
        # A worker that never finishes its start-up (a hung connect) serves nothing: replace it.
        for slot, proc in self.procs.items():
            _, state, _ = self.table.get(slot)
            if state == STARTING and now - self.started[slot] > START_TIMEOUT_S and proc.is_alive():
                log.error(
                    "worker %d (pid %d) still starting after %.0fs; killing it",
                    slot,
                    proc.pid,
                    START_TIMEOUT_S,
                )
                proc.kill()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s, stopping %d worker(s)", signal.Signals(signum).name, len(self.procs))
        self._stopping = True

    def _spawn(self, slot: int) -> None:
        from multiprocess import Process

        master = os.getpid()
        proc = Process(target=self._worker_main, args=(slot, master), name=f"catalog-worker-{slot}")
        self.table.set(slot, 0, STARTING)  # before the fork: the child may report SERVING at once
        proc.start()
        self.procs[slot] = proc
        self.started[slot] = time.monotonic()
        self.table.set_pid(slot, proc.pid)

    def _worker_main(self, slot: int, master: int) -> None:
        """Runs in the forked child: become worker `slot` and hand over to Robyn (never returns)."""
        global _current
        from robyn.processpool import spawn_process

        _die_with_parent(master)
        held, self.socket = self.socket.try_clone(), None  # drop the master's copy in this child
        signal.set_wakeup_fd(-1)  # the master's wake-up pipe is not ours (uvloop sets its own)
        _current = WorkerContext(slot, self.table, master, self.port)
        if not self.reports_ready:
            self.table.set_state(slot, SERVING)
        signal.signal(signal.SIGTERM, _on_stop_signal)
        signal.signal(signal.SIGINT, _on_stop_signal)
        spawn_process(socket=held, **self.robyn_args)

    def _on_death(self, slot: int) -> None:
        proc = self.procs.pop(slot)
        # Its sentinel is readable once the process closed its files, which is a moment before the kernel
        # can hand back its exit status: wait for that moment (join(0) sometimes found none: "code None").
        proc.join(1.0)
        self.table.set(slot, 0, EMPTY)
        if self._stopping:
            return
        lived = time.monotonic() - self.started[slot]
        quick = lived < QUICK_DEATH_S
        delay = min(max(self.delay.get(slot, 0.0) * 2, 0.25), MAX_RESPAWN_DELAY_S) if quick else 0.0
        self.delay[slot] = delay
        code = proc.exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"code {code}"
        log.error(
            "worker %d (pid %d) died (%s) after %.1fs; replacing it in %.2fs",
            slot,
            proc.pid,
            how,
            lived,
            delay,
        )
        self.due[slot] = time.monotonic() + delay

    def _stop(self) -> None:
        # The socket is shut down first, while every worker still accepts: from now on connecting is refused
        # at once (a balancer or client retries elsewhere, nothing was sent), and the queue it drops is the
        # one the workers keep empty. Stopping Actix first would leave the port taking connections nobody
        # accepts, each reset (its request sent, never answered) at the shutdown: 6 of 6 under a client
        # opening new connections (tests/test_supervisor.py). shutdown() acts on the socket itself, for
        # every process holding it; closing our copy would not. Actix then logs its accept error, which
        # server/log.py turns into one INFO line, and the workers finish the connections they have.
        _shutdown_listener(self.listen_fd)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        self.socket = None
        deadline = time.monotonic() + self.grace_s + 1.0
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
        for slot, proc in self.procs.items():
            if proc.is_alive():
                log.warning(
                    "worker %d (pid %d) did not stop within the grace period; killing it", slot, proc.pid
                )
                proc.kill()
                proc.join(1)


def serve(app: Any, *, host: str, port: int, processes: int, grace_s: float) -> None:
    """Run `app` (a Robyn app) in a WorkerPool: Robyn prepares its routes and handlers as usual and hands
    them to us instead of to its own pool."""
    import robyn

    def run_pool(
        url: str,
        port: int,
        directories: Any,
        request_headers: Any,
        routes: Any,
        global_middlewares: Any,
        route_middlewares: Any,
        web_sockets: Any,
        event_handlers: Any,
        workers: int,
        processes: int,
        response_headers: Any,
        excluded_response_headers_paths: Any,
        open_browser: bool,
        client_timeout: int = 30,
        keep_alive_timeout: int = 20,
    ) -> list[Any]:
        args = {
            "directories": directories,
            "request_headers": request_headers,
            "routes": routes,
            "global_middlewares": global_middlewares,
            "route_middlewares": route_middlewares,
            "web_sockets": web_sockets,
            "event_handlers": event_handlers,
            "workers": workers,
            "response_headers": response_headers,
            "excluded_response_headers_paths": excluded_response_headers_paths,
            "client_timeout": client_timeout,
            "keep_alive_timeout": keep_alive_timeout,
        }
        WorkerPool(url, port, processes, grace_s, args).run()
        return []

    robyn.run_processes = run_pool  # type: ignore[attr-defined]  # Robyn.start() calls it by this name
    app.start(host=host, port=port, _check_port=False)
