"""Request bodies: JSON objects checked against declared fields, or raw bytes of listed media types.

Like `params.Param`, each body is declared once (`JsonBody` / `RawBody` on the Route) and drives the
checks, the bilingual errors and the OpenAPI requestBody. A wrong Content-Type is 415, JSON that does not
parse is 400, a body over the route's limit is 413 (checked by the edge before this), and every field
that is wrong, missing or unknown is named in one 422 (`body.name_ar`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from robyn import Request

from server.errors import BadRequest, FieldError, UnsupportedMediaType, ValidationFailed

Kind = Literal["str", "int", "decimal", "bool", "objects"]
JSON_MEDIA = "application/json"
CENT = Decimal("0.01")
_DECIMAL_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
INT_MAX = 2_147_483_647  # int4 columns


def body_bytes(request: Request) -> bytes:
    """The request body as bytes (Robyn hands over `str` when the bytes are valid UTF-8)."""
    body = request.body
    if isinstance(body, str):
        return body.encode()
    return bytes(body) if body else b""


def media_type(request: Request) -> tuple[str, str]:
    """(media type lowercased, its parameters) of the request's Content-Type; ("", "") when absent."""
    raw = request.headers.get("content-type") or ""
    kind, _, rest = raw.partition(";")
    return kind.strip().lower(), rest.strip().lower()


class _Bad(ValueError):
    def __init__(self, en: str, ar: str, where: str = "") -> None:
        super().__init__(en)
        self.en, self.ar, self.where = en, ar, where  # where: inside the member, e.g. "[2].quantity"


@dataclass(frozen=True, slots=True)
class Field:
    """One member of a JSON object body: its type, bounds, whether null is allowed, how OpenAPI shows it."""

    name: str
    kind: Kind
    nullable: bool = False
    required: bool = False
    min_length: int = 0
    max_length: int | None = None
    minimum: int | Decimal | None = None
    maximum: int | Decimal | None = None
    description: str = ""
    # Documented only (OpenAPI `pattern`): the service checks the value itself, after normalising it.
    pattern: str | None = None
    # "objects": an array of JSON objects with these members (unknown ones refused), min..max_length long.
    items: tuple[Field, ...] = ()

    def parse(self, value: Any) -> Any:
        """The checked value; raises _Bad naming what is wrong."""
        if value is None:
            if self.nullable:
                return None
            raise _Bad("must not be null", "يجب ألا تكون القيمة فارغة (null)")
        match self.kind:
            case "str":
                if not isinstance(value, str):
                    raise _Bad("must be a string", "يجب أن يكون نصاً")
                value = value.strip()
                if not value and self.nullable:
                    return None  # "" clears an optional text, like null
                if "\x00" in value:
                    raise _Bad("must not contain NUL characters", "يجب ألا يحتوي على محارف NUL")
                if len(value) < self.min_length:
                    raise _Bad(
                        f"must be at least {self.min_length} characters",
                        f"يجب ألا يقل طوله عن {self.min_length} حرفاً",
                    )
                if self.max_length is not None and len(value) > self.max_length:
                    raise _Bad(
                        f"must be at most {self.max_length} characters",
                        f"يجب ألا يزيد طوله عن {self.max_length} حرفاً",
                    )
                return value
            case "int":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise _Bad("must be an integer", "يجب أن يكون عدداً صحيحاً")
            case "bool":
                if not isinstance(value, bool):
                    raise _Bad("must be true or false", "يجب أن تكون القيمة true أو false")
                return value
            case "decimal":
                value = _decimal(value)
            case "objects":
                return self._objects(value)
        if self.minimum is not None and value < self.minimum:
            raise _Bad(f"must be at least {self.minimum}", f"يجب ألا يقل عن {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise _Bad(f"must be at most {self.maximum}", f"يجب ألا يزيد عن {self.maximum}")
        return value

    def _objects(self, value: Any) -> list[dict[str, Any]]:
        """An array of objects: each member checked; the first problem is named with its index."""
        if not isinstance(value, list):
            raise _Bad("must be an array", "يجب أن يكون مصفوفة")
        if len(value) < self.min_length:
            raise _Bad(
                f"must have at least {self.min_length} entries",
                f"يجب ألا يقل عدد العناصر عن {self.min_length}",
            )
        if self.max_length is not None and len(value) > self.max_length:
            raise _Bad(
                f"must have at most {self.max_length} entries",
                f"يجب ألا يزيد عدد العناصر عن {self.max_length}",
            )
        known = {f.name: f for f in self.items}
        out: list[dict[str, Any]] = []
        for i, entry in enumerate(value):
            if not isinstance(entry, dict):
                raise _Bad("must be a JSON object", "يجب أن يكون كائن JSON", f"[{i}]")
            for name in entry:
                if name not in known:
                    raise _Bad("unknown field", "حقل غير معروف", f"[{i}].{name[:64]}")
            checked: dict[str, Any] = {}
            for spec in self.items:
                if spec.name not in entry:
                    if spec.required:
                        raise _Bad("is required", "هذا الحقل مطلوب", f"[{i}].{spec.name}")
                    continue
                try:
                    checked[spec.name] = spec.parse(entry[spec.name])
                except _Bad as bad:
                    raise _Bad(bad.en, bad.ar, f"[{i}].{spec.name}{bad.where}") from None
            out.append(checked)
        return out

    def openapi(self) -> dict[str, Any]:
        """This member as an OpenAPI 3.0 schema."""
        schema: dict[str, Any]
        match self.kind:
            case "str":
                schema = {"type": "string", "minLength": self.min_length}
                if self.max_length is not None:
                    schema["maxLength"] = self.max_length
                if self.pattern is not None:
                    schema["pattern"] = self.pattern
            case "int" | "decimal":
                schema = {"type": "integer" if self.kind == "int" else "number"}
                if self.minimum is not None:
                    schema["minimum"] = _json_number(self.minimum)
                if self.maximum is not None:
                    schema["maximum"] = _json_number(self.maximum)
                if self.kind == "decimal":  # a number, or the same as a string (exact: "12.50")
                    schema = {"oneOf": [schema, {"type": "string", "pattern": f"^{_DECIMAL_RE.pattern}$"}]}
            case "bool":
                schema = {"type": "boolean"}
            case "objects":
                item: dict[str, Any] = {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {f.name: f.openapi() for f in self.items},
                }
                required = [f.name for f in self.items if f.required]
                if required:
                    item["required"] = required
                schema = {"type": "array", "items": item, "minItems": self.min_length}
                if self.max_length is not None:
                    schema["maxItems"] = self.max_length
        if self.nullable:
            schema["nullable"] = True
        if self.description:
            schema["description"] = self.description
        return schema


def _json_number(value: int | Decimal) -> int | float:
    return int(value) if value == int(value) else float(value)


def _decimal(value: Any) -> Decimal:
    """A price: a JSON number or a numeric string, non-negative, with at most 2 decimals, exact."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise _Bad("must be a number", "يجب أن يكون رقماً")
    if isinstance(value, str):
        if not _DECIMAL_RE.fullmatch(value.strip()):
            raise _Bad(
                "must be a non-negative number with at most 2 decimals",
                "يجب أن يكون رقماً غير سالب بخانتين عشريتين على الأكثر",
            )
        value = value.strip()
    try:
        number = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the regex and the JSON parser admit only numbers
        raise _Bad("must be a number", "يجب أن يكون رقماً") from None
    if not number.is_finite() or number != number.quantize(CENT, rounding="ROUND_DOWN"):
        raise _Bad("must have at most 2 decimals", "يجب ألا يزيد عدد الخانات العشرية عن خانتين")
    return number.quantize(CENT)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key[:64]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _malformed(reason: str) -> BadRequest:
    return BadRequest(f"The body is not valid JSON: {reason}.", "محتوى الطلب ليس JSON صالحاً.")


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A JSON object body. `title` names its OpenAPI schema; unknown members are refused (422)."""

    title: str
    fields: tuple[Field, ...]
    min_fields: int = 0  # at least this many members (a PATCH must change something)
    exclusive: tuple[str, ...] = ()  # at most one of these members
    description: str = ""
    max_bytes: int | None = None  # None: MAX_BODY_BYTES
    optional: bool = False  # an empty body (any or no Content-Type) is the empty object

    def parse(self, request: Request) -> dict[str, Any]:
        """The checked members (only those given); 415, 400 or one 422 naming every bad member."""
        if self.optional and not body_bytes(request):
            return self.check({})
        kind, params = media_type(request)
        if kind != JSON_MEDIA or (params.startswith("charset=") and params not in ("charset=utf-8",)):
            raise UnsupportedMediaType(
                "This endpoint takes `Content-Type: application/json` (UTF-8).",
                "تقبل هذه الواجهة `Content-Type: application/json` بترميز UTF-8 فقط.",
            )
        raw = request.body
        if isinstance(raw, bytes | bytearray):
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise _malformed("not UTF-8") from None
        else:
            text = raw or ""
        try:
            doc = json.loads(
                text, parse_float=Decimal, parse_constant=_no_constants, object_pairs_hook=_no_duplicates
            )
        except RecursionError:
            raise _malformed("nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise _malformed(str(exc)[:200]) from None
        if not isinstance(doc, dict):
            raise ValidationFailed(
                errors=[FieldError("body", "must be a JSON object", "يجب أن يكون كائن JSON")]
            )
        return self.check(doc)

    def check(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Validate a decoded object: every problem named at once."""
        errors: list[FieldError] = []
        known = {f.name: f for f in self.fields}
        for name in doc:
            if name not in known:
                errors.append(FieldError(f"body.{name[:64]}", "unknown field", "حقل غير معروف"))
        out: dict[str, Any] = {}
        for spec in self.fields:
            if spec.name not in doc:
                if spec.required:
                    errors.append(FieldError(f"body.{spec.name}", "is required", "هذا الحقل مطلوب"))
                continue
            try:
                out[spec.name] = spec.parse(doc[spec.name])
            except _Bad as bad:
                errors.append(FieldError(f"body.{spec.name}{bad.where}", bad.en, bad.ar))
        given = [n for n in self.exclusive if n in doc]
        if len(given) > 1:
            names = ", ".join(given)
            errors.append(FieldError("body", f"give only one of: {names}", f"أرسل واحداً فقط من: {names}"))
        if not errors and len(out) < self.min_fields:
            names = ", ".join(known)
            errors.append(
                FieldError(
                    "body", f"must set at least one of: {names}", f"يجب تعيين واحد على الأقل من: {names}"
                )
            )
        if errors:
            raise ValidationFailed(errors=errors)
        return out

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI requestBody (its schema titled, so it becomes a named component)."""
        schema: dict[str, Any] = {
            "title": self.title,
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: f.openapi() for f in self.fields},
        }
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        if self.min_fields:
            schema["minProperties"] = self.min_fields
        if self.exclusive and set(self.exclusive) == set(schema["properties"]):
            schema["maxProperties"] = 1
        return {
            "description": self.description,
            "required": not self.optional,
            "content": {JSON_MEDIA: {"schema": schema}},
        }


@dataclass(frozen=True, slots=True)
class RawBody:
    """A raw binary body of one of `media_types`, at most `max_bytes` (e.g. an image upload)."""

    media_types: tuple[str, ...]
    max_bytes: int
    description: str = ""

    def parse(self, request: Request) -> bytes:
        """The body's bytes; 415 for another Content-Type, 422 when empty (size: checked by the edge)."""
        kind, _ = media_type(request)
        if kind not in self.media_types:
            accepted = ", ".join(self.media_types)
            raise UnsupportedMediaType(
                f"This endpoint takes a body of type {accepted}.",
                f"تقبل هذه الواجهة محتوى من النوع {accepted}.",
            )
        data = body_bytes(request)
        if not data:
            raise ValidationFailed(errors=[FieldError("body", "is required", "هذا الحقل مطلوب")])
        return data

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI requestBody: the same binary schema under each media type."""
        binary = {"type": "string", "format": "binary", "maxLength": self.max_bytes}
        return {
            "description": self.description,
            "required": True,
            "content": {m: {"schema": binary} for m in self.media_types},
        }


BodySpec = JsonBody | RawBody


def inputs_and_body(
    inputs: Callable[[], tuple[dict[str, Any], Any]], request: Request, spec: BodySpec
) -> tuple[dict[str, Any], Any, Any]:
    """Validated params (from `inputs`) and body, with the bad fields of both named in one 422."""
    errors: list[FieldError] = []
    params: dict[str, Any] = {}
    typed = body = None
    try:
        params, typed = inputs()
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    try:
        body = spec.parse(request)
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    if errors:
        raise ValidationFailed(errors=errors)
    return params, typed, body
