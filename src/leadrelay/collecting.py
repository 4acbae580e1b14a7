"""Fewer garbage collections for a long run of mapping and delivering (``send``, ``serve``).

Each event mapped leaves dozens of container objects behind; with Python's default threshold
(700) the young generation is collected every few events and the older generations are walked
over and over, finding nothing: a fifth of the CPU of a send, and of intake's CPU per event.

The ``leadrelay`` command's start-up is the same story on a smaller scale: importing typer,
pydantic, rich and the rest creates some 60,000 containers that live as long as the process, and
collecting them over and over while they load (and once more at exit) was ~8% of its start-up.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# A send keeps thousands of mapped events alive (chunks being read and stored, batches in
# flight): higher thresholds did not save more but raised the peak RSS.
YOUNG_COLLECTION_EVERY = 10_000

# Set by ``command_started``: this process is the ``leadrelay`` command (no host program whose
# frozen objects ``collecting_less`` must leave as they are), and it froze its start-up.
_command = {"froze": False, "resume": False}


def loading_command() -> None:
    """``python -m leadrelay``, before the command's modules are imported: no collections while
    they load (what they create lives as long as the command); ``command_started`` resumes."""
    _command["resume"] = gc.isenabled()
    gc.disable()


def command_started() -> None:
    """The ``leadrelay`` command, once its modules are loaded (``cli.main``; never a library
    user's process): everything alive is frozen out of the collections, at exit too, and
    collections resume if ``loading_command`` paused them. The garbage that loading left
    (some 600 objects, 0.3 MiB: no files or other resources) is frozen with the rest: collecting
    it first would cost a third of what the pause saves."""
    gc.freeze()
    _command["froze"] = True
    if _command["resume"]:
        _command["resume"] = False
        gc.enable()


@contextmanager
def collecting_less() -> Iterator[None]:
    """What is alive on entry (modules, the app, the mapper, the config) lives as long as the run,
    so it is frozen out of the collections, and the young generation is collected every
    ``YOUNG_COLLECTION_EVERY`` allocations. Cycles are still collected; only the work of finding
    none is saved. Everything is as it was on exit. A host program that froze objects itself
    keeps them frozen: then nothing is frozen here (unfreezing is all or nothing). In the
    ``leadrelay`` command, which froze its start-up, what is alive on entry is frozen as well and
    stays so (the command ends with the run)."""
    thresholds = gc.get_threshold()
    ours = gc.get_freeze_count() == 0
    if ours or _command["froze"]:
        gc.collect()
        gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if ours:
            gc.unfreeze()
