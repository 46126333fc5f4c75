"""Fixtures for the core_ext tests: each test runs against the compiled build and the pure twin."""

from __future__ import annotations

import pytest
from core_ext_testlib import PURE, Impl, require_compiled


# Session scope: the builds are plain module objects, and Hypothesis refuses function-scoped fixtures.
@pytest.fixture(scope="session", params=["compiled", "pure"])
def impl(request: pytest.FixtureRequest) -> Impl:
    """One build of core_ext per parameter."""
    return require_compiled() if request.param == "compiled" else PURE


@pytest.fixture(scope="session")
def both() -> tuple[Impl, Impl]:
    """(compiled, pure), for differential tests."""
    return require_compiled(), PURE
