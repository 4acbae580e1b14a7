"""``RedisStore``: the ``Store`` protocol on Redis Streams, shared by a fleet of processes.

See the package docstring for the design; the state changes themselves are the Lua scripts in
``lua_queue``, ``lua_settle`` and ``lua_admin``, one atomic script (one round trip) per call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Final, cast

import orjson

from leadrelay.delivery.redis import lua_admin, lua_queue, lua_settle, records
from leadrelay.delivery.redis.connection import Arg, Client
from leadrelay.delivery.redis.reads import MAX_CLAIM, RedisReads
from leadrelay.delivery.redis.records import Value, number
from leadrelay.delivery.store import (
    Accounted,
    Added,
    Claimed,
    EventRecord,
    Incoming,
    OriginalPolicy,
    Stage,
    Store,
    add_in_passes,
)
from leadrelay.outcome import Delivery, State

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
_GONE_AFTER_MS: Final = 86_400_000


class RedisStore(RedisReads, Store):
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
    A Redis without an append-only file is a ``StoreError`` too, where events are to be stored
    (``create``), unless ``require_aof=False`` (then a warning is logged).
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
        require_aof: bool = True,
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
            require_aof=require_aof,
        )
        self.dead_letter_key = self._p + "dead"
        """The dead-letter stream: one entry (i, k, r, m, at) per event that went DEAD."""
        reg = self._r.register_script
        q, s, a = lua_queue, lua_settle, lua_admin
        self._add, self._claim, self._complete = reg(q.ADD), reg(q.CLAIM), reg(s.COMPLETE)
        self._retry, self._release, self._renew = reg(s.RETRY), reg(s.RELEASE), reg(s.RENEW)
        self._pause = reg(a.PAUSE)
        self._register_reads()
        self._open_among = reg(a.OPEN_AMONG)
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
        limit = min(limit, MAX_CLAIM)
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

    def stages_of(self, ids: Sequence[int]) -> dict[int, Stage]:
        """See ``Outcomes.stages_of``: from ``outcomes`` (a thousand per script call)."""
        return {
            r.id: Stage(r.state, r.event_name, r.updated_at, r.source_event, r.attempts)
            for r in self.outcomes(ids)
        }

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
