"""Key rings from settings (JWT signing keys, TOTP sealing keys): several keys, one active.

When a ring is not configured, a random key is made once under DATA_DIR and shared by every process of
this machine (development and tests only: production sets AUTH_JWT_KEYS and AUTH_TOTP_KEYS).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from server.settings import parse_keys

log = logging.getLogger("server.accounts")
DEV_KEYS_FILE = "auth-dev-keys.json"


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Keys by id, and the id of the one that signs or seals."""

    keys: dict[str, bytes]
    active: str

    @property
    def active_key(self) -> bytes:
        """The key new tokens or ciphertexts use."""
        return self.keys[self.active]


def ring(configured: SecretStr, active: str, data_dir: Path, name: str) -> KeyRing:
    """The ring of `configured` keys (active: `active` or the first), or the development key of `name`."""
    keys = parse_keys(configured.get_secret_value())
    if keys:
        return KeyRing(keys, active or next(iter(keys)))
    kid, key = _dev_key(data_dir, name)
    return KeyRing({kid: key}, kid)


def _dev_key(data_dir: Path, name: str) -> tuple[str, bytes]:
    path = data_dir / DEV_KEYS_FILE
    made = {n: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() for n in ("jwt", "totp")}
    data_dir.mkdir(parents=True, exist_ok=True)
    # O_EXCL: the first process to get here writes the file, every other one reads the same keys.
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(made, out)
        log.warning("AUTH_%s_KEYS is not set: made a development key in %s", name.upper(), path)
    for _ in range(100):  # another process may still be writing it
        with contextlib.suppress(ValueError):
            doc = json.loads(path.read_text())
            return f"dev-{name}", base64.urlsafe_b64decode(doc[name])
    raise RuntimeError(f"{path} is not readable JSON")  # pragma: no cover
