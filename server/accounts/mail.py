"""Mail: rows written to `mail_outbox` in the transaction that decides to send, then delivered.

Delivery is SMTP when SMTP_URL is set, else one `.eml` file per mail under DATA_DIR/mail/ (so a machine
without a mail server, and the tests, can read what would have been sent). After a mail is delivered its
body (which holds a token in the clear) is erased from the table. A process delivers after each write
and every MAIL_SWEEP_S; a failed mail stays pending (at most 10 tries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

from server.accounts import repo
from server.db.pool import ServicePool
from server.settings import Settings

log = logging.getLogger("server.accounts.mail")
BATCH = 20
SMTP_TIMEOUT_S = 10.0


class Mailer:
    """Delivers pending outbox rows (one flush at a time per process)."""

    def __init__(self, *, sender: str, folder: Path, smtp_url: str | None) -> None:
        self.sender = sender
        self.domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
        self.folder = folder
        self.smtp_url = smtp_url
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[int]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> Mailer:
        """The mailer the settings describe."""
        smtp = s.SMTP_URL.get_secret_value() if s.SMTP_URL is not None else None
        return cls(sender=s.MAIL_FROM, folder=s.DATA_DIR / "mail", smtp_url=smtp or None)

    def kick(self, pool: ServicePool) -> None:
        """Deliver pending mail in the background (the request that wrote it does not wait)."""
        if len(self._tasks) > 2:  # one running and one queued behind it cover every row written so far
            return
        task = asyncio.create_task(self.flush(pool))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, pool: Callable[[], ServicePool], every_s: float) -> None:
        """Sweep the outbox every `every_s` seconds in this process (from its start-up handler)."""

        async def sweep() -> None:
            while True:
                await asyncio.sleep(every_s)
                await self.flush(pool())

        if self._sweeper is None:
            self._sweeper = asyncio.create_task(sweep())

    async def stop(self) -> None:
        """Stop the sweeper and any flush in progress (at shutdown; undelivered mail stays pending)."""
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper is not None else [])]
        self._sweeper = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def flush(self, pool: ServicePool) -> int:
        """Deliver what is pending; the number delivered. No pool connection is held while sending."""
        sent = 0
        async with self._lock:
            try:
                async with pool.acquire() as conn:
                    rows = await repo.pending_mail(conn, BATCH)
                for row in rows:
                    msg = self.message(row["id"], row["to_addr"], row["subject"], row["body"])
                    try:
                        await asyncio.to_thread(self.deliver, msg)
                        error = None
                    except (OSError, smtplib.SMTPException) as exc:
                        log.warning("mail %d not sent: %s", row["id"], type(exc).__name__)
                        error = type(exc).__name__
                    async with pool.acquire() as conn:
                        if error is None:
                            await repo.mail_sent(conn, row["id"])
                            sent += 1
                        else:
                            await repo.mail_failed(conn, row["id"], error)
            except Exception:
                log.exception("mail flush failed; pending mail stays in the outbox")
        return sent

    def message(self, mail_id: int, to: str, subject: str, body: str) -> EmailMessage:
        """The MIME message of one outbox row."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        # An explicit domain: make_msgid would otherwise ask the resolver for this host's name.
        msg["Message-ID"] = make_msgid(f"outbox{mail_id}", domain=self.domain)
        msg.set_content(body)
        return msg

    def deliver(self, msg: EmailMessage) -> None:
        """Send one message (blocking: called in a thread)."""
        if self.smtp_url is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = msg["Message-ID"].strip("<>").replace("/", "_").replace("@", "_")
            tmp = self.folder / f".{name}.tmp"
            tmp.write_bytes(msg.as_bytes())
            tmp.replace(self.folder / f"{name}.eml")  # readers never see half a file
            return
        url = urlsplit(self.smtp_url)
        secure = url.scheme == "smtps"
        host, port = url.hostname or "localhost", url.port or (465 if secure else 25)
        smtp: smtplib.SMTP
        if secure:
            smtp = smtplib.SMTP_SSL(host, port, timeout=SMTP_TIMEOUT_S, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S)
        with smtp:
            if not secure:
                try:
                    smtp.starttls(context=ssl.create_default_context())
                    secure = True
                except smtplib.SMTPNotSupportedError:
                    pass  # a relay without TLS (a local one): fine for mail, never for a password
            if url.username:
                if not secure:
                    raise smtplib.SMTPException("the SMTP server offers no TLS: credentials not sent")
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(msg)
