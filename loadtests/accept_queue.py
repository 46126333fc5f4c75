"""What happens to connections waiting in a listener's accept queue when the process owning it dies.

    python -m loadtests.accept_queue [--connections 40]

Two designs for N worker processes on one port:
  A. a socket per worker, all with SO_REUSEPORT (the kernel spreads new connections over the sockets);
  B. one socket, shared by every worker through fork (what server/workers.py does).
Connections are opened (handshake done, request sent) and left unaccepted; then the owner of one socket
"dies" (its socket is closed) and the survivor accepts and answers whatever it can. In A the connections
that were queued in the closed socket are reset unless net.ipv4.tcp_migrate_req=1; in B nothing is lost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from pathlib import Path


def _listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def trial(shared: bool, connections: int) -> tuple[int, int]:
    """(answered, reset) of `connections` queued connections after one listener's owner dies."""
    dying = _listener(0)
    port = dying.getsockname()[1]
    survivor = socket.socket(fileno=os.dup(dying.fileno())) if shared else _listener(port)
    clients = []
    for _ in range(connections):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        clients.append(client)
    dying.close()  # the dying worker's descriptor goes
    survivor.settimeout(0.2)
    with contextlib.suppress(TimeoutError):
        while True:
            conn, _ = survivor.accept()
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
            conn.close()
    answered = reset = 0
    for client in clients:
        client.settimeout(0.5)
        try:
            data = client.recv(100)
            answered += data.startswith(b"HTTP")
            reset += data == b""
        except ConnectionResetError:
            reset += 1
        except TimeoutError:
            pass
        client.close()
    survivor.close()
    return answered, reset


def main() -> None:
    """Print both designs' outcome."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=40)
    args = parser.parse_args()
    migrate = Path("/proc/sys/net/ipv4/tcp_migrate_req")
    print(f"net.ipv4.tcp_migrate_req = {migrate.read_text().strip() if migrate.exists() else 'n/a'}")
    for shared, name in (
        (False, "A: a SO_REUSEPORT socket per worker"),
        (True, "B: one socket shared by fork"),
    ):
        answered, reset = trial(shared, args.connections)
        print(f"{name}: {args.connections} queued, {answered} answered, {reset} reset")


if __name__ == "__main__":
    main()
