"""``RedisReads``: what ``status``, ``dead-letters`` and the dashboard ask of ``RedisStore``
(counts, timeline, events, get) and what they change (requeue, purge), apart from the queue's
calls, one script or one pipeline per call."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final, cast

from leadrelay.delivery.redis import lua_admin, records
from leadrelay.delivery.redis.connection import Arg, RedisConnection
from leadrelay.delivery.redis.counters import levels_for, to_counts, to_timeline
from leadrelay.delivery.redis.records import Value, number
from leadrelay.delivery.store import Counts, EventRecord, purgeable
from leadrelay.outcome import Payload, State

ALL_STATES: Final = tuple(s.value for s in State)
CHUNK: Final = 5000  # ids per script call where a call walks many events (purge, events)
MAX_CLAIM: Final = 1000  # Meta's batch limit; keeps every script's argument lists small


class RedisReads(RedisConnection):
    """The reading and admin calls of ``RedisStore``; ``_register_reads`` registers their
    scripts once connected."""

    def _register_reads(self) -> None:
        reg = self._r.register_script
        a = lua_admin
        self._requeue, self._purge = reg(a.REQUEUE), reg(a.PURGE)
        self._counts, self._events = reg(a.COUNTS), reg(a.EVENTS)

    def counts(self, since: float | None = None) -> Counts:
        """See ``Store.counts``. Reads counters, never events: exact to the second while
        ``since`` is within 2 hours of the latest change, to the minute within 2 days, to the
        hour within 40 days (changes older than that are not counted)."""
        arg = "" if since is None else number(since)
        answer = self._run(self._counts, [arg, *levels_for(None)])
        return to_counts(answer, all_time=since is None)

    def timeline(self, since: float, bucket_s: int) -> list[tuple[float, dict[str, int]]]:
        """See ``Store.timeline``. Built from the counter buckets whose size divides
        ``bucket_s`` (so ``bucket_s`` = 60 reaches back 2 days, 3600 40 days)."""
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s}")
        answer = self._run(self._counts, [number(since), *levels_for(bucket_s)])
        return to_timeline(answer[3], bucket_s)

    def events(
        self,
        *,
        states: Sequence[State] | None = None,
        reason: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after_id: int | None = None,
        bodies: bool = True,
    ) -> list[EventRecord]:
        """See ``Store.events``. Pages through the per-state id sets; ``reason`` and ``since``
        are checked on the server while paging, so only matching events are read."""
        wanted = ALL_STATES if states is None else tuple(State(s).value for s in states)
        ids: list[int] = []
        after = after_id or 0
        flags = ["0", ""] if reason is None else ["1", reason]
        while len(ids) < limit and wanted:
            args: list[Arg] = [str(after), str(limit - len(ids)), str(CHUNK), *flags]
            done, last, *found = self._run(
                self._events, [*args, "" if since is None else number(since), *wanted]
            )
            ids += (int(i) for i in found)
            after = int(last)
            if int(done):
                break
        return self._records(ids, bodies=bodies)

    def last_id(self) -> int:
        """See ``Store.last_id`` (the counter the ADD script takes ids from)."""
        with self._calling():
            value = self._r.get(f"{self._p}seq")
        return int(cast(bytes, value)) if value else 0

    def _records(self, ids: Sequence[int], *, bodies: bool = True) -> list[EventRecord]:
        """The events of ``ids`` that are still stored, in that order (one round trip); without
        ``bodies``, their hashes only."""
        if not ids:
            return []
        p = self._p
        kinds = "pno" if bodies else ""
        step = 1 + len(kinds)  # replies per event: its hash, then its bodies
        with self._calling():
            pipe = self._r.pipeline(transaction=False)
            for i in ids:  # no MGET: a Cluster pipeline refuses multi-key commands
                pipe.hgetall(f"{p}e:{i}")
                for kind in kinds:
                    pipe.get(f"{p}{kind}:{i}")
            got = cast(list[Any], pipe.execute())
        none = (None, None, None)
        return [
            records.record(i, got[step * n], *(got[step * n + 1 : step * n + step] or none))
            for n, i in enumerate(ids)
            if got[step * n]
        ]

    def get(self, id_or_key: int | str) -> EventRecord | None:
        """See ``Store.get``."""
        if isinstance(id_or_key, str):
            with self._calling():
                found = self._r.hget(self._p + "keys", id_or_key) if id_or_key else None
            if found is None:
                return None
            id_ = int(found)
        else:
            id_ = int(id_or_key)
        got = self._records([id_])
        return got[0] if got else None

    def requeue(
        self,
        ids: Sequence[int],
        payloads: Sequence[Payload] | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """See ``Store.requeue``. A replayed event goes behind the open events of its lead.
        Rows are requeued a thousand per script, so a big replay never holds Redis up for long."""
        at = time.time() if now is None else now
        if payloads is not None and len(payloads) != len(ids):
            raise ValueError(f"requeue got {len(ids)} ids but {len(payloads)} payloads")
        rows: list[list[Value]] = []
        for n, i in enumerate(ids):  # encode all before writing any
            if payloads is None:
                rows.append([str(i), "", "", "", "0"])
                continue
            p = payloads[n]
            try:
                data, notes, fields = records.payload_fields(p)
            except TypeError as exc:
                raise ValueError(f"event {i}: payload cannot be encoded as JSON: {exc}") from exc
            rows.append([str(i), str(p.lead_id), data, notes, str(len(fields) // 2), *fields])
        total = 0
        for start in range(0, len(rows), MAX_CLAIM):
            args = [number(at)] + [v for row in rows[start : start + MAX_CLAIM] for v in row]
            total += int(self._run(self._requeue, args))
        return total

    def purge(
        self, *, delivered_before: float, drop_originals: bool, state: State = State.DELIVERED
    ) -> int:
        """See ``Store.purge``. Walks the events of ``state`` in chunks, one script call each."""
        total, after = 0, "0"
        name = purgeable(state)
        while True:
            args: list[Arg] = [number(delivered_before), "1" if drop_originals else "0", after]
            args += [CHUNK, name]
            n, last, seen = self._run(self._purge, args)
            total += int(n)
            if int(seen) < CHUNK:
                return total
            after = str(last)
