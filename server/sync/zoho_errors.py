"""Errors of the Zoho client (re-exported by `server.sync.zoho`)."""

from __future__ import annotations


class ZohoError(Exception):
    """Zoho answered with an error code (or could not be reached): `code`, `message`, HTTP `status`."""

    def __init__(self, code: int, message: str, status: int = 0) -> None:
        super().__init__(f"Zoho error {code} (HTTP {status}): {message}")
        self.code, self.message, self.status = code, message, status


class ZohoPaused(ZohoError):
    """The daily call budget (ours or Zoho's code 45) is spent: stop the run as `paused`, resume later."""


class ZohoAuthError(ZohoError):
    """No access token: missing credentials, a refresh Zoho refused, or our cap of mints reached."""

    def __init__(self, code: int, message: str, status: int = 0, retry_after_s: float | None = None) -> None:
        super().__init__(code, message, status)
        self.retry_after_s = retry_after_s
