"""Reading and mapping one ``POST /v1/events`` body, in the intake thread: the events to store and
the answer to give once they are stored.

A JSON array of event objects (or a batch envelope holding one), the body every client library
sends, is read with one ``orjson.loads`` and its events mapped as they are; any other body goes
through ``parse_body``, which names each problem. Both give the same answer for the same body.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import structlog

from leadrelay.config import Settings
from leadrelay.delivery.store import Added, Incoming
from leadrelay.events import SourceRecord, parse_body
from leadrelay.events.records import batch_of, record
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Filtered, Payload, Rejected
from leadrelay.summary_rows import reused_message

log = structlog.get_logger("leadrelay.intake")

MAX_EVENTS: Final = 25_000  # per request: 25 times Meta's own batch limit
_LABEL: Final = "request"
_QUEUED: Final = ("queued", "")
_REUSED: Final = "event_id_reused"
# What parse_body reads as one JSON document; NDJSON and the rest take the general path.
_JSON_TYPES: Final = frozenset({"", "application/json"})


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to one request once its events are stored: status, JSON body, the number of
    events queued for delivery and the events by (outcome, reason) for the metrics; ``labels``
    is the (outcome, reason) of each event to store, in order, and ``refusals`` the place of
    each one's entry in the answer's ``rejected`` (-1 for none; see ``after``)."""

    status: int
    body: bytes
    queued: int
    counts: Counter[tuple[str, str]]
    labels: tuple[tuple[str, str], ...] = ()
    refusals: tuple[int, ...] = ()
    gaps: tuple[int, ...] = ()  # the places of the body's events that are no item, in order
    # As ``_read`` gave them (they say where): the same answer may come from either path.
    records: list[SourceRecord] | None = field(default=None, compare=False, repr=False)

    def after(self, added: Added) -> Accepted:
        """The answer once the store said which events it stored (``Added.stored``): one it
        found stored (a client's resend) is ``already_stored``, and neither queued, filtered,
        rejected nor counted again (the metrics would count every retry of a client); each
        item is said once. A refusal or a filtered event found stored as such
        (``Added.alike``) is said as the first answer said it (a client that lost that answer
        learns it again), and not counted again either. An event found under an event id
        stored for another stage (``Added.other_stages``) is no resend, and was not stored: a
        payload is rejected, ``event_id_reused``, and a refusal or a filtered one stays as it
        was said."""
        stored, others, alike = added.stored, added.other_stages, added.alike
        if all(stored):
            return self
        counts = self.counts.copy()
        queued = 0
        answer = orjson.loads(self.body)
        dropped: set[int] = set()
        reused: list[tuple[int, dict[str, Any]]] = []  # (item, its entry in rejected)
        not_ids: set[int] = set()  # places in the answer's ids of those reused
        payloads = 0
        items = zip(self.labels, stored, self.refusals, strict=True)
        for n, (label, new, refusal) in enumerate(items):
            payloads += label[0] == "queued"
            if new:
                queued += label[0] == "queued"
            elif n in others:  # not stored: neither a resend nor accepted
                if label[0] == "queued":  # a refusal or a filtered one is said as it was
                    name, first, same = others[n]
                    message = reused_message(
                        name, first, "received before", "not stored", same_event=same
                    )
                    key = answer["ids"][payloads - 1]
                    entry = _rejection(self._where(n), key, _REUSED, "event_id", message)
                    reused.append((n, entry))
                    not_ids.add(payloads - 1)
                    counts[label] -= 1
                    counts["rejected", _REUSED] += 1
            else:
                counts[label] -= 1
                if n in alike:  # said again, as it was
                    continue
                if label[0] == "filtered":
                    answer["filtered"][label[1]] -= 1
                elif refusal >= 0:
                    dropped.add(refusal)
        answer["filtered"] = {k: n for k, n in answer["filtered"].items() if n}
        answer["rejected"] = self._in_order(answer["rejected"], dropped, reused)
        answer["accepted"] -= len(others)
        answer["queued"] = queued
        answer["already_stored"] = len(stored) - sum(stored) - len(others) - len(alike)
        if not_ids:
            answer["ids"] = [k for n, k in enumerate(answer["ids"]) if n not in not_ids]
        body = orjson.dumps(answer)
        return Accepted(self.status, body, queued, +counts, self.labels, self.refusals)

    def _in_order(
        self,
        rejected: list[dict[str, Any]],
        dropped: set[int],
        more: list[tuple[int, dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        """``rejected`` without the entries at ``dropped``, with ``more`` (item, entry) in their
        places: in the order of the body's events, as the answer lists them."""
        if not more:
            return [r for n, r in enumerate(rejected) if n not in dropped]
        item_of = {entry: n for n, entry in enumerate(self.refusals) if entry >= 0}
        gaps = iter(self.gaps)  # the entries of no item (unreadable...) are theirs, in order
        placed = [
            (self._event(item_of[n]) if n in item_of else next(gaps), r)
            for n, r in enumerate(rejected)
        ]
        placed = [p for n, p in enumerate(placed) if n not in dropped]
        placed += [(self._event(n), entry) for n, entry in more]
        return [entry for _, entry in sorted(placed, key=lambda p: p[0])]

    def _event(self, n: int) -> int:
        """The place among the body's events of item ``n`` (events that are no item come
        before it: ``gaps``)."""
        for gap in self.gaps:
            if gap > n:
                break
            n += 1
        return n

    def _where(self, n: int) -> str:
        """Where item ``n`` was in the body."""
        return _where(self.records, self._event(n))


def prepare_request(
    body: bytes, content_type: str | None, mapper: Mapper, settings: Settings, now: float
) -> tuple[list[Incoming], Accepted]:
    """The events of ``body`` to store (received at ``now``) and the request's answer: 202 with
    what was accepted, or 400 when no event of the body could be read."""
    keep_originals = settings.store.originals != "drop"
    events, records = _read(body, content_type)
    if not events:  # [] or {"batch": []}: nothing to take
        return [], _refused(400, "empty_body", "the body holds no event")
    if len(events) > MAX_EVENTS:
        # Each event read costs memory until it is stored, whatever its size: a body of empty
        # objects ({}) would take gigabytes within max_body_bytes.
        return [], _refused(
            413,
            "too_many_events",
            f"the body holds {len(events)} events, over {MAX_EVENTS} per request; "
            "send them in several requests",
        )
    items: list[Incoming] = []
    labels: list[tuple[str, str]] = []  # of each item
    refusals: list[int] = []  # of each item: its place in rejected, or -1
    rejected: list[dict[str, Any]] = []
    filtered: Counter[str] = Counter()
    counts: Counter[tuple[str, str]] = Counter()
    ids: list[str] = []
    gaps: list[int] = []  # the places of events that are no item
    map_event = mapper.map
    dumps = orjson.dumps
    for n, event in enumerate(events):
        if event is None:
            assert records is not None  # only parse_body gives unreadable events
            record = records[n]
            rejected.append(_rejection(record.where, None, "unreadable", None, record.error))
            counts["rejected", "unreadable"] += 1
            gaps.append(n)
            continue
        try:
            outcome = map_event(event)
        except Exception as exc:  # a bug must cost one event, not the whole request
            where = _where(records, n)
            log.exception("mapping failed", item=where)
            rejected.append(_rejection(where, None, "mapping_failed", None, str(exc)))
            counts["rejected", "mapping_failed"] += 1
            gaps.append(n)
            continue
        refusals.append(len(rejected) if isinstance(outcome, Rejected) else -1)
        if isinstance(outcome, Payload):
            ids.append(outcome.key)  # counted once after the loop
            labels.append(_QUEUED)
        elif isinstance(outcome, Filtered):
            filtered[outcome.reason] += 1
            counts["filtered", outcome.reason] += 1
            labels.append(("filtered", outcome.reason))
        elif isinstance(outcome, Rejected):
            rejected.append(
                _rejection(
                    _where(records, n), outcome.key, outcome.reason, outcome.field, outcome.message
                )
            )
            counts["rejected", outcome.reason] += 1
            labels.append(("rejected", outcome.reason))
        items.append(Incoming(outcome, dumps(event) if keep_originals else None, now))
    if not items and rejected:
        first = rejected[0]["message"]
        more = f" (and {len(rejected) - 1} more problems)" if len(rejected) > 1 else ""
        answer: dict[str, Any] = {
            "error": "malformed_body",
            "message": f"{first}{more}",
            "rejected": rejected,
        }
        return [], Accepted(400, dumps(answer), 0, Counter())
    if ids:
        counts[_QUEUED] = len(ids)
    accepted: dict[str, Any] = {
        "accepted": len(items),
        "queued": len(ids),
        "already_stored": 0,
        "filtered": dict(filtered),
        "rejected": rejected,
        "ids": ids,
    }
    done = Accepted(
        202, dumps(accepted), len(ids), counts, tuple(labels), tuple(refusals), tuple(gaps), records
    )
    return items, done


def _refused(status: int, error: str, message: str) -> Accepted:
    return Accepted(status, orjson.dumps({"error": error, "message": message}), 0, Counter())


def _read(
    body: bytes, content_type: str | None
) -> tuple[list[dict[str, Any]] | list[dict[str, Any] | None], list[SourceRecord] | None]:
    """The body's events (None for an unreadable one) and, unless the body is an array of
    objects read at once, the records ``parse_body`` made of it (they name the problems)."""
    mime = (content_type or "").partition(";")[0].strip().lower()
    if mime in _JSON_TYPES:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = None  # parse_body locates the error (or reads several values)
        items = value if type(value) is list else batch_of(value)
        if items is None and type(value) is dict:  # one event, what parse_body would make of it
            one = record(_LABEL, value)  # (or an envelope whose batch is no array: an error)
            return [one.event], [one]
        if items is not None and all(type(item) is dict for item in items):
            return items, None
    records = parse_body(body, content_type=content_type, label=_LABEL)
    return [record.event for record in records], records


def _where(records: list[SourceRecord] | None, n: int) -> str:
    """Where event ``n`` (0-based) of the body is, in parse_body's words."""
    return f"{_LABEL} item {n + 1}" if records is None else records[n].where


def _rejection(
    where: str, key: str | None, reason: str, field: str | None, message: str | None
) -> dict[str, Any]:
    return {
        "item": where,
        "event_id": key or None,
        "reason": reason,
        "field": field,
        "message": message or reason,
    }
