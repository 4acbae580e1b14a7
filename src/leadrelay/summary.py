"""Accounting for a run: every event counted once, by outcome and reason, with a few examples.

``Tally`` is fed every outcome of a ``send`` (mapping outcomes first, then delivery results) and
renders the summary table users read at the end, plus the optional per-event NDJSON report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from leadrelay.meta.errors import ErrorKind
from leadrelay.outcome import (
    INTERRUPTED,
    DeliveredWhole,
    Delivery,
    Filtered,
    Payload,
    Rejected,
    State,
)
from leadrelay.summary_rows import (
    BLANK,
    meta_label,
    settled_row,
)
from leadrelay.summary_stored import (
    FAILED,
    Example,
    StoredOutcomes,
)

if TYPE_CHECKING:
    from rich.console import Console

    from leadrelay.delivery.store import EventRecord
    from leadrelay.meta.client import GraphResult

EXAMPLES: Final = 3


@dataclass(slots=True)
class Tally(StoredOutcomes):
    """Counts by outcome and reason, and the first few examples of each problem."""

    read: int = 0
    mapped: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    delivered_now: int = 0
    delivered_retry: int = 0
    delivered_split: int = 0
    """Delivered by a later request of a batch Meta refused for another event in it."""
    delivered_elsewhere: int = 0
    """Delivered by another process of a fleet while this run lasted (``delivery.elsewhere``)."""
    meta_rejected: Counter[str] = field(default_factory=Counter)
    expired: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    not_sent: Counter[str] = field(default_factory=Counter)
    delivered_before: int = 0
    """Payloads found stored, delivered before this run began (an earlier run, or ``serve``):
    not sent again (``delivery.own``)."""
    duplicates: int = 0
    """Payloads with the event id of one read or stored before them in this run: not sent."""
    reused: int = 0
    """Payloads whose event id was read or stored before (by this run or an earlier one) for
    another Facebook event name (stage): not sent, as the store knows events by their id (Meta
    by id and name): exit code 2."""
    backlog_delivered: int = 0
    """Events the store held queued from before this run and not read from its files (``serve``,
    a stopped send of other files) that this run delivered: not counted in what it read."""
    backlog_failed: int = 0
    """The same, refused by Meta, expired or dead (``dead-letters`` lists them): exit code 2."""
    queued_left: int = 0
    """Payloads left queued in the store when delivery stopped (Ctrl-C, SIGTERM, a refused
    token): the next run (or ``serve``) sends them."""
    elsewhere: int = 0
    """Events read that other processes held, queued for a retry (the fleet's policy), or behind an
    earlier event of their lead, still open when the send ended; for ``deliver``, those it put
    back in the queue that are still there (a fleet's store: see ``delivery.elsewhere``)."""
    fleet: bool = False
    """The store is a fleet's (Redis): its other processes may store and settle events this run
    reads."""
    store_failed: bool = False
    """The run ended because the event store stopped answering: what became of the events not
    accounted for is not known (stored and queued, in flight, or not stored at all)."""
    requests: int = 0
    transient_errors: int = 0
    examples: dict[str, list[Example]] = field(default_factory=dict)
    report: IO[bytes] | None = None
    dry_run: bool = False
    read_at: dict[int, str] = field(default_factory=dict)
    """With a report file: where each payload handed to the store was read, by the ``id`` of its
    ``Incoming``, until the store says what it made of it (``delivery.own`` names a duplicate's
    line with it: its event_id does not tell it from the event it repeats)."""

    def _example(self, reason: str, example: Example) -> None:
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < EXAMPLES:
            bucket.append(example)

    def _write(self, row: dict[str, Any]) -> None:
        if self.report is not None:
            self.report.write(orjson.dumps(BLANK | row, option=orjson.OPT_APPEND_NEWLINE))

    def unreadable(self, where: str, error: str) -> None:
        """A record that could not even be parsed."""
        self.read += 1
        self.rejected["unreadable"] += 1
        # The reader's message names the record already: "where: where: ..." said it twice.
        said = error[len(where) :].lstrip(": ") if error.startswith(where) else error
        self._example("unreadable", Example(where, "", "", said))
        self._write(
            {"where": where, "outcome": "rejected", "reason": "unreadable", "message": error}
        )

    def plain_payloads(self, count: int) -> None:
        """Count ``count`` payloads without notes at once: what ``outcome`` does for each of
        them when there is no report file (workers that map in bulk report them so)."""
        if self.report is not None and self.dry_run and count:
            raise ValueError("with a report file, every payload needs its own row: use outcome()")
        self.read += count
        self.mapped += count

    def outcome(self, where: str, outcome: Payload | Filtered | Rejected) -> None:
        """Count one mapping outcome (a payload is counted again when delivered)."""
        self.read += 1
        if isinstance(outcome, Payload):
            self.mapped += 1
            if self.dry_run and self.report is not None:
                self._write(
                    {
                        "where": where,
                        "event_id": outcome.key,
                        "event": outcome.source_event,
                        "lead_id": outcome.lead_id,
                        "event_name": outcome.event_name,
                        "outcome": "mapped",
                    }
                )
            for note in outcome.notes:
                self.notes[f"{note.field}: {note.reason}"] += 1
                self._example(
                    f"note {note.field}: {note.reason}",
                    Example(where, outcome.key, note.field, note.message),
                )
        elif isinstance(outcome, Filtered):
            self.filtered[outcome.reason] += 1
            self._write(
                {
                    "where": where,
                    "event_id": outcome.key,
                    "event": outcome.source_event,
                    "outcome": "filtered",
                    "reason": outcome.reason,
                    "message": outcome.message,
                }
            )
        else:
            self.rejected[outcome.reason] += 1
            self._example(
                outcome.reason, Example(where, outcome.key, outcome.field, outcome.message)
            )
            self._write(
                {
                    "where": where,
                    "event_id": outcome.key,
                    "event": outcome.source_event,
                    "lead_id": outcome.lead_id,
                    "event_name": outcome.event_name,
                    "outcome": "rejected",
                    "reason": outcome.reason,
                    "field": outcome.field,
                    "message": outcome.message,
                }
            )

    def deliveries(
        self, results: Sequence[Delivery], wheres: Sequence[str | None] | None = None
    ) -> None:
        """Count what delivery made of a batch's payloads (``delivery`` for each; a batch
        delivered whole is counted at once, its report rows written at once). ``wheres``:
        where each was read, when known (``delivery.own``, with a report)."""
        if type(results) is DeliveredWhole:
            self.delivered_now += len(results)
            if self.report is not None:
                self._write_whole(results, wheres)
            return
        if wheres is None:
            for result in results:
                self.delivery(result)
        else:
            for result, where in zip(results, wheres, strict=True):
                self.delivery(result, where)

    def _write_whole(self, results: DeliveredWhole, wheres: Sequence[str | None] | None) -> None:
        """The report's rows of a batch delivered whole, at once: each is ``delivery``'s row of
        its ``Delivery``, byte for byte (the keys in ``FIELDS``' order), without making the
        ``Delivery`` and the row's dict twice: 0.7 us a row, from 1.9 (a report cost a send of
        300,000 events about a fifth more CPU)."""
        assert self.report is not None
        dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        message, trace = results.message, results.fbtrace_id
        places = [None] * len(results) if wheres is None else wheres
        self.report.write(
            b"".join(
                [
                    dumps(
                        {
                            "where": where,
                            "event_id": p.key,
                            "event": p.source_event,
                            "lead_id": p.lead_id,
                            "event_name": p.event_name,
                            "outcome": "delivered",
                            "reason": None,
                            "field": None,
                            "message": message,
                            "attempts": 1,
                            "code": None,
                            "subcode": None,
                            "fbtrace_id": trace,
                        },
                        option=newline,
                    )
                    for p, where in zip(results.payloads, places, strict=True)
                ]
            )
        )

    def delivery(self, result: Delivery, where: str | None = None) -> None:
        """Count what delivery made of one payload, read at ``where`` if known."""
        p = result.payload
        if result.state is State.DELIVERED:
            if result.extra and result.extra.get("retried"):
                self.delivered_retry += 1
            elif result.attempts > 1:  # carried by more than one request, none failed
                self.delivered_split += 1
            else:
                self.delivered_now += 1
        elif result.state in FAILED:
            self._failed(result.state, result, where or "", p.key)
        elif result.reason == INTERRUPTED:  # cut short at a stop: queued, sent by the next run
            self.left_queued(p.key, p.source_event, p.lead_id, p.event_name, where)
            return
        else:
            self.not_sent[result.reason or "not_sent"] += 1
        if self.report is None:  # the common case: no row to build
            return
        self._write(settled_row(where, p.key, p.source_event, p.lead_id, p.event_name, result))

    def _unsent(self, r: EventRecord, where: str, when: str = "") -> None:
        """Count one the store refused before it could go out (``unencodable``: never sent):
        rejected, as the reader's refusals are, not by Meta."""
        reason = (r.reason or "rejected") + when
        self.rejected[reason] += 1
        self._example(reason, Example(where, r.key, "", r.message or ""))

    def _failed(
        self, state: State, said: Delivery | EventRecord, where: str, key: str, when: str = ""
    ) -> None:
        """Count a payload refused by Meta, expired or dead, settled here or elsewhere (``when``
        it was, if not now: said after its reason)."""
        if state is State.REJECTED:
            label = meta_label(said) + when
            self.meta_rejected[label] += 1
            self._example(f"meta {label}", Example(where, key, "", said.message or ""))
        elif state is State.EXPIRED:
            self.expired += 1
            self._example("expired" + when, Example(where, key, "", said.message or ""))
        else:
            label = (said.reason or "dead") + when
            self.dead[label] += 1
            self._example(f"not delivered {label}", Example(where, key, "", said.message or ""))

    def request(self, result: GraphResult, events: int) -> None:
        """Count one Graph request, and those that met a transient error (or a throttle): each is
        tried again, but the last of a batch whose retries ran out."""
        self.requests += 1
        error = result.error
        if error is not None and error.kind in (ErrorKind.TRANSIENT, ErrorKind.THROTTLED):
            self.transient_errors += 1

    @property
    def settled(self) -> int:
        """Payloads this run delivered, saw refused or expire, gave up on, or could not send."""
        return (
            self.delivered_now
            + self.delivered_retry
            + self.delivered_split
            + self.delivered_elsewhere
            + self.delivered_before
            + self.duplicates
            + self.reused
            + self.queued_left
            + sum(self.meta_rejected.values())
            + self.expired
            + sum(self.dead.values())
            + sum(self.not_sent.values())
        )

    @property
    def any_failed(self) -> bool:
        """True when some event was rejected (by us or by Meta), expired, not delivered (retries
        ran out; in this run or an earlier one), left queued, or left unsettled in another
        process (``elsewhere``): exit code 2."""
        return bool(
            self.rejected
            or self.meta_rejected
            or self.expired
            or self.dead
            or self.elsewhere
            or self.queued_left
            or self.backlog_failed
            or self.reused
        )

    def render(self, console: Console, *, dry_run: bool, stopped: bool = False) -> None:
        """Print the summary table and the first examples of each problem. ``stopped``: delivery
        stopped early (SIGTERM, a refused token): payloads not accounted for are queued."""
        from leadrelay.summary_table import render  # only at the end of a run

        render(self, console, dry_run=dry_run, stopped=stopped)
