"""``send``'s store: what it reads waits for delivery in memory and is written once, settled.

Through the queue (``add``, ``claim``, ``complete``) the SQLite store writes each event three
times, its row and its index entries each time: QUEUED, IN_FLIGHT, then final. That was about
half of what ``send`` spent per event. ``send`` reads files that stay where they are and delivers
what it reads itself, in the same process: it needs no queue to keep what it has not sent yet.

``WriteBehindStore`` keeps the payloads ``send`` reads in memory (up to ``limit`` events and
``limit_bytes`` of them), hands them to ``claim`` from there, and writes each one once, with its
outcome (``SQLiteStore.record``). When memory is full, ``add`` waits while delivery takes events
from it (``wait_for_delivery_s``): reading then goes at delivery's pace, where storing what it
read ahead cost a second write of each event (with ``send --jobs 2`` the reader outpaces
delivery by far). Everything else goes to the store as before: filtered and rejected events;
payloads past the limits once delivery takes nothing for that long (paused, retrying, stopped:
the store holds the backlog, memory stays bounded); events put back for a retry; and, when it
closes, whatever is still in memory (delivery stopped: Ctrl-C, SIGTERM, Meta refused the
token). Events already stored (an earlier run of the same files) are neither kept nor sent
again, and the first outcome stored for a key wins, as with ``add``, which also lets a payload
take the place of a stored event Meta never saw (filtered, or refused by our rules: the config
was fixed since). ``claim`` takes the longest due first, from memory or from the store.

An event is stored once its outcome is known. If the process is killed (SIGKILL, a crash), what
it had read but not recorded is in no store: running the same send again sends it (what was
recorded is skipped, by key), as a batch in flight when a process dies is sent again after
``release_in_flight``. So ``send`` uses it only for input it can read again (regular files, not
a pipe). What ``add`` hands to the store is committed at once and synced to disk with the next
commit that syncs (a record, a claim of it, the close): a power cut may lose it, as it loses
what waits in memory. Ids of events in memory are negative and change when they are stored.
Where each event of an add goes, and how the events in memory are counted: ``write_behind_memory``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import chain

from leadrelay.delivery.encoded import EncodedPayload
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import (
    Added,
    Claimed,
    Counts,
    Incoming,
    Store,
    StoreError,
)
from leadrelay.delivery.store_calls import described
from leadrelay.delivery.write_behind_memory import (
    all_new,
    other_stages_held,
    payload_of,
    place,
    size,
    with_memory,
)
from leadrelay.delivery.write_behind_stored import StoredEvents
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State

__all__ = ["WriteBehindStore"]


class WriteBehindStore(StoredEvents, Store):
    """A ``Store`` for one delivering process over a ``SQLiteStore`` (see the module).

    ``limit`` payloads at most, and ``limit_bytes`` of them (payload and event as received),
    wait in memory (not claimed yet); beyond either, ``add`` stores them, after waiting while
    claims take events from memory at least every ``wait_for_delivery_s`` (0: no wait) for
    room. Thread-safe: ``add`` calls are taken one at a time, claims and completions may run
    beside them and each other. It owns the store under it and closes it.
    """

    def __init__(
        self,
        store: SQLiteStore,
        *,
        limit: int = 10_000,
        limit_bytes: int = 32 << 20,
        wait_for_delivery_s: float = 0.0,
    ) -> None:
        self._store = store
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._wait_s = wait_for_delivery_s
        self._closing = False
        self._bytes = 0  # of the events waiting
        # One add at a time: an event it hands to the store is not in memory, nor found stored
        # until that add commits; a second add meanwhile would keep its key twice.
        self._adding = threading.Lock()
        # Held while deciding where events go (it spans the lookup of stored keys) and while
        # events leave memory once recorded, so a key is always in memory or found stored.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # told when claims take events from memory
        self._taken = 0  # claims that took events from memory
        self._stalled_at = -1  # ``_taken`` when a wait for room last ran out
        # Not claimed yet, in read order; each event's outcome is its EncodedPayload.
        self._waiting: deque[tuple[int, Incoming]] = deque()
        self._sizes: deque[int] = deque()  # ``size`` of each waiting event, in the same order
        self._held: dict[int, Incoming] = {}  # claimed, outcome not stored yet
        self._keys: dict[str, int] = {}  # key -> id, of the events in memory
        self._next_id = -1

    def add(self, items: Sequence[Incoming]) -> list[int]:
        """See ``Store.add``: payloads stay in memory (durable once recorded, see the module)."""
        return self.add_new(items).ids

    def add_new(self, items: Sequence[Incoming]) -> Added:
        """See ``Store.add_new`` and ``add``."""
        with self._adding:
            if self._wait_s > 0:
                self._wait_for_room(len(items))
            return self._add(items)

    def _wait_for_room(self, count: int) -> None:
        """Wait while memory has no room for ``count`` more events (or none for their bytes) and
        claims keep taking events from it, one at least every ``wait_for_delivery_s``. Once a
        wait ran out, none starts again until a claim took events (delivery paused or stopped
        would make every add wait)."""
        need = min(count, self._limit)
        with self._room:
            while not self._closing and (
                len(self._waiting) + need > self._limit or self._bytes >= self._limit_bytes
            ):
                taken = self._taken
                if taken == self._stalled_at:
                    return  # still stalled: store them
                if not self._room.wait(self._wait_s) and self._taken == taken:
                    self._stalled_at = taken  # delivery takes nothing (paused, retrying, stopped)
                    return

    def _add(self, items: Sequence[Incoming]) -> Added:
        with self._lock:
            keep = self._limit - len(self._waiting)
            keys = [k for i in items if isinstance(o := i.outcome, Payload) and (k := o.key)]
            stored = self._store.stored_keys(keys) if keep > 0 else {}
            room = self._limit_bytes - self._bytes
            placed = None if stored else all_new(items, keys, self._keys, keep, room, self._next_id)
            if placed is not None and not placed.rest:  # all wait in memory (most chunks)
                self._keep(placed.waiting, placed.sizes, placed.in_memory.items())
                return Added(placed.ids, placed.new, {})
            # What goes to memory is kept aside until the store took the rest: a store that
            # fails (a full disk) leaves memory as it was, so the same chunk can be added again.
            if placed is None:
                placed = place(items, self._keys, stored, keep, room, self._next_id)
            ids, new, waiting = placed.ids, placed.new, placed.waiting
            others = {}
            if placed.held_again:  # while they are held: once recorded, their ids change
                in_memory = chain(waiting, self._waiting, self._held.items())
                others = other_stages_held(items, placed.held_again, in_memory)
        if placed.rest:
            # Not synced here (the reader would wait for the disk, each piece it reads): the
            # next record or close syncs it, and a claim syncs before it hands a payload out.
            added = self._store.add_new(placed.rest, durable=False)
            for at, id_, took in zip(placed.places, added.ids, added.stored, strict=True):
                ids[at] = id_
                new[at] = took
        if waiting:
            with self._lock:
                self._keep(waiting, placed.sizes, placed.in_memory.items())
        return Added(ids, new, others)

    def _keep(
        self,
        waiting: Iterable[tuple[int, Incoming]],
        sizes: list[int],
        keys: Iterable[tuple[str, int]],
    ) -> None:
        """Events enter memory (ids from ``_next_id`` down, in order), with their sizes and keys.
        Called with the lock held."""
        self._waiting += waiting
        self._sizes += sizes
        self._keys.update(keys)
        self._bytes += sum(sizes)
        self._next_id -= len(sizes)

    def claim(self, limit: int, now: float) -> list[Claimed]:
        """See ``Store.claim``: the longest due first, from the store or from memory (what waits
        in memory is due since it was read)."""
        with self._lock:
            # What the store holds that was due before the oldest event in memory goes first
            # (strictly before: of events due alike, those in memory were read first).
            due = (
                math.nextafter(self._waiting[0][1].received_at, -math.inf) if self._waiting else now
            )
        claimed = self._store.claim(limit, min(now, due))
        with self._lock:
            n = min(limit - len(claimed), len(self._waiting))
            waiting, sizes = self._waiting, self._sizes
            taken = [waiting.popleft() for _ in range(n)]
            self._bytes -= sum([sizes.popleft() for _ in range(n)])
            self._held.update(taken)
            if n:
                self._taken += 1
                self._room.notify_all()
        # Only payloads wait in memory (see ``_add``): each outcome is an EncodedPayload.
        claimed += [Claimed(id_, item.outcome, 0) for id_, item in taken]  # type: ignore[arg-type]
        if len(claimed) < limit and due < now:
            claimed += self._store.claim(limit - len(claimed), now)
        return claimed

    def complete(self, results: Sequence[tuple[int, Delivery]], now: float) -> None:
        """See ``Store.complete``: payloads from memory are stored now, with their outcome."""
        held = self._held
        mine = [(i, held[i], d) for i, d in results if i < 0 and i in held]
        theirs = [(i, d) for i, d in results if i >= 0]
        if theirs:
            self._store.complete(theirs, now)
        if mine:
            # Their keys were found nowhere when they were added, and kept in memory since.
            self._store.record([(item, d) for _, item, d in mine], now, new_keys=True)
            self._forget([i for i, _, _ in mine])

    def complete_delivered(self, ids: Sequence[int], delivered: DeliveredWhole, now: float) -> None:
        """See ``Store.complete_delivered``: a batch all from memory, most of them, is recorded
        without a ``Delivery`` per event (``SQLiteStore.record_delivered``)."""
        held = self._held
        try:
            items = [held[i] for i in ids]
        except KeyError:  # some of it came from the store: a Delivery each
            super().complete_delivered(ids, delivered, now)
            return
        self._store.record_delivered(items, delivered.message, delivered.fbtrace_id, now)
        self._forget(ids)

    def retry_later(
        self,
        ids: Sequence[int],
        next_attempt_at: float,
        reason: str,
        message: str | None,
        *,
        attempts: int = 1,
        now: float | None = None,
    ) -> None:
        """See ``Store.retry_later``: payloads from memory are stored, QUEUED as the queue would
        leave them, in one transaction (should it fail, they are still held: a second call
        stores them)."""
        at = time.time() if now is None else now
        held = self._held
        mine = [(i, held[i]) for i in ids if i < 0 and i in held]
        theirs = [i for i in ids if i >= 0]
        if mine:
            self._store.record(
                [
                    (item, Delivery(payload_of(item), State.QUEUED, attempts, reason, message))
                    for _, item in mine
                ],
                at,
                due=next_attempt_at,
                new_keys=True,
            )
            self._forget([i for i, _ in mine])
        if theirs:
            self._store.retry_later(
                theirs, next_attempt_at, reason, message, attempts=attempts, now=at
            )

    def release_in_flight(self) -> int:
        """See ``Store.release_in_flight``; what this process holds waits again, first."""
        with self._lock:
            held, self._held = self._held, {}
            self._waiting.extendleft(reversed(held.items()))
            sizes = [size(payload_of(item), item) for item in held.values()]
            self._sizes.extendleft(reversed(sizes))
            self._bytes += sum(sizes)
        return len(held) + self._store.release_in_flight()

    def counts(self, since: float | None = None) -> Counts:
        """See ``Store.counts``: the events in memory are counted QUEUED or IN_FLIGHT (see
        ``with_memory``)."""
        counts = self._store.counts(since)
        with self._lock:
            waiting = [item for _, item in self._waiting]
            return with_memory(counts, waiting, list(self._held.values()), since)

    def waiting(self) -> list[tuple[int, EncodedPayload]]:
        """The payloads in memory not sent yet (``close`` stores them queued), with their ids."""
        with self._lock:
            return [(i, payload_of(item)) for i, item in self._waiting] + [
                (i, payload_of(item)) for i, item in self._held.items()
            ]

    def close(self) -> None:
        """Store what is still in memory (QUEUED: the next ``send`` or ``serve`` delivers it),
        then close the store. An add still running (a reader not stopped yet) finishes first;
        a later one fails, as the store is closed."""
        with self._room:  # an add waiting for room stops waiting
            self._closing = True
            self._room.notify_all()
        with self._adding:
            with self._lock:
                left = [*self._held.values(), *(item for _, item in self._waiting)]
                self._held, self._waiting, self._keys, self._bytes = {}, deque(), {}, 0
                self._sizes = deque()
            try:
                if left:
                    self._store.add(left)
                # What add left to a later sync (see ``_add``): a failure is said here, not
                # swallowed by the store's close.
                self._store.sync()
            except Exception as exc:  # a full disk: what was held is read again next time
                raise StoreError(
                    f"the event store could not keep the {len(left)} events read and not sent "
                    f"yet as the send ended ({described(exc)}); the next send of the same files "
                    "reads them again"
                ) from exc
            finally:
                self._store.close()

    def _forget(self, ids: Sequence[int]) -> None:
        """Events now stored leave memory (after the store committed them: see ``add``)."""
        with self._lock:
            held, keys = self._held.pop, self._keys.pop
            for id_ in ids:
                item = held(id_, None)
                if item is not None and (key := item.outcome.key):
                    keys(key, None)
