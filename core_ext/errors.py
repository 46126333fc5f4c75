"""Exceptions raised by both builds of ``core_ext`` (pure Python so Cython and callers share them)."""

from __future__ import annotations

__all__ = ["CoreExtError", "SerializationError"]


class CoreExtError(Exception):
    """Base class for every error that ``core_ext`` raises on purpose."""


class SerializationError(CoreExtError, TypeError):
    """A row or page could not be turned into JSON; the message names the row and column."""
