"""Declarative input specs: parse and validate path and query parameters, and describe them in OpenAPI.

Robyn's own typed parameters answer errors in text/plain outside our error model, so every route declares
its inputs here instead; failures become one ValidationFailed naming every bad field, in English and Arabic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from server.errors import FieldError, ValidationFailed

Kind = Literal["int", "str", "bool", "decimal", "enum", "raw", "list"]
Location = Literal["path", "query", "header"]

_INT_RE = re.compile(r"[+-]?[0-9]{1,18}")
_DECIMAL_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


@dataclass(frozen=True, slots=True)
class Param:
    """One input: its name, where it comes from, its type and bounds, and how OpenAPI shows it."""

    name: str
    kind: Kind
    location: Location = "query"
    description: str = ""
    required: bool = False
    default: Any = None
    minimum: int | Decimal | None = None
    maximum: int | Decimal | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    # "list": one comma-separated value (`a,b,c`, never a repeated parameter), as a tuple: at most
    # `max_items` entries (max_length bounds the whole raw value); with `choices` each entry is one of them
    # exactly, else each has at most `item_max_length` characters, is trimmed, and blank ones are dropped.
    max_items: int | None = None
    item_max_length: int | None = None
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "_regex", re.compile(self.pattern))

    @property
    def field(self) -> str:
        """The name used in error bodies: `query.page_size`, `path.id`."""
        return f"{self.location}.{self.name}"

    def parse(self, raw: str) -> Any:
        """Convert one raw string; raise FieldError-carrying ValueError on bad input."""
        match self.kind:
            case "int":
                if not _INT_RE.fullmatch(raw):
                    raise _Bad("must be an integer", "يجب أن يكون عدداً صحيحاً")
                value: Any = int(raw)
            case "decimal":
                if not _DECIMAL_RE.fullmatch(raw):
                    raise _Bad(
                        "must be a non-negative number with at most 2 decimals",
                        "يجب أن يكون رقماً غير سالب بخانتين عشريتين على الأكثر",
                    )
                try:
                    value = Decimal(raw)
                except InvalidOperation:  # pragma: no cover - the regex admits only valid numbers
                    raise _Bad("must be a number", "يجب أن يكون رقماً") from None
            case "bool":
                low = raw.lower()
                if low not in _TRUE and low not in _FALSE:
                    raise _Bad("must be true or false", "يجب أن تكون القيمة true أو false")
                value = low in _TRUE
            case "enum":
                if raw not in self.choices:
                    allowed = ", ".join(self.choices)
                    raise _Bad(f"must be one of: {allowed}", f"يجب أن تكون إحدى القيم: {allowed}")
                value = raw
            case "list":
                value = self._parse_list(raw)
            case "raw":  # checked by the handler itself (e.g. image names answer 404, not 422)
                value = raw
            case "str":
                value = raw.strip()
                if self.max_length is not None and len(value) > self.max_length:
                    raise _Bad(
                        f"must be at most {self.max_length} characters",
                        f"يجب ألا يزيد طوله عن {self.max_length} حرفاً",
                    )
                if not value or "\x00" in value:
                    raise _Bad("must be a non-empty printable string", "يجب أن يكون نصاً غير فارغ")
                if self._regex is not None and not self._regex.fullmatch(value):
                    raise _Bad("has an invalid format", "تنسيقه غير صالح")
        if self.minimum is not None and value < self.minimum:
            raise _Bad(f"must be at least {self.minimum}", f"يجب ألا يقل عن {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise _Bad(f"must be at most {self.maximum}", f"يجب ألا يزيد عن {self.maximum}")
        return value

    def _parse_list(self, raw: str) -> tuple[str, ...]:
        if self.max_length is not None and len(raw) > self.max_length:
            raise _Bad(
                f"must be at most {self.max_length} characters",
                f"يجب ألا يزيد طوله عن {self.max_length} حرفاً",
            )
        parts = raw.split(",")
        if self.max_items is not None and len(parts) > self.max_items:
            raise _Bad(
                f"must list at most {self.max_items} entries",
                f"يجب ألا يزيد عدد العناصر عن {self.max_items}",
            )
        if self.choices:
            if any(p not in self.choices for p in parts):
                allowed = ", ".join(self.choices)
                raise _Bad(
                    f"must be a comma-separated list of: {allowed}",
                    f"يجب أن يكون قائمة مفصولة بفواصل من: {allowed}",
                )
            return tuple(parts)
        if self.item_max_length is not None and any(len(p) > self.item_max_length for p in parts):
            raise _Bad(
                f"entries must be at most {self.item_max_length} characters each",
                f"يجب ألا يزيد طول كل عنصر عن {self.item_max_length} حرفاً",
            )
        return tuple(entry for entry in (p.strip() for p in parts) if entry)

    def _list_pattern(self) -> str:
        # Exactly what _parse_list admits (so a schema-valid request is never refused, nor an invalid one
        # served): choices as they are, or free entries of up to item_max_length characters, blank ones too.
        if self.choices:
            entry = "(?:" + "|".join(map(re.escape, self.choices)) + ")"
        else:
            entry = "[^,]*" if self.item_max_length is None else f"[^,]{{0,{self.item_max_length}}}"
        more = "*" if self.max_items is None else f"{{0,{self.max_items - 1}}}"
        return f"{entry}(?:,{entry}){more}"

    def openapi(self) -> dict[str, Any]:
        """This parameter as an OpenAPI 3.0 Parameter Object."""
        schemas: dict[str, dict[str, Any]] = {
            "int": {"type": "integer"},
            "str": {"type": "string"},
            "bool": {"type": "boolean"},
            "decimal": {"type": "string", "pattern": f"^{_DECIMAL_RE.pattern}$"},
            "enum": {"type": "string", "enum": list(self.choices)},
            "raw": {"type": "string"},
            # A string, not an array: the value is one parameter (`a,b`), never repeated (`a&a`).
            "list": {"type": "string", "pattern": f"^{self._list_pattern()}$"},
        }
        schema = dict(schemas[self.kind])
        if self.kind == "int":  # decimal bounds are enforced, but a string schema cannot state them
            if self.minimum is not None:
                schema["minimum"] = self.minimum
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.pattern is not None:
            schema["pattern"] = f"^{self.pattern}$"  # JSON Schema patterns search; ours must match whole
        if self.default is not None:
            schema["default"] = self.default
        return {
            "name": self.name,
            "in": self.location,
            "required": self.required or self.location == "path",
            "description": self.description,
            "schema": schema,
        }


class _Bad(ValueError):
    def __init__(self, en: str, ar: str) -> None:
        super().__init__(en)
        self.en, self.ar = en, ar


PAGE = Param("page", "int", default=1, minimum=1, maximum=1_000_000, description="1-based page number")
PAGE_SIZE = Param("page_size", "int", default=50, minimum=1, maximum=200, description="items per page")


def parse_inputs(
    specs: Sequence[Param],
    query: Mapping[str, list[str]],
    path: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Validate query (name -> all values) and path params against specs; raise ValidationFailed."""
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    known = {s.name for s in specs if s.location == "query"}
    for name in query:
        if name not in known:
            errors.append(FieldError(f"query.{name}", "unknown parameter", "معامل غير معروف"))
    for spec in specs:
        raw: str | None
        if spec.location == "header":
            continue  # documented here, read and checked by the handler (e.g. Idempotency-Key)
        if spec.location == "path":
            raw = (path or {}).get(spec.name)
        else:
            values = query.get(spec.name)
            if values is not None and len(values) > 1:
                errors.append(FieldError(spec.field, "must be given once", "يجب أن يُذكر مرة واحدة فقط"))
                continue
            raw = values[0] if values else None
        # An empty search box (`q=`) means no filter; an empty number, flag or choice is an error.
        if raw is None or (raw == "" and spec.location == "query" and spec.kind == "str"):
            if spec.required or spec.location == "path":
                errors.append(FieldError(spec.field, "is required", "هذا الحقل مطلوب"))
            out[spec.name] = spec.default
            continue
        try:
            out[spec.name] = spec.parse(raw)
        except _Bad as bad:
            errors.append(FieldError(spec.field, bad.en, bad.ar))
    if errors:
        raise ValidationFailed(errors=errors)
    return out
