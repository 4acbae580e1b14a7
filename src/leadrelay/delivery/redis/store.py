"""``RedisStore``: the ``Store`` protocol on Redis Streams, shared by a fleet of processes.

See the package docstring for the design; the state changes themselves are the Lua scripts in
``lua_queue`` and ``lua_admin``, one atomic script (one round trip) per call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Final, cast

import orjson

from leadrelay.delivery.redis import lua_admin, lua_queue, records
from leadrelay.delivery.redis.connection import Arg, Client, RedisConnection
from leadrelay.delivery.redis.counters import levels_for, to_counts, to_timeline
from leadrelay.delivery.redis.records import Value, number
from leadrelay.delivery.store import (
    Accounted,
    Added,
    Claimed,
    Counts,
    EventRecord,
    Incoming,
    OriginalPolicy,
    Store,
    add_in_passes,
    purgeable,
)
from leadrelay.outcome import Delivery, Payload, State

_ALL_STATES: Final = tuple(s.value for s in State)
_CHUNK: Final = 5000  # ids per script call where a call walks many events (purge, events)
_RELEASE_CHUNK: Final = 1000
_SPANS_PER_CALL: Final = 1000  # keeps OPEN_AMONG's (and others') argument list small
_IDS_PER_CALL: Final = 10_000  # ids an ACCOUNT_AMONG call covers at most (some 30 ms of Redis)
_STATE_LETTERS: Final = {
    b"d": State.DELIVERED,
    b"r": State.REJECTED,
    b"e": State.EXPIRED,
    b"x": State.DEAD,
    b"q": State.QUEUED,
    b"i": State.IN_FLIGHT,
}  # ACCOUNT_AMONG's
_MAX_CLAIM: Final = 1000  # Meta's batch limit; keeps every script's argument lists small
_GONE_AFTER_MS: Final = 86_400_000


class RedisStore(RedisConnection, Store):
    """``Store`` on a Redis server (or one Redis Cluster slot) shared by many processes.

    ``prefix`` names the deployment: every key is ``{prefix}:...``, one hash tag, so the whole
    store lives in one Cluster slot. ``consumer`` must be unique among running processes (the
    default is ``hostname-pid``); a process restarted under the same name takes back what it
    held with ``release_in_flight``. Entries another consumer has held unacknowledged for
    ``claim_idle_s`` are reclaimed by ``claim`` (the consumer died); an entry handed out more
    than ``max_deliveries`` times without a result goes DEAD with reason ``poison``.
    ``cluster=True`` connects to a Redis Cluster through the given URL (any node); a client may
    be passed instead of a URL (``redis.Redis`` or ``redis.cluster.RedisCluster``). With
    ``create=False`` a prefix that holds no store yet is a ``StoreError`` (read-only commands).
    Thread-safe (redis-py's connection pool); every call blocks.
    """

    def __init__(
        self,
        url_or_client: str | Client,
        *,
        prefix: str = "lr",
        consumer: str | None = None,
        group: str = "delivery",
        claim_idle_s: float = 60.0,
        max_deliveries: int = 10,
        original_policy: OriginalPolicy = "keep",
        dead_letter_maxlen: int = 100_000,
        socket_timeout_s: float = 10.0,
        cluster: bool = False,
        create: bool = True,
    ) -> None:
        if claim_idle_s <= 0:
            raise ValueError(f"claim_idle_s must be positive, got {claim_idle_s}")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {max_deliveries}")
        if original_policy not in ("keep", "redact", "drop"):
            raise ValueError(
                f"original_policy must be 'keep', 'redact' or 'drop', got {original_policy!r}"
            )
        self.claim_idle_s = claim_idle_s
        self.max_deliveries = max_deliveries
        self._policy: OriginalPolicy = original_policy
        self._dead_maxlen = str(dead_letter_maxlen)
        super().__init__(
            url_or_client,
            prefix=prefix,
            consumer=consumer,
            group=group,
            socket_timeout_s=socket_timeout_s,
            cluster=cluster,
            create=create,
        )
        self.dead_letter_key = self._p + "dead"
        """The dead-letter stream: one entry (i, k, r, m, at) per event that went DEAD."""
        reg = self._r.register_script
        q, a = lua_queue, lua_admin
        self._add, self._claim, self._complete = reg(q.ADD), reg(q.CLAIM), reg(q.COMPLETE)
        self._retry, self._release, self._renew = reg(q.RETRY), reg(q.RELEASE), reg(q.RENEW)
        self._requeue, self._purge = reg(a.REQUEUE), reg(a.PURGE)
        self._counts, self._events, self._pause = reg(a.COUNTS), reg(a.EVENTS), reg(a.PAUSE)
        self._open_among, self._open_of = reg(a.OPEN_AMONG), reg(a.OPEN_OF)
        self._account_among, self._outcomes_of = reg(a.ACCOUNT_AMONG), reg(a.OUTCOMES_OF)

    def add_new(self, items: Sequence[Incoming]) -> Added:
        """See ``Store.add_new``: one script call (one round trip) per batch, or per pass of it
        where a key comes twice (``passes``)."""
        if not items:
            return Added([], [])
        keys = [item.outcome.key for item in items]
        return add_in_passes(keys, lambda places: self._add_once([items[n] for n in places]))

    def _add_once(self, items: Sequence[Incoming]) -> Added:
        """One ADD script call: ``items`` hold no key twice."""
        args: list[Value] = [number(max(i.received_at for i in items))]
        for item in items:
            args += records.item_args(item, self._policy)
        got = self._run(self._add, args)
        return Added([int(i) for i in got[0::2]], [flag == 1 for flag in got[1::2]])

    def claim(self, limit: int, now: float) -> list[Claimed]:
        """See ``Store.claim``. Reclaims dead consumers' entries first, then reads new ones;
        holds back an event while an earlier one of its lead is queued or in flight elsewhere."""
        if limit < 1:
            return []
        limit = min(limit, _MAX_CLAIM)
        idle_ms = max(1, int(self.claim_idle_s * 1000))
        args: list[Arg] = [self.group, self.consumer, number(now), limit, idle_ms]
        rows = self._run(self._claim, [*args, self.max_deliveries, self._dead_maxlen])
        return [records.claimed(row) for row in rows]

    def complete(self, results: Sequence[tuple[int, Delivery]], now: float) -> None:
        """See ``Store.complete``: outcome recorded and entry acknowledged in one script."""
        args: list[Value] = [self.group, number(now), self._dead_maxlen]
        for id_, d in results:
            args += records.completion_args(id_, d)  # validates before writing
        if len(args) > 3:
            self._run(self._complete, args)

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
        """See ``Store.retry_later``."""
        if not ids:
            return
        at = time.time() if now is None else now
        args = [self.group, number(next_attempt_at), number(at), str(attempts), reason]
        args += ["0", ""] if message is None else ["1", message]
        self._run(self._retry, [*args, *(str(i) for i in ids)])

    def release_in_flight(self) -> int:
        """Take back what *this consumer* holds (a restart under the same name); returns how
        many. Other consumers' entries are not touched: ``claim`` reclaims them once they have
        been idle for ``claim_idle_s`` (their process died)."""
        total = 0
        while True:
            n, seen = self._run(self._release, [self.group, self.consumer, _RELEASE_CHUNK])
            total += int(n)
            if int(seen) < _RELEASE_CHUNK:
                break
        self._forget_gone_consumers()
        return total

    def _forget_gone_consumers(self) -> None:
        """Consumers of processes that died stay listed in the group; drop those idle for a day
        whose entries were all taken over."""
        with self._calling():
            listed = self._r.xinfo_consumers(self.stream_key, self.group)
        gone = [
            c["name"]
            for c in listed
            if not c["pending"]
            and c["idle"] > _GONE_AFTER_MS
            and c["name"] != self.consumer.encode()
        ]
        if gone:
            self._run(self._leave, [self.group, *gone])

    def renew(self, ids: Sequence[int]) -> int:
        """Reset the idle time of events this consumer holds, so a long delivery (retries with
        backoff) is not reclaimed by others; call it every ``claim_idle_s / 3``. Returns how many
        are still held by this consumer."""
        if not ids:
            return 0
        return int(self._run(self._renew, [self.group, self.consumer, *(str(i) for i in ids)]))

    def open_among(self, spans: Sequence[tuple[int, int]]) -> int:
        """See ``FleetControl.open_among``: counted in the queued and in-flight id sets."""
        open_ = 0
        for start in range(0, len(spans), _SPANS_PER_CALL):
            bounds = [str(i) for span in spans[start : start + _SPANS_PER_CALL] for i in span]
            open_ += int(self._run(self._open_among, bounds))
        return open_

    def open_of(self, ids: Sequence[int]) -> list[bool]:
        """See ``FleetControl.open_of``: looked up in the queued and in-flight id sets."""
        flags = ""
        for start in range(0, len(ids), _SPANS_PER_CALL):
            args = [str(i) for i in ids[start : start + _SPANS_PER_CALL]]
            flags += cast(bytes, self._run(self._open_of, args)).decode()
        return [flag == "1" for flag in flags]

    def account_among(self, spans: Sequence[tuple[int, int]], *, list_all: bool) -> Accounted:
        """See ``FleetControl.account_among``: counted and listed in the per-state id sets, a
        script call per thousand spans or ``_IDS_PER_CALL`` ids (one call holds Redis up: 0.46 s
        for 200,000 ids listed in one)."""
        open_, delivered, listed = 0, 0, []
        flag = "1" if list_all else "0"
        for bounds in _calls(spans):
            n_open, n_delivered, found = self._run(self._account_among, [flag, *bounds])
            open_ += int(n_open)
            delivered += int(n_delivered)
            listed += [
                (int(found[k]), _STATE_LETTERS[found[k + 1]]) for k in range(0, len(found), 2)
            ]
        return Accounted(open_, delivered, listed)

    def outcomes(self, ids: Sequence[int]) -> list[EventRecord]:
        """See ``FleetControl.outcomes``: a thousand per script call, the fields a report row
        says only, as JSON (a pipeline of whole hashes took some 60 us per event)."""
        out: list[EventRecord] = []
        names = lua_admin.OUTCOME_FIELDS
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            found = orjson.loads(self._run(self._outcomes_of, [str(i) for i in chunk]))
            for id_, values in zip(chunk, found, strict=True):
                if values:
                    stored = {f: v.encode() for f, v in zip(names, values, strict=True) if v}
                    out.append(records.record(id_, stored, None, None, None))
        return out

    def pause_until(self, until: float, reason: str, *, now: float | None = None) -> float:
        """Pause delivery fleet-wide until ``until`` (epoch s), e.g. Meta throttled us. Only ever
        extends a pause; returns when the pause now ends."""
        at = time.time() if now is None else now
        ttl_ms = max(1, int((until - at) * 1000) + 1)
        with self._calling():
            value = self._pause(keys=[self._p + "pause"], args=[number(until), reason, ttl_ms])
        return float(value.split(b"|", 1)[0])

    def paused_until(self, *, now: float | None = None) -> tuple[float, str] | None:
        """The fleet-wide pause: (until, reason), or None. Workers check it before claiming."""
        at = time.time() if now is None else now
        with self._calling():
            value = cast(bytes | None, self._r.get(self._p + "pause"))
        if value is None:
            return None
        until, _, reason = value.partition(b"|")
        return (float(until), reason.decode()) if float(until) > at else None

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
        wanted = _ALL_STATES if states is None else tuple(State(s).value for s in states)
        ids: list[int] = []
        after = after_id or 0
        flags = ["0", ""] if reason is None else ["1", reason]
        while len(ids) < limit and wanted:
            args: list[Arg] = [str(after), str(limit - len(ids)), str(_CHUNK), *flags]
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
        for start in range(0, len(rows), _MAX_CLAIM):
            args = [number(at)] + [v for row in rows[start : start + _MAX_CLAIM] for v in row]
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
            args += [_CHUNK, name]
            n, last, seen = self._run(self._purge, args)
            total += int(n)
            if int(seen) < _CHUNK:
                return total
            after = str(last)


def _calls(spans: Sequence[tuple[int, int]]) -> Iterator[list[str]]:
    """The bounds of ``spans`` in groups of at most ``_SPANS_PER_CALL`` spans and
    ``_IDS_PER_CALL`` ids, a long span cut in pieces."""
    bounds: list[str] = []
    width = 0
    for first, last in spans:
        while first <= last:
            end = min(last, first + _IDS_PER_CALL - width - 1)
            bounds += (str(first), str(end))
            width += end - first + 1
            first = end + 1
            if width >= _IDS_PER_CALL or len(bounds) >= 2 * _SPANS_PER_CALL:
                yield bounds
                bounds, width = [], 0
    if bounds:
        yield bounds
