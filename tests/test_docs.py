"""The README stays true: every setting documented, the two commands present."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.skipif(not README.exists(), reason="README not next to the tests")
def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"`{name}`" not in text]
    assert not missing, f"settings missing from README's configuration table: {missing}"
    assert "make run" in text and "make test" in text
