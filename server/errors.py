"""One error model: AppError subclasses with stable codes, rendered as RFC 9457 problem+json (en + ar).

Every error class lives here and registers its code when defined, so the OpenAPI `code` enum is derived
from the classes (`error_codes()`) and cannot drift from what the server returns.
"""

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
    registry: ClassVar[dict[str, type[AppError]]] = {}  # code -> class; filled as classes are defined
    # False: a refinement of its status that OpenAPI lists under the status's main class (the 400 of a
    # missing Idempotency-Key is documented with `bad_request`, naming both codes), not instead of it.
    documents_status: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            return  # a refinement that keeps its parent's code is the same error on the wire
        known = AppError.registry.get(cls.code)
        if known is not None:
            raise TypeError(f"error code {cls.code!r} of {cls.__qualname__} is taken by {known.__qualname__}")
        AppError.registry[cls.code] = cls

    def __init__(
        self,
        detail: str | None = None,
        detail_ar: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.detail_default
        self.detail_ar = detail_ar or self.detail_ar_default
        self.errors = errors or []
        self.headers = headers or {}
        self.extensions = extensions or {}  # RFC 9457 extension members (e.g. the short lines of an order)
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
        if self.extensions:
            doc.update({k: v for k, v in self.extensions.items() if k not in doc})
        return orjson.dumps(doc)


class BadRequest(AppError):
    """The request is malformed beyond a single field (bad encoding, bad headers)."""

    code, status = "bad_request", 400
    title, title_ar = "Bad request", "طلب غير صالح"
    detail_default = "The request could not be understood."
    detail_ar_default = "تعذّر فهم الطلب."


class Unauthorized(AppError):
    """No credentials, or credentials that are not valid (an unknown, malformed or revoked key or token)."""

    code, status = "unauthorized", 401
    title, title_ar = "Unauthorized", "غير مصرّح"
    detail_default = "Send valid credentials: `Authorization: Bearer <key or access token>`."
    detail_ar_default = "أرسل بيانات اعتماد صالحة: `Authorization: Bearer <key or access token>`."


class Forbidden(AppError):
    """Valid credentials without the scope this route needs."""

    code, status = "forbidden", 403
    title, title_ar = "Forbidden", "ممنوع"
    detail_default = "These credentials do not have the scope this request needs."
    detail_ar_default = "لا تملك بيانات الاعتماد هذه الصلاحية التي يحتاجها هذا الطلب."


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


class SyncAlreadyRunning(AppError):
    """A Zoho sync run is in progress (the sync lock is held, in this or another process or instance)."""

    code, status = "sync_already_running", 409
    title, title_ar = "Conflict", "تعارض"
    detail_default = "A Zoho sync is already running; watch it under /api/admin/sync/runs."
    detail_ar_default = "مزامنة Zoho قيد التشغيل حالياً؛ تابعها عبر /api/admin/sync/runs."


class IdempotencyKeyRequired(AppError):
    """A write that must be exactly-once came without a (well-formed) Idempotency-Key header."""

    code, status = "idempotency_key_required", 400
    documents_status = False
    title, title_ar = "Idempotency-Key required", "ترويسة Idempotency-Key مطلوبة"
    detail_default = (
        'Send an Idempotency-Key header (a unique value per order, e.g. a UUID: Idempotency-Key: "<uuid>").'
    )
    detail_ar_default = (
        'أرسل ترويسة Idempotency-Key (قيمة فريدة لكل طلب، مثل UUID: Idempotency-Key: "<uuid>").'
    )


class IdempotencyKeyInUse(AppError):
    """A request with this Idempotency-Key is still being processed."""

    code, status = "idempotency_key_in_use", 409
    documents_status = False
    title, title_ar = "Conflict", "تعارض"
    detail_default = "A request with this Idempotency-Key is still being processed; retry shortly."
    detail_ar_default = "ما زال طلب بمفتاح Idempotency-Key هذا قيد المعالجة؛ أعد المحاولة بعد قليل."


class IdempotencyKeyReused(AppError):
    """The Idempotency-Key was used before with a different request body."""

    code, status = "idempotency_key_reused", 422
    documents_status = False
    title, title_ar = "Idempotency-Key reused", "أُعيد استخدام مفتاح Idempotency-Key"
    detail_default = "This Idempotency-Key was used for a different request; use a new key for a new order."
    detail_ar_default = "استُخدم مفتاح Idempotency-Key هذا لطلب مختلف؛ استخدم مفتاحاً جديداً لطلب جديد."


class InsufficientStock(AppError):
    """Some order lines ask for more than is in stock; `lines` says what is available. Nothing changed."""

    code, status = "insufficient_stock", 409
    documents_status = False
    title, title_ar = "Insufficient stock", "المخزون غير كافٍ"
    detail_default = "Some lines ask for more than is in stock; nothing was ordered."
    detail_ar_default = "بعض البنود تطلب أكثر من المتوفر في المخزون؛ لم يُنفَّذ أي طلب."


class OrderNotCancellable(AppError):
    """Only a pending order can be cancelled."""

    code, status = "order_not_cancellable", 409
    documents_status = False
    title, title_ar = "Conflict", "تعارض"
    detail_default = "Only a pending order can be cancelled."
    detail_ar_default = "لا يمكن إلغاء إلا الطلب قيد الانتظار."


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


class OriginNotAllowed(AppError):
    """A CORS preflight from an origin outside CORS_ORIGINS."""

    code, status = "origin_not_allowed", 403
    title, title_ar = "Origin not allowed", "المصدر غير مسموح به"
    detail_default = "This origin may not call the API from a browser."
    detail_ar_default = "لا يُسمح لهذا المصدر باستدعاء الواجهة من المتصفح."


class UriTooLong(AppError):
    """The query string is longer than the server accepts."""

    code, status = "uri_too_long", 414
    title, title_ar = "URI too long", "عنوان الطلب طويل جداً"
    detail_default = "The query string is longer than the server accepts."
    detail_ar_default = "سلسلة الاستعلام أطول مما يقبله الخادم."


class HeaderTooLarge(AppError):
    """The request's header section is larger than the server accepts."""

    code, status = "headers_too_large", 431
    title, title_ar = "Request header fields too large", "حقول ترويسة الطلب كبيرة جداً"
    detail_default = "The request headers are larger than the server accepts."
    detail_ar_default = "ترويسات الطلب أكبر مما يقبله الخادم."


AppError.registry[AppError.code] = AppError  # the base is the 500 (its own class is not a subclass)


def error_classes() -> tuple[type[AppError], ...]:
    """Every error the API can answer with, ordered by status then code."""
    return tuple(sorted(AppError.registry.values(), key=lambda e: (e.status, e.code)))


def error_codes() -> list[str]:
    """Every `code` a problem body can carry, sorted (the OpenAPI enum)."""
    return sorted(AppError.registry)


# Answered by the nginx front (server/nginx.py renders their bodies into its config), never by the API.


class RequestTimeout(AppError):
    """The client did not send its request (headers or body) in time."""

    code, status = "request_timeout", 408
    title, title_ar = "Request timeout", "انتهت مهلة الطلب"
    detail_default = "The request was not received in time."
    detail_ar_default = "لم يصل الطلب في الوقت المحدد."


class UnsupportedMediaType(AppError):
    """A multipart Content-Type without boundary, or on a method that takes no body."""

    code, status = "unsupported_media_type", 415
    title, title_ar = "Unsupported media type", "نوع المحتوى غير مدعوم"
    detail_default = (
        "This Content-Type is not accepted: multipart bodies need a boundary, "
        "and GET, HEAD and OPTIONS take no body."
    )
    detail_ar_default = (
        "نوع المحتوى هذا غير مقبول: المحتوى متعدد الأجزاء يحتاج إلى حدّ فاصل (boundary)، "
        "وطلبات GET وHEAD وOPTIONS لا تحمل محتوى."
    )


class NotImplementedFeature(AppError):
    """A request feature the server does not support (e.g. an unknown Transfer-Encoding)."""

    code, status = "not_implemented", 501
    title, title_ar = "Not implemented", "غير مدعوم"
    detail_default = "The server does not support a feature of this request (such as its transfer coding)."
    detail_ar_default = "لا يدعم الخادم إحدى ميزات هذا الطلب (مثل ترميز النقل)."


class BadGateway(AppError):
    """The proxy could not reach the service."""

    code, status = "bad_gateway", 502
    title, title_ar = "Bad gateway", "خطأ في البوابة"
    detail_default = "The service behind the proxy could not be reached; retry shortly."
    detail_ar_default = "تعذّر الوصول إلى الخدمة خلف الوكيل؛ أعد المحاولة بعد قليل."


class GatewayTimeout(AppError):
    """The service did not answer the proxy in time."""

    code, status = "gateway_timeout", 504
    title, title_ar = "Gateway timeout", "انتهت مهلة البوابة"
    detail_default = "The service behind the proxy did not answer in time; retry shortly."
    detail_ar_default = "لم تُجب الخدمة خلف الوكيل في الوقت المحدد؛ أعد المحاولة بعد قليل."


class HttpVersionNotSupported(AppError):
    """A request line with an HTTP version the proxy does not speak."""

    code, status = "http_version_not_supported", 505
    title, title_ar = "HTTP version not supported", "إصدار HTTP غير مدعوم"
    detail_default = "This HTTP version is not supported; use HTTP/1.1."
    detail_ar_default = "إصدار HTTP هذا غير مدعوم؛ استخدم HTTP/1.1."
