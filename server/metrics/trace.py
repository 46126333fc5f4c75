"""W3C Trace Context: `traceparent` accepted, our span id answered, the ids in every log line.

A request with a valid `traceparent` joins its trace (our span's parent is the caller's span); without one,
or with a malformed one (ignored, never an error), it starts a trace whose id is the request id when we
made that id (both are 128 random-prefixed bits), else a new one. The answer carries
`traceparent: 00-<trace id>-<our span id>-<flags>` beside X-Request-ID, which stays as it was.

Span ids are 64 bits: 32 random bits drawn once per process, then a counter (no getrandom() per request;
see `span_id_of`). The common case (no incoming header) is inlined in the wrapper: a slice and an f-string.
"""

from __future__ import annotations

from contextvars import ContextVar

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


# This request's own `traceparent` (version 00, our span id): the header we answer, the parent of the calls
# it makes, and where log lines read the trace and span ids (a str: one context variable, no object).
trace_var: ContextVar[str | None] = ContextVar("traceparent", default=None)


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a valid header, else None (W3C Trace Context level 1)."""
    if value is None or len(value) < 55:
        return None
    value = value.strip()
    version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
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


def span_id_of(local_id: str) -> str:
    """Our span id from a fresh 128-bit request id (server/http.py: 64 random bits per process, then a
    counter): its first 32 random bits and the counter's low 32 bits, unique per process and across them
    like a random id, without drawing randomness per request."""
    return local_id[:8] + local_id[24:]


def join(header: str, local_id: str, sample_roots: bool) -> tuple[str, str]:
    """(our traceparent, the caller's span id or "") for a request that sent `header`; a malformed header
    is ignored (a new trace named by `local_id`), never an error."""
    span = span_id_of(local_id)
    parsed = parse_traceparent(header)
    if parsed is None:
        return f"00-{local_id}-{span}-{'01' if sample_roots else '00'}", ""
    trace_id, parent, sampled = parsed
    return f"00-{trace_id}-{span}-{'01' if sampled else '00'}", parent


def ids(traceparent: str) -> tuple[str, str]:
    """(trace id, span id) of one of our traceparent values."""
    return traceparent[3:35], traceparent[36:52]


def outgoing_traceparent() -> str | None:
    """The `traceparent` for a call this request makes (the current span as the parent), or None."""
    return trace_var.get()
