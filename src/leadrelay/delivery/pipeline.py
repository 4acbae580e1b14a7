"""The streaming send path: pull payloads, batch them by size or age, deliver a few batches at once.

A plain iterator (a file being read and mapped) is pulled in a reader thread, so mapping goes on
while requests are in flight; memory stays bounded because the reader waits when one batch worth of
payloads is waiting, and at most ``concurrency`` batches are in flight. Once the dispatcher pauses
(auth failure), no more payloads are pulled: those already pulled are reported QUEUED and the rest
of the iterator is left for the caller to report as not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from leadrelay.delivery.dispatcher import Dispatcher
from leadrelay.outcome import Delivery, Payload

_END: Final = object()


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When to send: ``max_events`` per request (Meta allows 1000), a partial batch once its oldest
    payload has waited ``max_age_s`` (slow input), with ``concurrency`` requests in flight."""

    max_events: int = 1000
    max_age_s: float = 1.0
    concurrency: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.max_events <= 1000:
            raise ValueError(f"max_events must be between 1 and 1000, got {self.max_events}")
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {self.max_age_s}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")


class _Source(Protocol):
    error: BaseException | None

    async def take(self, limit: int, timeout: float | None) -> list[Payload] | None:
        """Up to ``limit`` payloads; ``[]`` on timeout or wake-up, ``None`` when exhausted."""

    def wake(self) -> None:
        """Make a pending ``take`` return now."""

    async def drain(self) -> list[Payload]:
        """Stop pulling; wait for a pull in progress; return what was pulled but not taken."""

    def abort(self) -> None:
        """Stop pulling without waiting (cancellation)."""


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _ThreadSource:
    """Pulls a blocking iterator in a daemon thread into a bounded hand-off queue."""

    def __init__(self, it: Iterator[Payload], limit: int) -> None:
        self.error: BaseException | None = None
        self._it = it
        self._limit = limit
        self._items: deque[Payload] = deque()
        self._cond = threading.Condition()
        self._waiter: asyncio.Future[None] | None = None
        self._stopped = False
        self._finished = False
        self._loop = asyncio.get_running_loop()
        # A daemon thread, not the default executor: a reader blocked on a silent stdin must not
        # keep the process alive after an interrupt.
        self._thread = threading.Thread(target=self._run, name="leadrelay-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while len(self._items) >= self._limit and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                try:
                    item = next(self._it)
                except StopIteration:
                    return
                with self._cond:
                    self._items.append(item)
                    waiter, self._waiter = self._waiter, None
                if waiter is not None:
                    self._notify(waiter)
        except BaseException as exc:  # handed to the caller once what was read is delivered
            self.error = exc
        finally:
            with self._cond:
                self._finished = True
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                self._notify(waiter)

    def _notify(self, waiter: asyncio.Future[None]) -> None:
        # RuntimeError: the loop is already closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, waiter)

    def _pop(self, limit: int) -> list[Payload]:
        was_full = len(self._items) >= self._limit
        if limit >= len(self._items):
            out = list(self._items)
            self._items.clear()
        else:
            out = [self._items.popleft() for _ in range(limit)]
        if was_full:
            self._cond.notify_all()
        return out

    async def take(self, limit: int, timeout: float | None) -> list[Payload] | None:
        with self._cond:
            if self._items:
                return self._pop(limit)
            if self._finished:
                return None
            waiter = self._waiter = self._loop.create_future()
        await asyncio.wait({waiter}, timeout=timeout)
        with self._cond:
            self._waiter = None
            if self._items:
                return self._pop(limit)
            return None if self._finished else []

    def wake(self) -> None:
        with self._cond:
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _resolve(waiter)

    async def drain(self) -> list[Payload]:
        while True:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()
                if self._finished:
                    out = list(self._items)
                    self._items.clear()
                    return out
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def abort(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class _AsyncSource:
    """Pulls an async iterator one item at a time, without ever cancelling a pull in progress."""

    def __init__(self, it: AsyncIterator[Payload]) -> None:
        self.error: BaseException | None = None
        self._it = it
        self._pending: asyncio.Task[object] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._finished = False

    async def _next(self) -> object:
        try:
            return await anext(self._it)
        except StopAsyncIteration:
            return _END

    def _collect(self, task: asyncio.Task[object]) -> list[Payload] | None:
        self._pending = None
        try:
            item = task.result()
        except Exception as exc:
            self.error = exc
            item = _END
        if item is _END:
            self._finished = True
            return None
        return [item]  # type: ignore[list-item]

    async def take(self, limit: int, timeout: float | None) -> list[Payload] | None:
        if self._finished:
            return None
        if self._pending is None:
            self._pending = asyncio.create_task(self._next())
        wakeup = self._wakeup = asyncio.get_running_loop().create_future()
        pending = self._pending
        await asyncio.wait((pending, wakeup), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        self._wakeup = None
        return self._collect(pending) if pending.done() else []

    def wake(self) -> None:
        if self._wakeup is not None:
            _resolve(self._wakeup)

    async def drain(self) -> list[Payload]:
        if self._pending is None:
            return []
        pending = self._pending
        await asyncio.wait({pending})
        return self._collect(pending) or []

    def abort(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


async def deliver_stream(
    payloads: Iterable[Payload] | AsyncIterable[Payload],
    dispatcher: Dispatcher,
    policy: BatchPolicy,
    on_result: Callable[[Delivery], None],
) -> None:
    """Deliver every payload of ``payloads`` in batches; ``on_result`` gets exactly one call per
    payload pulled. Stops pulling when ``dispatcher.paused`` is set. An exception raised by the
    iterator is re-raised after everything pulled before it has been delivered."""
    source: _Source
    if isinstance(payloads, AsyncIterable):
        source = _AsyncSource(aiter(payloads))
    else:
        source = _ThreadSource(iter(payloads), policy.max_events)
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(policy.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def run(batch: list[Payload]) -> None:
        try:
            for result in await dispatcher.deliver(batch):
                on_result(result)
        except Exception as exc:  # re-raised by deliver_stream once the others have finished
            failures.append(exc)
            source.wake()
        finally:
            slots.release()
            if dispatcher.paused is not None:
                source.wake()

    async def flush(batch: list[Payload]) -> None:
        await slots.acquire()
        task = asyncio.create_task(run(batch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    batch: list[Payload] = []
    started = 0.0
    try:
        while dispatcher.paused is None and not failures:
            timeout = None if not batch else max(0.0, started + policy.max_age_s - loop.time())
            items = await source.take(policy.max_events - len(batch), timeout)
            if items is None:
                break
            if items and not batch:
                started = loop.time()
            batch.extend(items)
            # An empty answer means the oldest payload's time is up.
            if batch and (
                len(batch) >= policy.max_events
                or not items
                or loop.time() - started >= policy.max_age_s
            ):
                await flush(batch)
                batch = []
        if not failures:
            # When paused, the dispatcher reports these QUEUED without sending anything.
            batch.extend(await source.drain())
            for start in range(0, len(batch), policy.max_events):
                await flush(batch[start : start + policy.max_events])
        await asyncio.gather(*tasks)
        if failures:
            raise failures[0]
    except BaseException:
        source.abort()
        for task in tasks:
            task.cancel()
        raise
    if source.error is not None:
        raise source.error
