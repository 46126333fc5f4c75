"""The public package: build selection, exports, and stubs that match the compiled modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from core_ext_testlib import require_compiled

import core_ext

ROOT = Path(__file__).resolve().parents[2]
STUBBED = ("core_ext._images", "core_ext._pages", "core_ext._catalog", "core_ext._search")
PROBE = (
    "import core_ext, core_ext._images_py as p;"
    "print(core_ext.USING_COMPILED, core_ext.ImageIndex is p.ImageIndex)"
)


def probe(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "CORE_EXT_NO_EXTENSIONS"}
    if value is not None:
        env["CORE_EXT_NO_EXTENSIONS"] = value
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_public_api() -> None:
    assert sorted(core_ext.__all__) == sorted(
        [
            "ImageIndex",
            "CatalogIndex",
            "SearchIndex",
            "serialize_page",
            "serialize_items",
            "join_items",
            "PRODUCT_COLUMNS",
            "USING_COMPILED",
            "CoreExtError",
            "SerializationError",
        ]
    )
    for name in core_ext.__all__:
        assert getattr(core_ext, name) is not None
    assert isinstance(core_ext.USING_COMPILED, bool)
    assert issubclass(core_ext.SerializationError, core_ext.CoreExtError)
    assert issubclass(core_ext.SerializationError, TypeError)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_no_extensions_forces_pure(value: str) -> None:
    assert probe(value) == "False True"


@pytest.mark.parametrize("value", [None, "", "0"])
def test_compiled_by_default(value: str | None) -> None:
    require_compiled()
    assert probe(value) == "True False"


def test_stubs_match_compiled_modules() -> None:
    require_compiled()
    pytest.importorskip("mypy", reason="mypy (the lint extra) runs stubtest")
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *STUBBED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
