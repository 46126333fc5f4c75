"""TOTP (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits, ±1 step), secrets sealed with AES-GCM, recovery codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import struct
import time
from urllib.parse import quote, urlencode

import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.accounts.keys import KeyRing

STEP_S = 30
DIGITS = 6
WINDOW = 1  # steps accepted either side of now (clock drift)
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation
ISSUER = "Catalog"
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


def new_secret() -> bytes:
    """A fresh secret from the CSPRNG."""
    return secrets.token_bytes(SECRET_BYTES)


def b32(secret: bytes) -> str:
    """The secret as authenticator apps take it (base32, no padding)."""
    return base64.b32encode(secret).decode().rstrip("=")


def code_at(secret: bytes, step: int) -> str:
    """The code of one 30-second step (RFC 4226 dynamic truncation)."""
    mac = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def current_step(now: float | None = None) -> int:
    """The step of `now` (default: the clock)."""
    return int((time.time() if now is None else now) // STEP_S)


def matching_step(secret: bytes, code: str, now: float | None = None) -> int | None:
    """The step within ±WINDOW whose code is `code` (compared in constant time), or None."""
    if len(code) != DIGITS or not code.isdigit():
        return None
    here = current_step(now)
    found = None
    for step in range(here - WINDOW, here + WINDOW + 1):
        if hmac.compare_digest(code_at(secret, step), code):
            found = step
    return found


def otpauth_uri(secret: bytes, account: str) -> str:
    """The `otpauth://totp/...` URI authenticator apps scan."""
    query = urlencode(
        {"secret": b32(secret), "issuer": ISSUER, "algorithm": "SHA1", "digits": DIGITS, "period": STEP_S}
    )
    return f"otpauth://totp/{quote(ISSUER)}:{quote(account)}?{query}"


def qr_svg(uri: str) -> str:
    """The URI as an SVG QR code."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False)
    return out.getvalue().decode()


def seal(ring: KeyRing, secret: bytes, user_id: int) -> tuple[bytes, str]:
    """(nonce || AES-GCM ciphertext, key id): bound to the user, so a row copied to another user fails."""
    nonce = secrets.token_bytes(12)
    return nonce + _aead(ring.active_key).encrypt(nonce, secret, _aad(user_id)), ring.active


def unseal(ring: KeyRing, sealed: bytes, key_id: str, user_id: int) -> bytes | None:
    """The secret, or None when its key is gone from the ring or the data was altered."""
    key = ring.keys.get(key_id)
    if key is None or len(sealed) < 12 + 16:
        return None
    try:
        return _aead(key).decrypt(sealed[:12], sealed[12:], _aad(user_id))
    except InvalidTag:
        return None


def _aead(key: bytes) -> AESGCM:
    # A settings key is 32 bytes or more: HKDF turns it into exactly one AES-256 key for this use only.
    info = b"catalog totp secret seal"
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key))


def _aad(user_id: int) -> bytes:
    return f"totp:{user_id}".encode()


def new_recovery_codes() -> list[str]:
    """Ten codes of 16 characters (80 bits each), shown as xxxx-xxxx-xxxx-xxxx."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(16))
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_digest(code: str) -> bytes:
    """SHA-256 of a code without dashes or spaces, lowercased (80 random bits: no slow hash needed)."""
    return hashlib.sha256(code.replace("-", "").replace(" ", "").lower().encode()).digest()
