"""Imported by the fork server that starts the mapping processes (``pool``), to shield them.

``systemd`` and ``timeout`` signal a whole process group. A SIGTERM is meant for ``send``, which
then stops gracefully: reading stops, the mapping processes finish the units they hold, what was
read is stored. So the fork server, and the mapping processes it forks (they inherit this),
ignore SIGTERM; they end with ``send`` instead: the server when its last client is gone, a mapping
process when ``send`` is (see ``pool``). Were the server to end first, ``send`` would take its
mapping processes for dead: the server is how it learns that they exit.

Importing this module anywhere else does nothing.
"""

from __future__ import annotations

import signal
import sys
from multiprocessing import forkserver
from types import FrameType


def _in_fork_server() -> bool:
    """Whether this import is the fork server's own (its ``main`` preloads the modules)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


if _in_fork_server():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
