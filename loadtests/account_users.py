"""Signed-in scenarios. `SignInUser` (tags `auth`, `login`, `browse`): signs up (the verification token is
read from the mail files the server writes when SMTP_URL is unset: `--mail-dir`, the server's
DATA_DIR/mail), turns TOTP on, then signs in with password + TOTP code, refreshes its tokens, reads /me
and browses the catalog with its access token. Objective of its own: login p95 (hashing is slow on purpose).

Its weight is 0 unless `--signin-weight` says otherwise, so existing runs and thresholds are unchanged.
A TOTP step is usable once per user, so a user signs in at most once per 30 s step; between, it refreshes.

Ordering: `OrderingUser` in loadtests/order_users.py (tags `orders`, `history`, `checkout`).
Request names follow the rule of users.py: the route template.
"""

from __future__ import annotations

import argparse
import base64
import email
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust import User, tag, task
from locust.env import Environment

from loadtests.users import GZIP, CatalogUser
from server.accounts import totp

AUTH = "/api/auth"
PASSWORD = "load test passphrase 7"
MAIL_WAIT_S = 15.0
PRODUCTS = "/api/consumer/products"
HASHING_TRIES = 6  # a 503 (password hashing at its cap or busy) is retried after Retry-After, as apps do


def post_auth(
    client: Any, path: str, body: dict[str, Any], ok: int, headers: dict[str, str] | None = None
) -> Any:
    """POST AUTH + path as a client should: a 503 is waited out as its Retry-After says (the server sheds
    sign-ins beyond AUTH_HASH_MAX_PER_S so), at most HASHING_TRIES times; any final status but `ok` is a
    failure. The response of the last try."""
    for attempt in range(HASHING_TRIES):
        with client.post(
            AUTH + path, json=body, headers=headers or {}, name=AUTH + path, catch_response=True
        ) as resp:
            if resp.status_code == 503 and attempt < HASHING_TRIES - 1:
                resp.success()  # shedding as designed; the client comes back later
                delay = float(resp.headers.get("Retry-After") or 1)
            else:
                if resp.status_code != ok:
                    resp.failure(f"{resp.status_code}: {resp.text[:200]}")
                return resp
        gevent.sleep(delay)
    raise AssertionError("unreachable")


class SignInUser(CatalogUser):
    """A shopper with an account and MFA: signs in with a TOTP code, refreshes, browses signed in."""

    # Locust drops classes of weight 0 before the options are applied: 1 keeps it until configure() sets
    # --signin-weight (default 0, so users.configure drops it from runs that do not ask for it).
    weight = 1
    # A throw-away service of run_load exports its mail folder (LOAD_MAIL_DIR); else `make run`'s.
    mail_dir = Path(os.environ.get("LOAD_MAIL_DIR", ".data/mail"))

    def on_start(self) -> None:
        """Sign up from the mail file, enable TOTP, sign out (the tasks sign in again)."""
        super().on_start()
        self.email = f"load-{uuid.uuid4().hex[:12]}@example.com"
        self.secret = b""
        self.last_step = 0
        self.access = self.refresh_token = ""
        post_auth(self.client, "/register", {"email": self.email, "password": PASSWORD}, 202)
        token = self._mailed_token()
        self.client.post(f"{AUTH}/verify-email", json={"token": token}, name=f"{AUTH}/verify-email")
        doc = self._post("/login", {"email": self.email, "password": PASSWORD})
        self._keep(doc)
        setup = self._post("/mfa/setup", {}, signed_in=True)
        text = setup["secret"]
        self.secret = base64.b32decode(text + "=" * (-len(text) % 8))
        self._post("/mfa/enable", {"code": self._code()}, signed_in=True)

    def _post(self, path: str, body: dict[str, Any], signed_in: bool = False) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.access}"} if signed_in else {}
        resp = post_auth(self.client, path, body, 200, headers)
        if resp.status_code != 200:
            return {}
        doc: dict[str, Any] = resp.json()
        return doc

    def _keep(self, doc: dict[str, Any]) -> None:
        if doc.get("access_token"):
            self.access, self.refresh_token = doc["access_token"], doc["refresh_token"]

    def _code(self) -> str:
        step = max(totp.current_step(), self.last_step + 1)  # each step once per user (replay refused)
        self.last_step = step
        return totp.code_at(self.secret, step)

    def _mailed_token(self) -> str:
        return mailed_token(self.email, self.mail_dir)

    @tag("auth", "login")
    @task(1)
    def sign_in(self) -> None:
        """Password, then a TOTP code; only when this step's code is still unused (else refresh)."""
        if totp.current_step() <= self.last_step:
            self.refresh()
            return
        doc = self._post("/login", {"email": self.email, "password": PASSWORD})
        if doc.get("mfa_required"):
            self._keep(self._post("/mfa/verify", {"mfa_token": doc["mfa_token"], "code": self._code()}))

    @tag("auth")
    @task(2)
    def refresh(self) -> None:
        """Rotate the refresh token."""
        self._keep(self._post("/refresh", {"refresh_token": self.refresh_token}))

    @tag("auth")
    @task(2)
    def me(self) -> None:
        """The signed-in profile."""
        self.client.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {self.access}"}, name=f"{AUTH}/me")

    @tag("browse")
    @task(8)
    def browse(self) -> None:
        """Catalog pages, sent with the access token as a signed-in app would."""
        headers = {**GZIP, "Authorization": f"Bearer {self.access}"}
        params = {"page": random.choice((1, 1, 2)), "page_size": 20}
        self.client.get(PRODUCTS, params=params, headers=headers, name=PRODUCTS)


def mailed_token(address: str, mail_dir: Path | None = None) -> str:
    """The token of the verification mail to `address` (written by the server under DATA_DIR/mail)."""
    folder = mail_dir or SignInUser.mail_dir
    deadline = time.monotonic() + MAIL_WAIT_S
    while time.monotonic() < deadline:
        for path in folder.glob("*.eml"):
            with path.open("rb") as fh:
                msg = email.message_from_binary_file(fh)
            if msg["To"] == address:
                body = msg.get_payload(decode=True)
                assert isinstance(body, bytes)
                return body.decode().split("token=", 1)[1].split()[0]
        gevent.sleep(0.2)
    raise RuntimeError(f"no verification mail in {folder} (is --mail-dir the server's DATA_DIR/mail?)")


TAGS: tuple[str, ...] = ("auth", "login", "orders", "history", "checkout")
USERS: list[type[User]] = [SignInUser]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the account users."""
    group = parser.add_argument_group("account users")
    group.add_argument("--signin-weight", type=int, default=0, help="SignInUser weight (0: none)")
    group.add_argument(
        "--mail-dir", default=str(SignInUser.mail_dir), help="the server's DATA_DIR/mail (verification mails)"
    )


def configure(environment: Environment) -> None:
    """Apply the options (before users.configure drops the classes of weight 0)."""
    opts = environment.parsed_options
    if opts is None:
        return
    SignInUser.weight = opts.signin_weight
    SignInUser.mail_dir = Path(opts.mail_dir)
