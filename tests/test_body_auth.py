"""server/body.py and server/auth.py in process: what a declared body admits, and the wrapper's auth steps
(`optional` mode included, which no route uses yet)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, cast

import pytest
from robyn import Headers, Request

from server import auth as auth_module
from server.auth import Auth, Principal, bearer_token, require_scopes
from server.body import Field, JsonBody, RawBody
from server.errors import BadRequest, Forbidden, Unauthorized, UnsupportedMediaType, ValidationFailed


class FakeRequest:
    """What the body parsers read of a Robyn Request."""

    def __init__(self, body: str | bytes, content_type: str | None = "application/json") -> None:
        self.body = body
        self.headers = Headers({"Content-Type": content_type} if content_type else {})


def parse(spec: JsonBody | RawBody, body: str | bytes, content_type: str | None = "application/json") -> Any:
    return spec.parse(cast(Request, FakeRequest(body, content_type)))


SPEC = JsonBody(
    "Thing",
    (
        Field("name", "str", min_length=1, max_length=5),
        Field("note", "str", nullable=True),
        Field("n", "int", minimum=0, maximum=10),
        Field("price", "decimal", minimum=Decimal(0)),
        Field("on", "bool"),
    ),
    min_fields=1,
    exclusive=("n", "price"),
)


def errors(exc: pytest.ExceptionInfo[ValidationFailed]) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_json_members_are_checked_and_normalised() -> None:
    assert parse(SPEC, '{"name": " ab ", "note": "", "price": "1.50", "on": true}') == {
        "name": "ab",
        "note": None,
        "price": Decimal("1.50"),
        "on": True,
    }
    assert parse(SPEC, b'{"price": 2.1}') == {"price": Decimal("2.10")}
    assert parse(SPEC, '{"price": 3}') == {"price": Decimal("3.00")}
    with pytest.raises(ValidationFailed) as bad:
        parse(SPEC, '{"name": "toolong", "n": true, "price": 1.005, "on": 1, "x": 0}')
    assert errors(bad) == {
        "body.name",
        "body.n",
        "body.price",
        "body.on",
        "body.x",
        "body",
    }  # n and price: one
    with pytest.raises(ValidationFailed) as bad:
        parse(SPEC, '{"n": 1, "price": "1"}')
    assert errors(bad) == {"body"}
    with pytest.raises(ValidationFailed) as bad:
        parse(SPEC, "{}")
    assert errors(bad) == {"body"}


@pytest.mark.parametrize("raw", ["", "{", '{"a": NaN}', '{"a": Infinity}', '{"a":1,"a":2}', "[" * 50_000])
def test_malformed_json_is_400(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse(SPEC, raw)
    with pytest.raises(BadRequest):
        parse(SPEC, b"\xff" + raw.encode())


@pytest.mark.parametrize(
    "content_type", [None, "text/json", "application/json; charset=latin-1", "image/png"]
)
def test_json_needs_its_media_type(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        parse(SPEC, '{"name": "a"}', content_type)


def test_raw_bodies() -> None:
    spec = RawBody(("image/png",), 100)
    assert parse(spec, b"\x89PNG", "image/png") == b"\x89PNG"
    assert parse(spec, "text", "IMAGE/PNG; x=1") == b"text"  # Robyn hands UTF-8 bodies over as str
    with pytest.raises(UnsupportedMediaType):
        parse(spec, b"x", "image/jpeg")
    with pytest.raises(ValidationFailed):
        parse(spec, b"", "image/png")


def test_openapi_of_bodies_is_json_serialisable() -> None:
    import orjson

    doc = SPEC.openapi()
    schema = doc["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False and schema["minProperties"] == 1
    assert schema["properties"]["note"]["nullable"] is True
    orjson.dumps(doc)


class Keys:
    """An authenticator knowing one token."""

    scheme = "bearerAuth"
    description = "test"

    async def authenticate(self, token: str) -> Principal | None:
        return Principal(7, "key", "t", frozenset({"a:b"})) if token == "good" else None


def identify(mode: str, authorization: str | None) -> tuple[Principal | None, Exception | None]:
    auth = Auth(Keys(), mode, ("a:b",))  # type: ignore[arg-type]
    headers = Headers({"Authorization": authorization} if authorization is not None else {})
    return asyncio.run(auth_module.identify(auth, headers))


def test_identify_required_and_optional() -> None:
    principal, refused = identify("required", "Bearer good")
    assert principal is not None and principal.rate_key == "key:7" and refused is None
    assert isinstance(identify("required", None)[1], Unauthorized)
    assert identify("optional", None) == (None, None)  # anonymous is fine
    for bad in ("Bearer bad", "Basic x", "Bearer", "Bearer a b"):
        assert isinstance(identify("optional", bad)[1], Unauthorized), bad  # a bad token never is
    assert bearer_token(Headers({"Authorization": "bearer  good "})) == "good"


def test_scopes() -> None:
    require_scopes(Principal(1, "key", "k", frozenset({"x", "y"})), ("x",))
    with pytest.raises(Forbidden) as denied:
        require_scopes(Principal(1, "key", "k", frozenset({"x"})), ("x", "z"))
    assert 'scope="x z"' in denied.value.headers["WWW-Authenticate"]
