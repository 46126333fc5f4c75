"""The per-process holder that route handlers close over; filled by the start-up handler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.errors import ServiceUnavailable
from server.images.service import ImageStore
from server.metrics.service import Observability
from server.resources import Resources
from server.settings import Settings


@dataclass(slots=True)
class AppState:
    """Settings (known at build time) and the resources made in this process at start-up."""

    settings: Settings
    _res: Resources | None = None
    _images: ImageStore | None = None
    # Domains that need this process's resources once they exist (the sync's schedule), and the sections
    # they add to the detailed /ready: registered when routes are built, run by the start-up handler.
    on_start: list[Callable[[Resources], None]] = field(default_factory=list)
    ready_sections: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    # Metrics, trace context and span export (server/metrics); domains count their events with
    # `state.obs.metrics.inc(...)` (orders: `state.obs.metrics.orders.placed()` / `.refused(code)`).
    obs: Observability | None = None

    @property
    def res(self) -> Resources:
        """This process's resources; 503 before start-up finished or once shutdown began."""
        if self._res is None:
            raise _not_serving()
        return self._res

    @property
    def image_store(self) -> ImageStore:
        """This process's image file cache (503 outside the process's serving life, like `res`)."""
        if self._images is None:
            raise _not_serving()
        return self._images

    def attach(self, res: Resources, images: ImageStore) -> None:
        """Install the resources made by the start-up handler."""
        self._res, self._images = res, images

    def detach(self) -> Resources | None:
        """Take the resources back for shutdown."""
        res, self._res = self._res, None
        return res


def _not_serving() -> ServiceUnavailable:
    return ServiceUnavailable(
        "This process is starting or stopping; retry shortly.",
        "هذه العملية قيد البدء أو الإيقاف؛ أعد المحاولة بعد قليل.",
        headers={"Retry-After": "1"},
    )
