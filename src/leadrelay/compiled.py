"""Which of leadrelay's modules are compiled: a ``LEADRELAY_COMPILE=1`` build (setup.py) makes
the per-event path C extensions with mypyc; any other install is pure Python."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

_PACKAGE = Path(__file__).parent


def compiled_modules() -> list[str]:
    """The dotted names of leadrelay's modules installed as C extensions, sorted (Python
    imports an extension before a source file of the same name)."""
    suffixes = sorted(EXTENSION_SUFFIXES, key=len, reverse=True)  # the longest that fits
    found: list[str] = []
    for path in _PACKAGE.rglob("*"):
        suffix = next((s for s in suffixes if path.name.endswith(s)), None)
        if suffix is not None:
            module = path.relative_to(_PACKAGE.parent).with_name(path.name[: -len(suffix)])
            found.append(".".join(module.parts))
    return sorted(found)


def build_name() -> str:
    """``compiled (mypyc), N modules`` or ``pure Python``: what a benchmark measured."""
    modules = compiled_modules()
    return f"compiled (mypyc), {len(modules)} modules" if modules else "pure Python"
