"""Account inputs (JSON bodies) and the shapes of the answers."""

from __future__ import annotations

from typing import Any

from server.body import Field, JsonBody

# Printable ASCII without spaces (checked after NFKC, so full-width forms count): local part, domain, a dot
# and a top-level domain. The service checks the same pattern: every address the document allows is accepted.
EMAIL_PATTERN = r"^[!-?A-~]{1,64}@[!-?A-~]{1,189}\.[!-,\-/-?A-~]{2,63}$"

EMAIL = Field(
    "email",
    "str",
    required=True,
    min_length=3,
    max_length=254,
    description="an email address (printable ASCII after NFKC)",
    pattern=EMAIL_PATTERN,
)
# Passwords: length is checked after NFKC by the service (8-128); the body bound only stops abuse.
PASSWORD_MAX = 1024


def _password(name: str, description: str = "") -> Field:
    return Field(name, "str", required=True, min_length=1, max_length=PASSWORD_MAX, description=description)


def _token(name: str, description: str) -> Field:
    return Field(name, "str", required=True, min_length=16, max_length=128, description=description)


CODE = Field(
    "code", "str", min_length=6, max_length=6, description="the 6-digit code of the authenticator app"
)

REGISTER = JsonBody(
    "AccountRegister",
    (
        EMAIL,
        _password("password", "8-128 characters after NFKC; common passwords are refused"),
        Field("name", "str", nullable=True, max_length=100),
    ),
)
VERIFY_EMAIL = JsonBody("AccountVerifyEmail", (_token("token", "from the verification mail"),))
LOGIN = JsonBody("AccountLogin", (EMAIL, _password("password")))
MFA_VERIFY = JsonBody(
    "AccountMfaVerify",
    (
        _token("mfa_token", "from POST /api/auth/login"),
        CODE,
        Field("recovery_code", "str", min_length=16, max_length=24, description="one of the recovery codes"),
    ),
    min_fields=2,
    exclusive=("code", "recovery_code"),
    description="The mfa_token and either `code` or `recovery_code`.",
)
MFA_CODE = JsonBody("AccountMfaCode", (Field("code", "str", required=True, min_length=6, max_length=6),))
MFA_DISABLE = JsonBody(
    "AccountMfaDisable",
    (
        _password("password"),
        Field(
            "code", "str", required=True, min_length=6, max_length=24, description="a TOTP or recovery code"
        ),
    ),
)
REFRESH = JsonBody("AccountRefresh", (_token("refresh_token", "the latest refresh token of this sign-in"),))
PASSWORD_CHANGE = JsonBody(
    "AccountPasswordChange", (_password("current"), _password("new", "8-128 characters"))
)
RESET_REQUEST = JsonBody("AccountResetRequest", (EMAIL,))
RESET_CONFIRM = JsonBody(
    "AccountResetConfirm",
    (_token("token", "from the reset mail"), _password("new_password", "8-128 characters")),
)

_STR: dict[str, Any] = {"type": "string"}
ACCEPTED_SCHEMA: dict[str, Any] = {
    "title": "AccountAccepted",
    "type": "object",
    "required": ["status", "detail"],
    "properties": {"status": {"type": "string", "enum": ["accepted"]}, "detail": _STR},
    "x-statuses": [202],
}
STATUS_SCHEMA: dict[str, Any] = {
    "title": "AccountStatus",
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["verified", "signed_out", "changed"]}},
}
_TOKEN_PROPS: dict[str, Any] = {
    "access_token": {"type": "string", "description": "a JWT (HS256, `kid` header)"},
    "token_type": {"type": "string", "enum": ["Bearer"]},
    "expires_in": {"type": "integer", "description": "seconds the access token is valid"},
    "refresh_token": {"type": "string", "description": "opaque; single use: each refresh returns the next"},
    "refresh_expires_at": {
        "type": "string",
        "format": "date-time",
        "description": "absolute end of this sign-in",
    },
}
TOKENS_SCHEMA: dict[str, Any] = {
    "title": "AccountTokens",
    "type": "object",
    "required": list(_TOKEN_PROPS),
    "properties": _TOKEN_PROPS,
}
LOGIN_SCHEMA: dict[str, Any] = {
    "title": "AccountLoginResult",
    "type": "object",
    "required": ["mfa_required"],
    "description": "Tokens, or (mfa_required true) an mfa_token for POST /api/auth/mfa/verify.",
    "properties": {
        "mfa_required": {"type": "boolean"},
        "mfa_token": _STR,
        "expires_in": {"type": "integer"},
        **{k: v for k, v in _TOKEN_PROPS.items() if k != "expires_in"},
    },
}
ME_SCHEMA: dict[str, Any] = {
    "title": "AccountMe",
    "type": "object",
    "required": ["id", "email", "email_verified", "mfa_enabled", "recovery_codes_left", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "email": _STR,
        "name": {"type": "string", "nullable": True},
        "email_verified": {"type": "boolean"},
        "mfa_enabled": {"type": "boolean"},
        "recovery_codes_left": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
MFA_SETUP_SCHEMA: dict[str, Any] = {
    "title": "AccountMfaSetup",
    "type": "object",
    "required": ["secret", "otpauth_uri", "qr_svg"],
    "properties": {
        "secret": {"type": "string", "description": "base32, for typing into an authenticator app"},
        "otpauth_uri": _STR,
        "qr_svg": {"type": "string", "description": "the URI as an SVG QR code"},
    },
}
MFA_STATE_SCHEMA: dict[str, Any] = {
    "title": "AccountMfaState",
    "type": "object",
    "required": ["mfa_enabled"],
    "properties": {
        "mfa_enabled": {"type": "boolean"},
        "recovery_codes": {
            "type": "array",
            "items": _STR,
            "description": "10 single-use codes, shown this once (enable and regenerate only)",
        },
    },
}
