"""Group commit: one thread reads and maps the requests queued for it, and stores the events of
several requests in one transaction.

Every ``Store.add`` ends with a commit, and with SQLite's ``synchronous = FULL`` a commit waits for
fsync, whatever the number of rows. Eight clients posting 100 events each would pay it for every
request. Here, while the thread works on one request, the next ones queue up; it then prepares
them in arrival order (up to ``max_items`` events) and commits them together. Each request is
answered only once its own events are durable.

One thread, not a pool: threads that map while another one writes fight over the GIL at every row
SQLite steps through (``sqlite3`` lets go of the GIL for each), and each row then waits for the
GIL's switch interval. Measured on one core, two threads cost 20-50% more CPU per event than one
and took fewer events per second, although one thread sits idle while the disk syncs.

A failed group is not held against its members: each then stores its events on its own, so an
answer is exactly what it would have been without grouping (the first outcome for a key wins in
both cases, as ``Store.add`` keeps it within one batch and across batches alike).

Given a ``sync`` (``SQLiteStore.sync``), the wait for the disk overlaps with mapping: the intake
thread commits without fsync (``add`` is then ``add(items, durable=False)``) and hands the group
to a syncer thread, which fsyncs the write-ahead log (one GIL release for the whole fsync, not one
per row) and only then answers the group's requests, while the intake thread maps the next group.
Groups committed while the syncer waits share its next fsync. A request is answered 202 only
after an fsync that began after its commit returned: as durable as a commit with
``synchronous = FULL`` (why, with checkpoints in between: ``sqlite_store``). A failed sync fails
exactly the requests whose events it was to make durable: their clients resend, and the events
already in the store keep their ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from leadrelay.delivery.store import Added, Incoming

MAX_GROUP_ITEMS: Final = 500
"""A group takes no more requests once it holds this many events. A few hundred rows share a
commit's fixed cost well; bigger groups answer more clients at once, and then the thread waits
idle for their next requests instead of working on requests already queued."""

T = TypeVar("T")

Prepare = Callable[[], tuple[Sequence[Incoming], T]]
"""Reads and maps one request (in the thread): the events to store and the request's answer."""


@dataclass(slots=True)
class _Job(Generic[T]):
    prepare: Prepare[T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[T, Added]]
    items: Sequence[Incoming] = ()
    answer: T | None = None
    added: Added = field(default_factory=lambda: Added([], []))  # what the store did of items
    error: BaseException | None = None


class GroupCommit:
    """Runs the ``prepare`` of each request in one thread and stores what they return with
    ``add`` (a ``Store.add_new``), several requests per call.

    ``submit`` returns the request's answer and what the store did of its events (``Added``:
    which it stored, which it found stored) once they are durable, or raises what ``prepare``
    or ``add`` raised for this request alone.
    """

    def __init__(
        self,
        add: Callable[[Sequence[Incoming]], Added],
        *,
        sync: Callable[[], None] | None = None,
        max_items: int = MAX_GROUP_ITEMS,
        name: str = "leadrelay-intake",
    ) -> None:
        self._add = add
        self._sync = sync
        self._max_items = max_items
        self._name = name
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._synced: queue.SimpleQueue[list[_Job[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._syncer: threading.Thread | None = None

    async def submit(self, prepare: Prepare[T]) -> tuple[T, Added]:
        """Prepare and store one request in the thread; its answer, and what the store did of
        its events."""
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(prepare, loop, loop.create_future())
        if self._thread is None:
            if self._sync is not None:
                self._syncer = threading.Thread(
                    target=self._run_syncer, name=f"{self._name}-sync", daemon=True
                )
                self._syncer.start()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put(job)
        return await job.future

    def close(self) -> None:
        """Stop the threads once the requests submitted so far are done."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            self._synced.put(None)
            syncer.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            group: list[_Job[Any]] = []
            size = 0
            while True:
                try:
                    job.items, job.answer = job.prepare()
                except BaseException as exc:  # handed to the request, as to_thread would
                    job.error = exc
                group.append(job)
                size += len(job.items)
                if size >= self._max_items:
                    break
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:  # closing: finish this group first
                    self._jobs.put(None)
                    break
            self._commit([j for j in group if j.error is None and j.items])
            if self._syncer is not None:
                self._synced.put(group)
            else:
                _resolve(group)

    def _run_syncer(self) -> None:
        """Sync what the groups committed, then answer them; one sync for all groups waiting."""
        assert self._sync is not None
        closing = False
        while not closing and (group := self._synced.get()) is not None:
            while True:  # the groups committed during the last sync: this sync covers them too
                try:
                    more = self._synced.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                group += more
            stored = [job for job in group if job.error is None and job.items]
            if stored:
                try:
                    self._sync()
                except BaseException as exc:  # not durable: these clients must resend
                    for job in stored:
                        job.error = exc
            _resolve(group)

    def _commit(self, group: list[_Job[Any]]) -> None:
        """Store the group's events in one ``add``; alone again for each when that fails."""
        if len(group) > 1:
            with contextlib.suppress(Exception):  # then each request gets its own error below
                added = self._add([item for job in group for item in job.items])
                at = 0
                for job in group:
                    job.added = _part(added, at, at + len(job.items))
                    at += len(job.items)
                return
        for job in group:
            try:
                job.added = self._add(job.items)
            except BaseException as exc:
                job.error = exc


def _resolve(group: list[_Job[Any]]) -> None:
    """Answer the group's requests on their event loop (one wake-up for all of them)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
    for job in group:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, jobs)


def _settle(jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        if job.future.cancelled():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result((job.answer, job.added))


def _part(added: Added, start: int, end: int) -> Added:
    """What ``added`` says of the items from ``start`` to ``end`` (one request's)."""
    others = {n - start: name for n, name in added.other_stages.items() if start <= n < end}
    alike = frozenset(n - start for n in added.alike if start <= n < end)
    return Added(added.ids[start:end], added.stored[start:end], others, alike)
