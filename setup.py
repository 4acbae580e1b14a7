"""The package is described in pyproject.toml; this adds the compiled modules of a compiled build.

With ``LEADRELAY_COMPILE=1``, the modules of ``COMPILED`` (build_backend/leadrelay_build.py),
the per-event path of ``send``, are compiled with mypyc into C extensions: the same code, typed as
mypy checks it, run without the interpreter's dispatch. Everything else stays Python.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).parent / "build_backend"))
from leadrelay_build import COMPILED, compiles_now


def _compiled() -> list[object]:
    if not compiles_now():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:  # pip installs mypy first (the backend asks for it)
        raise SystemExit(f"LEADRELAY_COMPILE=1 needs mypy (mypyc) to build: {exc}") from exc

    return list(mypycify(COMPILED, opt_level="3", debug_level="0"))


setup(ext_modules=_compiled())
