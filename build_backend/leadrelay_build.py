"""leadrelay's build backend: setuptools', plus mypy when the build compiles (``setup.py``).

``LEADRELAY_COMPILE=1 pip install .`` builds the modules that map, normalize and hash each event
as C extensions with mypyc (part of mypy); the build then needs mypy and a C compiler. Without
the variable nothing changes: a pure Python build, with no extra build requirement.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - every PEP 517 hook, as setuptools has it

MYPY = "mypy>=1.10"

# The per-event path of `send` and `send --dry-run`: mapping, normalization, hashing, reading.
COMPILED = [
    "src/leadrelay/meta/dates.py",
    "src/leadrelay/meta/field_rules.py",
    "src/leadrelay/meta/geo.py",
    "src/leadrelay/meta/normalize.py",
    "src/leadrelay/meta/person.py",
    "src/leadrelay/meta/phone.py",
    "src/leadrelay/meta/phone_plan.py",
    "src/leadrelay/meta/phone_valid.py",
    "src/leadrelay/meta/places.py",
    "src/leadrelay/meta/rules.py",
    "src/leadrelay/mapping/encode.py",
    "src/leadrelay/mapping/key_fields.py",
    "src/leadrelay/mapping/plans.py",
    "src/leadrelay/mapping/siblings.py",
    "src/leadrelay/mapping/sibling_loop.py",
    "src/leadrelay/mapping/usual.py",
    "src/leadrelay/events/ndjson.py",
    "src/leadrelay/delivery/store_items.py",
    "src/leadrelay/delivery/write_behind_memory.py",
    "src/leadrelay/send_input.py",
]


def compiling() -> bool:
    """Whether this build compiles (``LEADRELAY_COMPILE`` set to 1, true or yes)."""
    return os.environ.get("LEADRELAY_COMPILE", "").strip().lower() in {"1", "true", "yes"}


_WHEEL = "LEADRELAY_BUILD_COMPILES"  # set while build_wheel runs setup.py to compile


def compiles_now() -> bool:
    """Whether setup.py runs to build a compiled wheel (not to say what a build requires, nor
    to prepare metadata: mypy may not be installed yet then)."""
    return os.environ.get(_WHEEL) == "1"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements, and mypy when compiling."""
    requires: list[str] = _setuptools.get_requires_for_build_wheel(config_settings)
    return [*requires, MYPY, *_dependencies()] if compiling() else requires


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """setuptools' wheel, with the modules of ``COMPILED`` compiled when asked."""
    if compiling():
        os.environ[_WHEEL] = "1"
    try:
        return str(_setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))
    finally:
        os.environ.pop(_WHEEL, None)


def _dependencies() -> list[str]:
    """The package's own dependencies: mypy reads their types as it does in CI (the pydantic
    plugin of [tool.mypy] among them)."""
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    dependencies: list[str] = project["project"]["dependencies"]
    return dependencies


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """setuptools' editable install, refused when compiling: a compiled module beside its source
    is what Python imports, so an edit to the source would silently do nothing."""
    if compiling():
        raise SystemExit(
            "LEADRELAY_COMPILE=1 compiles a wheel, not an editable install (an edit to a compiled "
            "module's source would do nothing): install with `pip install .`, or unset "
            "LEADRELAY_COMPILE"
        )
    wheel: str = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    return wheel
