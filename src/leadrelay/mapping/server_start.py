"""Imported first by the fork server of ``--jobs N`` (see ``pool._context``): Ctrl-C is ignored.

A terminal's Ctrl-C reaches the whole process group, the fork server included. The server ignores
SIGINT itself, but only once it has imported its preload modules (the mapping: a fraction of a
second), and a Ctrl-C in that window printed a KeyboardInterrupt traceback from inside pydantic or
the like, under the send's own summary. Ctrl-C is the parent's to handle (workers ignore it too,
see ``pool._start_worker``); this module, imported before the mapping, closes the window.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
