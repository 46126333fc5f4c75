"""One error model: AppError subclasses with stable codes, rendered as RFC 9457 problem+json (en + ar)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://errors.catalog-api.example/"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input: where it was (`query.page_size`), and why in English and Arabic."""

    field: str
    message: str
    message_ar: str

    def as_dict(self) -> dict[str, str]:
        """The JSON shape of one entry of `errors`."""
        return {"field": self.field, "message": self.message, "message_ar": self.message_ar}


class AppError(Exception):
    """Base of every error the API reports on purpose. Subclasses fix code, status and titles."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal server error"
    title_ar: ClassVar[str] = "خطأ داخلي في الخادم"
    detail_default: ClassVar[str] = "The server could not complete the request."
    detail_ar_default: ClassVar[str] = "تعذّر على الخادم إتمام الطلب."

    def __init__(
        self,
        detail: str | None = None,
        detail_ar: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.detail_default
        self.detail_ar = detail_ar or self.detail_ar_default
        self.errors = errors or []
        self.headers = headers or {}
        super().__init__(self.detail)

    def body(self, request_id: str) -> bytes:
        """Serialize as application/problem+json."""
        doc: dict[str, Any] = {
            "type": TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "title_ar": self.title_ar,
            "detail_ar": self.detail_ar,
            "request_id": request_id,
        }
        if self.errors:
            doc["errors"] = [e.as_dict() for e in self.errors]
        return orjson.dumps(doc)


class BadRequest(AppError):
    """The request is malformed beyond a single field (bad encoding, bad headers)."""

    code, status = "bad_request", 400
    title, title_ar = "Bad request", "طلب غير صالح"
    detail_default = "The request could not be understood."
    detail_ar_default = "تعذّر فهم الطلب."


class NotFound(AppError):
    """The addressed resource does not exist."""

    code, status = "not_found", 404
    title, title_ar = "Not found", "غير موجود"
    detail_default = "The requested resource does not exist."
    detail_ar_default = "المورد المطلوب غير موجود."


class MethodNotAllowed(AppError):
    """The route exists but not with this method."""

    code, status = "method_not_allowed", 405
    title, title_ar = "Method not allowed", "الطريقة غير مسموح بها"
    detail_default = "This method is not allowed on this resource."
    detail_ar_default = "هذه الطريقة غير مسموح بها على هذا المورد."


class PayloadTooLarge(AppError):
    """The body is larger than MAX_BODY_BYTES."""

    code, status = "payload_too_large", 413
    title, title_ar = "Payload too large", "حجم الطلب كبير جداً"
    detail_default = "The request body is larger than the server accepts."
    detail_ar_default = "حجم محتوى الطلب أكبر مما يقبله الخادم."


class RangeNotSatisfiable(AppError):
    """A byte range that starts beyond the end of the file (sent with `Content-Range: bytes */<length>`)."""

    code, status = "range_not_satisfiable", 416
    title, title_ar = "Range not satisfiable", "النطاق المطلوب غير متاح"
    detail_default = "The requested byte range lies outside the file."
    detail_ar_default = "نطاق البايتات المطلوب يقع خارج الملف."


class ValidationFailed(AppError):
    """One or more inputs are invalid; `errors` names each field."""

    code, status = "validation_failed", 422
    title, title_ar = "Validation failed", "فشل التحقق من المدخلات"
    detail_default = "One or more inputs are invalid."
    detail_ar_default = "واحد أو أكثر من المدخلات غير صالح."


class RateLimited(AppError):
    """The client exceeded its quota for this route group."""

    code, status = "rate_limited", 429
    title, title_ar = "Too many requests", "طلبات كثيرة جداً"
    detail_default = "Too many requests; retry after the time in Retry-After."
    detail_ar_default = "عدد الطلبات كبير جداً؛ أعد المحاولة بعد المدة المذكورة في Retry-After."


class ServiceUnavailable(AppError):
    """A dependency the request needs (the database) is unavailable."""

    code, status = "service_unavailable", 503
    title, title_ar = "Service unavailable", "الخدمة غير متاحة"
    detail_default = "The service is temporarily unavailable; retry shortly."
    detail_ar_default = "الخدمة غير متاحة مؤقتاً؛ أعد المحاولة بعد قليل."


ALL_ERRORS: tuple[type[AppError], ...] = (
    AppError,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ValidationFailed,
    RateLimited,
    ServiceUnavailable,
)
