"""Helpers of the account tests: mails from DATA_DIR/mail, sign-up and sign-in steps, TOTP codes."""

from __future__ import annotations

import base64
import email
import re
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
