"""W3C Trace Context: `traceparent` accepted, our span id answered, the ids in every log line.

A request with a valid `traceparent` joins its trace (our span's parent is the caller's span); without one,
or with a malformed one (ignored, never an error), it starts a trace whose id is the request id when we
made that id (both are 128 random-prefixed bits), else a new one. The answer carries
`traceparent: 00-<trace id>-<our span id>-<flags>` beside X-Request-ID, which stays as it was.

Span ids are 64 bits: 32 random bits drawn once per process, then a counter (no getrandom() per request;
see server/http.py's request ids).
"""

from __future__ import annotations

import itertools
import os
import secrets
from contextvars import ContextVar
from typing import NamedTuple

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class TraceContext(NamedTuple):
    """This request's place in its trace."""

    trace_id: str  # 32 lowercase hex
    span_id: str  # ours: 16 lowercase hex
    parent_id: str  # the caller's span, "" for a root
    sampled: bool

    def header(self) -> str:
        """Our `traceparent` (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


trace_var: ContextVar[TraceContext | None] = ContextVar("trace", default=None)


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a valid header, else None (W3C Trace Context level 1)."""
    if value is None or len(value) < 55:
        return None
    value = value.strip()
    version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not _HEX.issuperset(version) or version == "ff" or (version == "00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55] != "-":  # a later version may append fields, after a dash
        return None
    if not (_HEX.issuperset(trace_id) and _HEX.issuperset(parent_id) and _HEX.issuperset(flags)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, bool(int(flags, 16) & 1)


class _SpanIds:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(4)
        self.counter = itertools.count(1)

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFF:08x}"


_spans = _SpanIds()
os.register_at_fork(after_in_child=_spans.reset)


def new_span_id() -> str:
    """A fresh span id (16 hex)."""
    return _spans.new()


def begin(header: str | None, fallback_trace_id: str, sample_roots: bool) -> TraceContext:
    """This request's trace context from its `traceparent` (or a new root with `fallback_trace_id`)."""
    span_id = _spans.new()
    if header is not None:
        parsed = parse_traceparent(header)
        if parsed is not None:
            return TraceContext(parsed[0], span_id, parsed[1], parsed[2])
    return TraceContext(fallback_trace_id, span_id, "", sample_roots)


def outgoing_traceparent() -> str | None:
    """The `traceparent` for a call this request makes (the current span as the parent), or None."""
    ctx = trace_var.get()
    return ctx.header() if ctx is not None else None
