"""Process control: the supervisor that owns the embedded servers and the Robyn process tree, and the
signal handling that makes Robyn stop cleanly.

Robyn 0.88 hangs on SIGTERM with one process and SIGKILLs its children with several (so their shutdown
handlers never run). In the Robyn process we therefore turn the first SIGTERM/SIGINT into the
KeyboardInterrupt Robyn handles well, and make its parent forward SIGINT to the children and reap them
after a grace period. The supervisor backs this up: SIGKILL to the whole process group after the grace.
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
from typing import Any

log = logging.getLogger("server.runner")


def _interrupt_once(_signum: int, _frame: FrameType | None) -> None:
    # One-shot: a second signal (e.g. the group-wide one) must not cut a shutdown handler short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


class _SignalShim:
    """Stands in for the `signal` module inside robyn.processpool so its parent handler is ours."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s

    def __getattr__(self, name: str) -> Any:
        return getattr(signal, name)

    def signal(self, signum: int, _robyn_handler: Any) -> Any:
        grace = self.grace_s

        def forward(_s: int, _f: FrameType | None) -> None:
            import multiprocess  # Robyn forks its workers with the `multiprocess` package

            children = multiprocess.active_children()
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGINT)

            def reap() -> None:
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and any(c.is_alive() for c in children):
                    time.sleep(0.05)
                for child in children:
                    if child.is_alive():
                        child.kill()

            threading.Thread(target=reap, daemon=True).start()

        return signal.signal(signum, forward)


def install_robyn_signal_handling(grace_s: float) -> None:
    """Call in the Robyn process right before `app.start()`."""
    import robyn.processpool

    signal.signal(signal.SIGTERM, _interrupt_once)
    signal.signal(signal.SIGINT, _interrupt_once)
    robyn.processpool.signal = _SignalShim(grace_s)  # type: ignore[attr-defined,assignment]


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (checked without SO_REUSEPORT, which Robyn sets)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Supervisor:
    """Runs the Robyn process tree in its own process group and stops it within the grace period."""

    def __init__(self, argv: list[str], env: dict[str, str], grace_s: float) -> None:
        self.argv, self.env, self.grace_s = argv, env, grace_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Start the child, forward SIGTERM/SIGINT, return its exit code once it and its tree are gone."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True
            )
            if on_ready is not None:
                on_ready()
            while True:
                try:
                    code = self.proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if self._stopping.is_set():
                        code = self._stop_child()
                        break
            self._kill_group()
            return code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self._stopping.set()

    def _stop_child(self) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=self.grace_s + 0.5)
        except subprocess.TimeoutExpired:
            log.warning("server did not stop within %.1fs; killing it", self.grace_s)
            self._kill_group()
            return self.proc.wait()

    def _kill_group(self) -> None:
        # Anything left in the child's session (a stuck worker) goes too: no orphans.
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def worker_command() -> list[str]:
    """argv that starts the Robyn process tree with this interpreter."""
    return [sys.executable, "-m", "server", "_robyn"]
