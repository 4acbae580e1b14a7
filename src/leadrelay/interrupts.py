"""Ctrl-C during a send's delivery: stop, then stop waiting, then stop at once.

``asyncio.run`` cancels its task on the first SIGINT and raises ``KeyboardInterrupt`` wherever
the second one lands. Pressed again while the batches in flight drain (up to the drain timeout,
20 s by default, when Meta is slow), that cut the drain short at a random point: inside a batch's
task it surfaced as "Task exception was never retrieved" tracebacks, and clients were never
closed. ``CtrlC.run`` runs the loop instead, and:

- the first Ctrl-C cancels the send's task as ``asyncio.run`` does (reading stops, the batches in
  flight get the drain timeout to finish, the rest stays queued) and, when batches are in flight,
  says how long that may take and what a second Ctrl-C does;
- the second cancels the batches in flight, as the drain timeout would: their events go back to
  the queue, for the next run (Meta deduplicates any it got by event_id);
- a third raises ``KeyboardInterrupt`` where it lands, for a send stuck anywhere else.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class Drained(Protocol):
    """What ``CtrlC`` needs of the delivery worker (``DeliveryWorker``)."""

    drain_timeout_s: float

    @property
    def batches_in_flight(self) -> int: ...

    def cut_short(self) -> int: ...


class CtrlC:
    """Runs a send's event loop with Ctrl-C handled in three steps (see the module)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.presses = 0
        self.worker: Drained | None = None  # set by the send once its worker exists
        self._say = say
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    def run(self, main: Coroutine[Any, Any, _T]) -> _T:
        """``asyncio.run(main)``, raising ``KeyboardInterrupt`` once a Ctrl-C stopped ``main``.
        Outside the main thread (a host program's), signals are not ours: ``asyncio.run``."""
        if threading.current_thread() is not threading.main_thread():
            return asyncio.run(main)
        previous = signal.signal(signal.SIGINT, self._pressed)
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
            signal.signal(
                signal.SIGINT, signal.default_int_handler if previous is None else previous
            )
            self._loop = self._task = None

    async def _started(self, main: Coroutine[Any, Any, _T]) -> _T:
        self._task = asyncio.current_task()
        return await main

    def _pressed(self, signum: int, frame: FrameType | None) -> None:
        self.presses += 1
        loop, task = self._loop, self._task
        if self.presses > 2 or loop is None or task is None or loop.is_closed():
            raise KeyboardInterrupt
        loop.call_soon_threadsafe(self._stop if self.presses == 1 else self._cut)

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
        if self.worker is not None:
            self.worker.cut_short()
