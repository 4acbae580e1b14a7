"""Start-up: what the commands import before their first event, checked in fresh processes."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(code: str, modules: list[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code`` (a module
    marked missing in ``sys.modules`` is not imported)."""
    listed = f"' '.join(m for m in {modules!r} if sys.modules.get(m) is not None)"
    check = f"{code}\nimport sys\nprint({listed})"
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().split()


def test_the_graph_client_leaves_httpx_command_line_out() -> None:
    assert loaded_after("import leadrelay.meta.client", ["httpx", "click", "httpx._main"]) == [
        "httpx"
    ]


@pytest.mark.parametrize("module", ["leadrelay.summary", "leadrelay.meta.errors"])
def test_counting_outcomes_needs_no_http_client(module: str) -> None:
    assert loaded_after(f"import {module}", ["httpx", "rich.table", "email.utils"]) == []


def test_the_stub_stands_in_for_httpx_command_line() -> None:
    code = "import leadrelay.meta.client, httpx\nassert callable(httpx.main)"
    assert loaded_after(code, ["httpx._main"]) == []
