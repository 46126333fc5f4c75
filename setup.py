"""Build the compiled half of ``core_ext`` (Cython), with a pure-Python fallback.

Environment switches:
  CORE_EXT_DEBUG=1          -O0 -g, Cython line tracing (coverage/profilers), bounds checks on
  CORE_EXT_NO_EXTENSIONS=1  skip compilation entirely: the wheel carries only the pure-Python twin
                            (the same variable also forces the twin at run time: core_ext/__init__.py)
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_ext import build_ext as _build_ext

DEBUG = os.environ.get("CORE_EXT_DEBUG", "") not in ("", "0")
NO_EXTENSIONS = os.environ.get("CORE_EXT_NO_EXTENSIONS", "") not in ("", "0")
MODULES = ("_images", "_pages", "_catalog", "_search")


class build_ext(_build_ext):  # noqa: N801 - setuptools' own naming
    """Cythonize lazily so that ``setup.py --version`` and sdists do not need Cython."""

    def finalize_options(self) -> None:
        from Cython.Build import cythonize

        directives = {
            "language_level": "3",
            "embedsignature": True,
            "binding": True,
        }
        if DEBUG:
            directives.update({"linetrace": True, "profile": True, "boundscheck": True})
        self.distribution.ext_modules[:] = cythonize(
            self.distribution.ext_modules,
            compiler_directives=directives,
            annotate=DEBUG,
            force=DEBUG,
        )
        super().finalize_options()


def _extensions() -> list:
    if NO_EXTENSIONS:
        return []
    from setuptools import Extension

    cflags = ["-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
    cflags += ["-O0", "-g3"] if DEBUG else ["-O2"]
    macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
    return [
        Extension(
            f"core_ext.{name}",
            [f"core_ext/{name}.pyx"],
            extra_compile_args=cflags,
            define_macros=macros,
        )
        for name in MODULES
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": build_ext})
