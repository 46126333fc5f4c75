"""Process control: the supervisor that owns the embedded servers and the Robyn master, and the port probe.

Tree: `serve` (this supervisor: embedded PostgreSQL/Redis, migrations) → `_robyn` (the master, in its own
session so a terminal's Ctrl-C reaches only us; see server/workers.py) → PROCESSES workers. The supervisor
turns SIGTERM/SIGINT into one SIGTERM to the master, which drains its workers; it SIGKILLs the whole session
only if that takes longer than the grace period plus a margin. If the master itself dies (kill -9, a crash),
the supervisor logs it and starts a new one; its orphaned workers get SIGTERM from the kernel (parent-death
signal), drain and exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("server.runner")

STOP_MARGIN_S = 2.5  # beyond SHUTDOWN_GRACE_S: the master's own backstop (grace + 1 s) comes first
REFUSED_CODES = (2, 3)  # the master refused to start (settings, build): restarting would not help
MAX_RESTART_DELAY_S = 30.0


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port.

    SO_REUSEADDR lets the probe bind over the TIME-WAIT sockets a stop under traffic leaves behind (else
    a restart is refused for up to a minute), while a bind still fails when a socket listens there: Linux
    lets two sockets share a listening port only if both set SO_REUSEPORT, which the probe does not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Supervisor:
    """Runs the Robyn master in its own session, restarts it if it dies, stops it within the grace."""

    def __init__(self, argv: list[str], env: dict[str, str], grace_s: float) -> None:
        self.argv, self.env, self.grace_s = argv, env, grace_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._sessions: list[int] = []  # every master's session (= its pid), killed at the end

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Start the master, forward SIGTERM/SIGINT, return its exit code once it and its tree are gone."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        quick_deaths = 0
        try:
            while True:
                started = time.monotonic()
                code = self._run_once(on_ready)
                on_ready = None
                if self._stopping.is_set() or code in REFUSED_CODES or code == 0:
                    return code
                # At once after a death in normal service; slower and slower if it keeps dying early.
                quick_deaths = quick_deaths + 1 if time.monotonic() - started < 60 else 1
                delay = min(0.25 * (2**quick_deaths - 2), MAX_RESTART_DELAY_S)
                log.error("the server process exited unexpectedly (%s); restarting it in %.1fs", code, delay)
                if self._stopping.wait(delay):
                    return 0
        finally:
            self._kill_sessions()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_once(self, on_ready: Callable[[], None] | None) -> int:
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._sessions.append(self.proc.pid)
        if on_ready is not None:
            on_ready()
        while True:
            try:
                return self.proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                if self._stopping.is_set():
                    return self._stop_child()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self._stopping.set()

    def _stop_child(self) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=self.grace_s + STOP_MARGIN_S)
        except subprocess.TimeoutExpired:
            log.warning("server did not stop within %.1fs; killing it", self.grace_s + STOP_MARGIN_S)
            self._kill_sessions()
            return self.proc.wait()

    def _kill_sessions(self) -> None:
        # Anything left in a master's session (a stuck worker, an orphan of a dead master) goes too.
        for pgid in self._sessions:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def worker_command() -> list[str]:
    """argv that starts the Robyn master (and its workers) with this interpreter."""
    return [sys.executable, "-m", "server", "_robyn"]
