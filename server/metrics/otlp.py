"""OpenTelemetry span export over OTLP/HTTP (JSON encoding), only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

No SDK: a server span per sampled request is a tuple appended to a bounded buffer (a request pays one
append); a task in each process posts the buffer to `<endpoint>/v1/traces` every OTEL_EXPORT_INTERVAL_S
with httpx (already a dependency), as the OTLP specification's JSON mapping (ids in hex). Unset endpoint:
no exporter object exists and the wrapper skips this entirely. A collector that is down costs dropped
spans (counted, logged once per outage), never a slower request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
import orjson

from server.metrics.trace import ids

log = logging.getLogger("server.metrics.otlp")
MAX_QUEUE = 8192  # spans waiting per process; beyond, new ones are dropped (and counted)
MAX_BATCH = 2048
SERVER = 2  # SpanKind SPAN_KIND_SERVER
STATUS_ERROR = 2

# (our traceparent, parent span id or "", name, start ns, end ns, method, route, status)
Span = tuple[str, str, str, int, int, str, str, int]


def _attr(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


class SpanExporter:
    """This process's buffer of finished server spans and the task that ships them."""

    def __init__(self, endpoint: str, *, service_name: str, interval_s: float, timeout_s: float = 5.0):
        base = endpoint.rstrip("/")
        self.url = base if base.endswith("/v1/traces") else base + "/v1/traces"
        self.service_name = service_name
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.queue: list[Span] = []
        self.dropped = 0
        self.exported = 0
        self.failing = False
        self._client: httpx.AsyncClient | None = None

    def add(self, span: Span) -> None:
        """Queue one finished span (dropped when the queue is full)."""
        if len(self.queue) < MAX_QUEUE:
            self.queue.append(span)
        else:
            self.dropped += 1

    def payload(self, spans: list[Span]) -> bytes:
        """The OTLP/JSON ExportTraceServiceRequest of `spans`."""
        out = []
        for traceparent, parent, name, start, end, method, route, status in spans:
            trace_id, span_id = ids(traceparent)
            span: dict[str, Any] = {
                "traceId": trace_id,
                "spanId": span_id,
                "name": name,
                "kind": SERVER,
                "startTimeUnixNano": str(start),
                "endTimeUnixNano": str(end),
                "attributes": [
                    _attr("http.request.method", method),
                    _attr("http.route", route),
                    _attr("http.response.status_code", status),
                ],
                "status": {"code": STATUS_ERROR} if status >= 500 else {},
            }
            if parent:
                span["parentSpanId"] = parent
            out.append(span)
        resource = {"attributes": [_attr("service.name", self.service_name)]}
        scope = {"name": "catalog-api.server.http"}
        doc = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": out}]}]}
        return orjson.dumps(doc)

    async def flush(self) -> None:
        """Post what is queued (in batches); on failure the batch is dropped and counted."""
        while self.queue:
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=self.timeout_s)
            try:
                resp = await self._client.post(
                    self.url, content=self.payload(batch), headers={"Content-Type": "application/json"}
                )
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                self.dropped += len(batch)
                if not self.failing:
                    log.warning("OTLP export to %s failed, dropping spans: %s", self.url, exc)
                self.failing = True
                return
            self.exported += len(batch)
            if self.failing:
                log.info("OTLP export to %s works again", self.url)
            self.failing = False

    async def run(self) -> None:
        """Flush every interval (forever; cancelled at shutdown, after which `close` flushes the rest)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def close(self) -> None:
        """Last flush, then close the HTTP client."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), self.timeout_s)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
