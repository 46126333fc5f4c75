"""Account routes under /api/auth, rate-limited by the `auth` policy (signed-in callers as `user:<id>`)."""

from __future__ import annotations

from typing import Any

import orjson

from server.accounts import mfa, schemas
from server.accounts.service import Accounts
from server.accounts.throttle import Throttle
from server.accounts.tokens import AccessTokens, UserPrincipal
from server.auth import Auth, AuthMode
from server.errors import AppError
from server.http import Call, Handler, Reply, Route
from server.state import AppState

PREFIX = "/api/auth"
_OUTCOMES = {401: "failed", 429: "throttled"}  # sign-in and MFA refusals as metric outcomes (/metrics)


def _reply(doc: dict[str, Any], status: int = 200) -> Reply:
    return Reply(orjson.dumps(doc), status=status)


def _user(call: Call) -> UserPrincipal:
    assert isinstance(call.principal, UserPrincipal)  # the route requires an access token
    return call.principal


# id(state) -> its account service: one entry per app. Made on first use, without I/O; its hashing threads
# and key files are made lazily too, so each forked process gets its own.
_SERVICES: dict[int, Accounts] = {}


def _make(state: AppState) -> Accounts:
    service = _SERVICES.get(id(state))
    if service is None:
        throttle = Throttle.from_settings(state.settings, lambda: state.res.redis)
        service = _SERVICES[id(state)] = Accounts(state.settings, throttle)
    return service


def start(state: AppState) -> None:
    """Per-process start-up (after the fork): the outbox sweeper."""
    _make(state).mailer.start(lambda: state.res.pool, state.settings.MAIL_SWEEP_S)


async def stop(state: AppState) -> None:
    """Per-process shutdown: stop the sweeper and the hashing threads."""
    service = _SERVICES.get(id(state))
    if service is not None:
        await service.mailer.stop()
        service.hasher.close()


def user_auth(state: AppState, mode: AuthMode = "required") -> Auth:
    """Shoppers' access tokens (verified in memory, no I/O): required on account routes, optional on the
    catalog's, where a signed-in shopper is rate-limited as `user:<id>` rather than by address."""
    return Auth(AccessTokens(lambda: _make(state).jwt_ring), mode)


def routes(state: AppState) -> list[Route]:
    """The account endpoints."""
    mfa_ttl = state.settings.AUTH_MFA_TOKEN_TTL_S
    auth = user_auth(state)

    def svc() -> Accounts:
        return _make(state)

    async def register(call: Call) -> Reply:
        b = call.body
        doc = await svc().register(
            state.res.pool, email=b["email"], password=b["password"], name=b.get("name")
        )
        return _reply(doc, 202)

    async def verify_email(call: Call) -> Reply:
        return _reply(await svc().verify_email(state.res.pool, token=call.body["token"]))

    def count(family: str, outcome: str) -> None:
        if state.obs is not None:
            state.obs.metrics.inc(family, (outcome,))

    async def login(call: Call) -> Reply:
        b = call.body
        try:
            doc = await svc().login(
                state.res.pool, email=b["email"], password=b["password"], mfa_ttl_s=mfa_ttl
            )
        except AppError as exc:
            count("auth_sign_ins_total", _OUTCOMES.get(exc.status, "error"))
            raise
        count("auth_sign_ins_total", "mfa_required" if doc.get("mfa_required") else "ok")
        return _reply(doc)

    async def mfa_verify(call: Call) -> Reply:
        b = call.body
        try:
            doc = await mfa.verify(
                svc(),
                state.res.pool,
                mfa_token=b["mfa_token"],
                code=b.get("code"),
                recovery_code=b.get("recovery_code"),
            )
        except AppError as exc:
            count("auth_mfa_verifications_total", _OUTCOMES.get(exc.status, "error"))
            raise
        count("auth_mfa_verifications_total", "ok")
        return _reply(doc)

    async def mfa_setup(call: Call) -> Reply:
        return _reply(await mfa.setup(svc(), state.res.pool, user_id=_user(call).id))

    async def mfa_enable(call: Call) -> Reply:
        return _reply(await mfa.enable(svc(), state.res.pool, user_id=_user(call).id, code=call.body["code"]))

    async def mfa_disable(call: Call) -> Reply:
        b = call.body
        doc = await mfa.disable(
            svc(), state.res.pool, user_id=_user(call).id, password=b["password"], code=b["code"]
        )
        return _reply(doc)

    async def mfa_recovery(call: Call) -> Reply:
        return _reply(
            await mfa.regenerate(svc(), state.res.pool, user_id=_user(call).id, code=call.body["code"])
        )

    async def refresh(call: Call) -> Reply:
        return _reply(await svc().refresh(state.res.pool, refresh_token=call.body["refresh_token"]))

    def logout_handler(everywhere: bool) -> Handler:
        async def handler(call: Call) -> Reply:
            user = _user(call)
            doc = await svc().logout(
                state.res.pool, user_id=user.id, session=user.session, everywhere=everywhere
            )
            return _reply(doc)

        return handler

    async def me(call: Call) -> Reply:
        return _reply(await svc().me(state.res.pool, user_id=_user(call).id))

    async def password(call: Call) -> Reply:
        b = call.body
        doc = await svc().change_password(
            state.res.pool, user_id=_user(call).id, current=b["current"], new=b["new"]
        )
        return _reply(doc)

    async def reset_request(call: Call) -> Reply:
        return _reply(await svc().reset_request(state.res.pool, email=call.body["email"]), 202)

    async def reset_confirm(call: Call) -> Reply:
        b = call.body
        doc = await svc().reset_confirm(state.res.pool, token=b["token"], new_password=b["new_password"])
        return _reply(doc)

    common: dict[str, Any] = {"tag": "accounts", "group": "auth", "head": False}
    signed_in: dict[str, Any] = {**common, "auth": auth}
    s = schemas
    return [
        Route(
            "POST",
            f"{PREFIX}/register",
            register,
            body=s.REGISTER,
            response_schema=s.ACCEPTED_SCHEMA,
            summary="Sign up: always 202 (a verification mail, or a notice to an existing account)",
            errors=(422, 503),
            **common,
        ),
        Route(
            "POST",
            f"{PREFIX}/verify-email",
            verify_email,
            body=s.VERIFY_EMAIL,
            response_schema=s.STATUS_SCHEMA,
            summary="Confirm an email address with the token of the verification mail",
            errors=(422,),
            **common,
        ),
        Route(
            "POST",
            f"{PREFIX}/login",
            login,
            body=s.LOGIN,
            response_schema=s.LOGIN_SCHEMA,
            summary="Sign in: tokens, or an mfa_token when MFA is on (one 401 for every failure)",
            errors=(401, 422, 429, 503),
            **common,
        ),
        Route(
            "POST",
            f"{PREFIX}/mfa/verify",
            mfa_verify,
            body=s.MFA_VERIFY,
            response_schema=s.TOKENS_SCHEMA,
            summary="Second sign-in step: a TOTP or recovery code (5 tries per mfa_token)",
            errors=(401, 422),
            **common,
        ),
        Route(
            "POST",
            f"{PREFIX}/refresh",
            refresh,
            body=s.REFRESH,
            response_schema=s.TOKENS_SCHEMA,
            summary="Rotate the refresh token: a new pair (a reused token revokes its whole sign-in)",
            errors=(401, 422),
            **common,
        ),
        Route(
            "POST",
            f"{PREFIX}/password-reset/request",
            reset_request,
            body=s.RESET_REQUEST,
            response_schema=s.ACCEPTED_SCHEMA,
            summary="Mail a password reset link: always 202",
            errors=(422,),
            **common,
        ),
        Route(
            "POST",
            f"{PREFIX}/password-reset/confirm",
            reset_confirm,
            body=s.RESET_CONFIRM,
            response_schema=s.STATUS_SCHEMA,
            summary="Set a new password with the mailed token (signs out everywhere; MFA stays on)",
            errors=(422, 503),
            **common,
        ),
        Route(
            "GET",
            f"{PREFIX}/me",
            me,
            response_schema=s.ME_SCHEMA,
            summary="The signed-in shopper",
            errors=(),
            **signed_in,
        ),
        Route(
            "POST",
            f"{PREFIX}/logout",
            logout_handler(False),
            response_schema=s.STATUS_SCHEMA,
            summary="Sign out this session (its refresh tokens)",
            errors=(),
            **signed_in,
        ),
        Route(
            "POST",
            f"{PREFIX}/logout-all",
            logout_handler(True),
            response_schema=s.STATUS_SCHEMA,
            summary="Sign out every session",
            errors=(),
            **signed_in,
        ),
        Route(
            "POST",
            f"{PREFIX}/password",
            password,
            body=s.PASSWORD_CHANGE,
            response_schema=s.STATUS_SCHEMA,
            summary="Change the password (signs out every session)",
            errors=(422, 503),
            **signed_in,
        ),
        Route(
            "POST",
            f"{PREFIX}/mfa/setup",
            mfa_setup,
            response_schema=s.MFA_SETUP_SCHEMA,
            summary="Start TOTP set-up: secret, otpauth URI and SVG QR code",
            errors=(422,),
            **signed_in,
        ),
        Route(
            "POST",
            f"{PREFIX}/mfa/enable",
            mfa_enable,
            body=s.MFA_CODE,
            response_schema=s.MFA_STATE_SCHEMA,
            summary="Confirm TOTP with a code: 10 recovery codes, shown once",
            errors=(422,),
            **signed_in,
        ),
        Route(
            "POST",
            f"{PREFIX}/mfa/disable",
            mfa_disable,
            body=s.MFA_DISABLE,
            response_schema=s.MFA_STATE_SCHEMA,
            summary="Turn MFA off (password and a code)",
            errors=(422, 503),
            **signed_in,
        ),
        Route(
            "POST",
            f"{PREFIX}/mfa/recovery-codes",
            mfa_recovery,
            body=s.MFA_CODE,
            response_schema=s.MFA_STATE_SCHEMA,
            summary="Replace the recovery codes (needs a code)",
            errors=(422,),
            **signed_in,
        ),
    ]
