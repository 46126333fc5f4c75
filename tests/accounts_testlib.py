"""Helpers of the account tests: mails from DATA_DIR/mail, sign-up and sign-in steps, TOTP codes."""

from __future__ import annotations

import base64
import email
import re
import socket
import threading
import time
import uuid
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
from admin_testlib import wait_for
from catalog_testlib import ServerProcess

from server.accounts import totp

AUTH = "/api/auth"
PASSWORD = "correct horse battery staple 42"
TOKEN_RE = re.compile(r"token=([A-Za-z0-9_-]{43})")


def new_email(tag: str = "u") -> str:
    """A fresh address."""
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def mail_dir(server: ServerProcess) -> Path:
    """Where the server writes mails (no SMTP_URL)."""
    return server.workdir / "data" / "mail"


def mails_to(server: ServerProcess, address: str) -> list[Message]:
    """Every mail written for `address`, oldest first."""
    folder = mail_dir(server)
    if not folder.exists():
        return []
    found = []
    for path in sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
        msg = email.message_from_bytes(path.read_bytes())
        if msg["To"] == address:
            found.append(msg)
    return found


def wait_mail(server: ServerProcess, address: str, count: int = 1, timeout: float = 10) -> Message:
    """The `count`-th mail to `address`, once it is written."""
    wait_for(lambda: len(mails_to(server, address)) >= count, timeout, step=0.05)
    return mails_to(server, address)[count - 1]


def mail_token(msg: Message) -> str:
    """The token of a verification or reset mail."""
    body = msg.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = TOKEN_RE.search(body.decode())
    assert found, body
    return found.group(1)


def post(api: httpx.Client, path: str, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    """POST a JSON body to /api/auth/<path>."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.post(AUTH + path, json=body, headers=headers)


def sign_up(api: httpx.Client, server: ServerProcess, address: str, password: str = PASSWORD) -> None:
    """Register and verify `address` through the mailed link."""
    resp = post(api, "/register", {"email": address, "password": password})
    assert resp.status_code == 202, resp.text
    token = mail_token(wait_mail(server, address))
    assert post(api, "/verify-email", {"token": token}).status_code == 200


def sign_in(api: httpx.Client, address: str, password: str = PASSWORD) -> dict[str, Any]:
    """The login answer (tokens, or the MFA challenge)."""
    resp = post(api, "/login", {"email": address, "password": password})
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


def secret_of(setup: dict[str, Any]) -> bytes:
    """The raw TOTP secret of a /mfa/setup answer."""
    text = setup["secret"]
    return base64.b32decode(text + "=" * (-len(text) % 8))


def fresh_step(margin_s: float = 3.0) -> int:
    """The current 30 s step, after waiting out its last seconds (codes computed now stay in the window)."""
    left = totp.STEP_S - time.time() % totp.STEP_S
    if left < margin_s:
        time.sleep(left + 0.05)
    return totp.current_step()


def code(secret: bytes, offset: int = 0) -> str:
    """The code of the step `offset` away from now."""
    return totp.code_at(secret, totp.current_step() + offset)


class SmtpSink:
    """A minimal SMTP server on 127.0.0.1 (no TLS, no auth) that keeps the messages it receives."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.messages: list[Message] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn, conn.makefile("rb") as rfile:
                self._session(conn, rfile)

    def _session(self, conn: socket.socket, rfile: Any) -> None:
        conn.sendall(b"220 sink ESMTP\r\n")
        while line := rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250-sink\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                data = b""
                while (chunk := rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.messages.append(email.message_from_bytes(data))
                conn.sendall(b"250 queued\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:  # MAIL, RCPT, RSET, NOOP
                conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()
