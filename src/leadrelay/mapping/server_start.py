"""Imported first by the fork server of ``--jobs N`` (see ``pool._context``): Ctrl-C is ignored.

A terminal's Ctrl-C reaches the whole process group, the fork server included. The server ignores
SIGINT itself, but only once it has imported its preload modules (the mapping: a fraction of a
second), and a Ctrl-C in that window printed a KeyboardInterrupt traceback from inside pydantic or
the like, under the send's own summary. Ctrl-C is the parent's to handle (workers ignore it too,
see ``pool._start_worker``); this module, imported before the mapping, ignores it.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
# pool._start_server starts the server with SIGINT blocked (Python's own start-up, before this
# module, is covered too): ignored now, it may be unblocked, and the workers start unblocked.
if hasattr(signal, "pthread_sigmask"):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
