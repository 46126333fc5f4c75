"""Logging with the request id (and, in JSON, the trace and span ids) on every line: context variables set
by the per-route wrapper."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

import orjson

from server.metrics.trace import ids, trace_var

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        traceparent = trace_var.get()
        record.trace_id, record.span_id = ids(traceparent) if traceparent is not None else ("", "")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, pid, logger, request_id, trace_id and span_id (W3C, when the
    line belongs to a request), message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "msg": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            doc["trace_id"], doc["span_id"] = trace_id, getattr(record, "span_id", "")
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class _ListenerShutdownNote(logging.Filter):
    """On stop the pool shuts the listening socket down while Actix still accepts (server/workers.py), and
    Actix reports the `accept()` that then fails (EINVAL, the one way accept fails on a socket that is not
    listening) as an error: it is the stop working, logged at INFO in words that say so."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "(os error 22)" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "listening socket shut down: new connections are refused", None
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s rid=%(request_id)s %(message)s"


def configure(level: str, fmt: str = "text") -> None:
    """Route every logger to stderr with the request id; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Robyn logs every request at INFO; our wrapper logs what matters (slow requests, errors).
    for noisy in ("robyn", "actix_server", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    accept = logging.getLogger("actix_server.accept")
    if not any(isinstance(f, _ListenerShutdownNote) for f in accept.filters):
        accept.addFilter(_ListenerShutdownNote())
