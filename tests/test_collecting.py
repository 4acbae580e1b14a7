"""collecting_less, which send and serve run under: fewer collections, all as it was after."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from leadrelay.collecting import YOUNG_COLLECTION_EVERY, collecting_less


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_what_lives_on_entry_is_left_out_of_collections_until_exit() -> None:
    before = gc.get_threshold()
    with collecting_less():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_objects_a_host_program_froze_stay_frozen() -> None:
    kept = [{"n": i} for i in range(100)]
    gc.freeze()
    frozen = gc.get_freeze_count()
    with collecting_less():
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY
    assert gc.get_freeze_count() == frozen
    assert kept[99] == {"n": 99}


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (the command's flags are per process); its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().splitlines()[-1]


def test_the_command_runs_with_collections_on_and_its_start_up_frozen() -> None:
    code = (
        "import gc, runpy, sys\n"
        "sys.argv = ['leadrelay', '--help']\n"
        "try:\n"
        "    runpy.run_module('leadrelay', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 10_000)"
    )
    assert run_fresh(code) == "True True"


def test_in_the_command_a_run_freezes_what_lives_on_entry_too() -> None:
    code = (
        "import gc\n"
        "from leadrelay.collecting import collecting_less, command_started\n"
        "command_started()\n"
        "started = gc.get_freeze_count()\n"
        "kept = [{'n': i} for i in range(100)]\n"
        "with collecting_less():\n"
        "    during = gc.get_freeze_count()\n"
        "print(during > started, gc.get_freeze_count() > started, kept[99] == {'n': 99})"
    )
    assert run_fresh(code) == "True True True"


def test_ctrl_c_while_the_command_starts_ends_it_quietly() -> None:
    """Ctrl-C as the command's modules load (here: as leadrelay.cli is looked for): exit 130 as
    a shell expects, no traceback from deep inside some library's import."""
    code = (
        "import runpy, sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'leadrelay.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['leadrelay', '--help']\n"
        "runpy.run_module('leadrelay', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 130, proc.stderr.decode()
    assert proc.stderr == b""
