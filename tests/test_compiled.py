"""Which modules run compiled: none in a source install, exactly setup.py's in a compiled build.

CI runs the tests on the editable install (pure Python), then those of the compiled modules and
of send's paths, these among them, on a ``LEADRELAY_COMPILE=1`` build, with
``LEADRELAY_EXPECT_COMPILED=1`` set for that run.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import orjson
import pytest

from leadrelay import __version__, compiled
from leadrelay.compiled import build_name, compiled_modules

ROOT = Path(__file__).resolve().parents[1]


def _compiled_list() -> list[str]:
    """``COMPILED`` of the build backend, read from its source (it imports setuptools)."""
    tree = ast.parse((ROOT / "build_backend" / "leadrelay_build.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets
        ):
            value: list[str] = ast.literal_eval(node.value)
            return value
    raise AssertionError("build_backend/leadrelay_build.py has no COMPILED")


COMPILED = _compiled_list()


def _named(path: str) -> str:
    return path.removeprefix("src/").removesuffix(".py").replace("/", ".")


def test_this_install_compiles_what_setup_py_says_or_nothing() -> None:
    if os.environ.get("LEADRELAY_EXPECT_COMPILED") == "1":
        assert compiled_modules() == sorted(_named(path) for path in COMPILED)
        assert build_name() == f"compiled (mypyc), {len(COMPILED)} modules"
    else:
        # A source install: an extension left beside a source file would be imported in its
        # place, and an edit to the source would silently do nothing.
        assert compiled_modules() == []
        assert build_name() == "pure Python"


def test_a_compiled_build_runs_the_siblings_loop_in_place_of_generated_code() -> None:
    from leadrelay.mapping.filling import SIBLINGS_LOOP

    assert SIBLINGS_LOOP is (os.environ.get("LEADRELAY_EXPECT_COMPILED") == "1")


def test_version_says_the_build() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "leadrelay", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    expected = "pure Python"
    if os.environ.get("LEADRELAY_EXPECT_COMPILED") == "1":
        expected = f"compiled (mypyc), {len(COMPILED)} modules"
    assert shown.stdout == f"leadrelay {__version__}, {expected}\n"


def test_no_compiled_module_lowercases_with_mypycs_own_lower() -> None:
    """Compiled, ``text.lower()`` is mypyc's lowercasing, which writes a final Σ as σ (Python: ς):
    these modules call ``field_rules.lower`` (Python's), and the Greek cases of test_normalize
    hold a compiled build to it."""
    for path in COMPILED:
        assert ".lower()" not in (ROOT / path).read_text(encoding="utf-8"), path


def test_every_module_setup_py_compiles_exists() -> None:
    assert COMPILED
    for path in COMPILED:
        assert (ROOT / path).is_file(), path


def test_extensions_are_named_as_python_imports_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "leadrelay"
    (package / "meta").mkdir(parents=True)
    (package / "meta" / "person.py").write_text("")
    (package / "meta" / f"person{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    (package / f"send_input{EXTENSION_SUFFIXES[-1]}").write_bytes(b"")
    (package / "meta" / "notes.txt").write_text("")
    monkeypatch.setattr(compiled, "_PACKAGE", package)
    assert compiled_modules() == ["leadrelay.meta.person", "leadrelay.send_input"]
    assert build_name() == "compiled (mypyc), 2 modules"


def test_a_compiled_build_reads_values_and_events_as_pure_python_does() -> None:
    """20,000 odd values (final sigma, dotted I, wide digits, odd spaces...) through every
    field's rule, and 3,000 events through the mapping: the same readings, payloads and request
    bodies as pure Python's, which CI's compiled run names in ``LEADRELAY_PURE_PYTHON``
    (.ci/run)."""
    pure = os.environ.get("LEADRELAY_PURE_PYTHON")
    if os.environ.get("LEADRELAY_EXPECT_COMPILED") != "1" or not pure:
        pytest.skip("compares a compiled build with pure Python: CI's compiled run does")
    from read_alike import read_alike, values

    here = read_alike()
    run = subprocess.run(
        [pure, str(ROOT / "tests" / "read_alike.py")],
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    there = orjson.loads(run.stdout)
    assert (here["build"], there["build"]) == (build_name(), "pure Python")
    texts = values()
    for field, readings in here["fields"].items():
        differ = [
            (texts[n], ours, theirs)
            for n, (ours, theirs) in enumerate(zip(readings, there["fields"][field], strict=True))
            if ours != theirs
        ]
        assert not differ, f"{field}: {len(differ)} values read otherwise, {differ[:5]}"
    assert here["events"] == there["events"]
    # and as the readers encode them: written as read, compiled; dicts encoded, in pure Python
    assert here["bodies"] == there["bodies"] and len(here["bodies"]) > 2_900
