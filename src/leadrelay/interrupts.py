"""Ctrl-C during a send's delivery: stop, then stop waiting, then stop at once.

``asyncio.run`` cancels its task on the first SIGINT and raises ``KeyboardInterrupt`` wherever
the second one lands. Pressed again while the batches in flight drain (up to the drain timeout,
20 s by default, when Meta is slow), that cut the drain short at a random point: inside a batch's
task it surfaced as "Task exception was never retrieved" tracebacks, and clients were never
closed; after the loop, it cut the storing of what was read (and the summary) short. While a
``CtrlC`` is entered:

- the first Ctrl-C cancels the send's task as ``asyncio.run`` does (reading stops, the batches in
  flight get the drain timeout to finish, the rest stays queued) and, when batches are in flight,
  says how long that may take and what a second Ctrl-C does;
- the second then cancels those batches, as the drain timeout would: their events go back to the
  queue, for the next run (Meta deduplicates any it got by event_id). Once the send's task has
  ended, the loop only waits for its threads (a reader blocked on a quiet pipe): then the second
  raises ``KeyboardInterrupt``, as before;
- before the loop (the store opening), the first Ctrl-C is noted and said (the send then starts
  nothing) and the second raises ``KeyboardInterrupt`` (a store that does not answer);
- once the loop has ended (the store closing: what was read gets stored; the summary), Ctrl-C
  is noted and said, not raised, but for
- a third, which raises ``KeyboardInterrupt`` where it lands, for a send stuck anywhere.

A process that ignores SIGINT (a background job of a script) keeps ignoring it, and outside the
main thread (a host program) signals are not ours: there ``run`` is ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType, TracebackType
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class Drained(Protocol):
    """What ``CtrlC`` needs of the delivery worker (``DeliveryWorker``)."""

    drain_timeout_s: float

    @property
    def batches_in_flight(self) -> int: ...

    def cut_short(self) -> int: ...


class CtrlC:
    """Ctrl-C handled in steps (see the module) while entered; ``run`` runs the send's loop."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.presses = 0
        self.worker: Drained | None = None  # set by the send once its worker exists
        self._say = say
        self._previous: Any = None
        self._ours = False  # SIGINT handled here (entered, main thread, Python's default before)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._ended = False  # the loop has ended: storing what was read, printing the summary

    def __enter__(self) -> CtrlC:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._pressed)
            self._ours = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._ours:
            self._ours = False
            signal.signal(signal.SIGINT, self._previous)

    def run(self, main: Coroutine[Any, Any, _T]) -> _T:
        """``asyncio.run(main)``, raising ``KeyboardInterrupt`` once a Ctrl-C stopped ``main``."""
        if not self._ours:
            return asyncio.run(main)
        try:
            with asyncio.Runner() as runner:  # leaves SIGINT to us: not Python's default handler
                self._loop = runner.get_loop()
                try:
                    return runner.run(self._started(main))
                except asyncio.CancelledError:
                    if self.presses:
                        raise KeyboardInterrupt from None
                    raise
        finally:
            if self._task is None:  # interrupted before it started: nothing left to run it
                main.close()
            self._loop = self._task = None
            self._ended = True

    async def _started(self, main: Coroutine[Any, Any, _T]) -> _T:
        self._task = asyncio.current_task()
        if self.presses:  # Ctrl-C while the send got ready: it starts nothing
            main.close()
            raise asyncio.CancelledError
        return await main

    def _pressed(self, signum: int, frame: FrameType | None) -> None:
        self.presses += 1
        if self.presses > 2:
            raise KeyboardInterrupt
        loop, task = self._loop, self._task
        if loop is None or task is None or loop.is_closed():
            if not self._ended and self.presses > 1:
                raise KeyboardInterrupt  # stuck getting ready (a store that does not answer)
            # Noted: before the loop (the store opening; run then starts nothing) or after it
            # (storing what was read, the summary).
            self._say(
                "Stopping (Ctrl-C): storing what was read, then the summary; Ctrl-C again to "
                "stop at once."
                if self._ended
                else "Stopping (Ctrl-C) once the store is open; Ctrl-C again to stop now."
            )
            return
        if self.presses == 1:
            loop.call_soon_threadsafe(self._stop)
        elif task.done():
            # The loop is closing, waiting on its threads: a reader blocked on a quiet pipe.
            raise KeyboardInterrupt
        else:
            loop.call_soon_threadsafe(self._cut)

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        worker = self.worker
        if worker is not None and (batches := worker.batches_in_flight):
            self._say(
                f"Stopping (Ctrl-C): waiting up to {worker.drain_timeout_s:g} s for the "
                f"{batches} {'batch' if batches == 1 else 'batches'} in flight; Ctrl-C again to "
                "stop now (their events stay queued for the next run)."
            )

    def _cut(self) -> None:
        if self.worker is None or not self.worker.cut_short():
            self._say("Stopping (Ctrl-C): finishing; Ctrl-C again to stop at once.")
