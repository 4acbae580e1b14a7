"""Waiting on a ``ProcessPoolExecutor`` of mapping workers, and shutting it down, without hanging.

Split out of ``pool`` (house rule: modules under ~300 lines). However the send ends,
``pool.in_workers`` returns only once the pool's manager thread and workers have ended:
interpreter exit must not meet them still running. Two ways it could, both hangs:

- A Ctrl-C that cuts a ``Thread.join`` short marks the thread ended while it runs on (CPython
  3.11's ``Thread._wait_for_tstate_lock``, see bpo-45274). A second Ctrl-C that cut the pool's
  shutdown short so let the exit skip waiting for the manager thread: ``multiprocessing``'s exit
  function closed the queue of work before the manager had put the workers' "stop" into it, and
  waited for workers that waited for work (13 double Ctrl-Cs in 14). So in the main thread,
  Ctrl-Cs that come while the pool shuts down are noted, not raised: the first kills the
  workers at once, and ``KeyboardInterrupt`` is raised once the pool is gone.
- A worker that dies while it writes its result (killed, out of memory) leaves the manager
  thread reading the rest of it for good, and the other workers waiting for the write lock it
  held. Whoever waits on the pool looks at the workers every ``_PATIENCE`` seconds: one that has
  ended while the manager still waits, two looks in a row, means that; the others are then
  killed and this process closes its end of the result pipe, so the manager reads the end of
  the pipe, marks the pool broken and ends. The send then stops with ``BrokenProcessPool``
  naming the worker and how it ended.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor
    from types import FrameType

_Result = TypeVar("_Result")

_PATIENCE: Final = 0.5
"""Seconds between looks at the workers while waiting on the pool (see the module docstring)."""
_STEP: Final = 0.1  # seconds between looks for a Ctrl-C while the pool shuts down


class Watch:
    """Waits on ``pool`` and shuts it down without hanging (see the module docstring).

    Holds the parts of the pool that ``shutdown`` forgets (CPython's ``ProcessPoolExecutor``
    internals, looked up defensively: without its manager thread, ``shut_down`` waits as
    ``shutdown(wait=True)`` does, and without the others it only waits)."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool = pool
        # The pool's own dict (empty until the first submit), filled and emptied by the pool.
        processes = getattr(pool, "_processes", None)
        self._processes: dict[int, Any] = {} if processes is None else processes
        self._results: Any = getattr(pool, "_result_queue", None)
        self._ended_before = False  # a worker had ended at the previous look
        self._killed: set[int] = set()  # workers this process ended

    def result(self, future: Future[_Result]) -> _Result:
        """``future.result()``, looking at the workers every ``_PATIENCE`` seconds meanwhile."""
        while True:
            try:
                return future.result(timeout=_PATIENCE)
            except TimeoutError:
                self._look()

    def shut_down(self, *, clean: bool = False) -> bool:
        """Shut the pool down, the units being mapped let finish, and wait until its manager
        thread has ended, and its workers with it. ``clean``: every result was received (no
        worker can be writing one: those that end first are not taken for dead). Returns
        whether Ctrl-C was pressed meanwhile (it then ends the workers at once)."""
        manager: threading.Thread | None = getattr(self._pool, "_executor_manager_thread", None)
        interrupted: list[int] = []
        with _ctrl_c_noted(interrupted):
            self._pool.shutdown(wait=manager is None, cancel_futures=True)
            looked, ended_them = time.monotonic(), False
            while manager is not None and manager.is_alive():
                if interrupted and not ended_them:  # here, not in the handler: no re-entry
                    self.end_workers()
                    ended_them = True
                manager.join(_STEP)
                if manager.is_alive() and time.monotonic() - looked >= _PATIENCE:
                    looked = time.monotonic()
                    self._look(clean=clean)
        if self._results is not None and (manager is None or not manager.is_alive()):
            self._results.close()
        return bool(interrupted)

    def _look(self, *, clean: bool = False) -> None:
        """A worker that has ended, two looks in a row while the pool still waits for a result
        (not ``clean``), died while it wrote it: the manager thread waits for the rest of it for
        good. And once the interpreter exits (this in a thread it no longer waits for: a Ctrl-C
        cut its join short), the queue of work is closed and the workers would wait for work
        for good."""
        ended = not clean and any(_ended(p) for p in list(self._processes.values()))
        if (ended and self._ended_before) or _is_exiting():
            self.end_workers()
        self._ended_before = ended

    def end_workers(self) -> None:
        """Kill the workers, and close this process's end of the result pipe: with no writer
        left, the manager thread reads the end of it, whatever it was waiting for. Again if cut
        short (by the Ctrl-C that calls it, say)."""
        for process in list(self._processes.values()):
            if process.pid not in self._killed and not _ended(process):
                self._killed.add(process.pid)
                process.kill()
        writer = getattr(self._results, "_writer", None)
        if writer is not None:
            with suppress(OSError):
                writer.close()

    def why(self) -> str:
        """What ended the pool, for ``BrokenProcessPool`` (once it is shut down)."""
        dead = [
            (p.pid, p.exitcode)
            for p in self._processes.values()
            if p.pid not in self._killed and p.exitcode not in (None, 0)
        ]
        # The manager thread ends the others with SIGTERM once one has died.
        dead.sort(key=lambda found: found[1] == -signal.SIGTERM)
        if not dead:
            return "a mapping process ended unexpectedly; the send stopped"
        pid, code = dead[0]
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        if sum(found[1] == code for found in dead) > 1:  # which one first, nobody can tell
            return f"a mapping process {how}; the send stopped"
        return f"mapping process {pid} {how}; the send stopped"


def _is_exiting() -> bool:
    """Whether the interpreter exits (``multiprocessing`` runs its exit functions)."""
    from multiprocessing.util import is_exiting as exiting

    return bool(exiting())


def _ended(process: Any) -> bool:
    """Whether ``process`` has ended, without reaping it (the manager thread does that)."""
    from multiprocessing.connection import wait

    try:
        return bool(wait([process.sentinel], 0))
    except (ValueError, OSError):  # closed: it has ended and been joined
        return True


@contextmanager
def _ctrl_c_noted(noted: list[int]) -> Iterator[None]:
    """While this lasts, Ctrl-C is noted in ``noted`` instead of raising ``KeyboardInterrupt``
    (see the module docstring). Only where Ctrl-C raises it (the main thread, Python's own
    handler): elsewhere it never interrupts a join."""

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(signum)

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    try:
        signal.signal(signal.SIGINT, note)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
