"""``Tally``'s counts of the events a send did not settle as its delivery answered: found
stored when read (by an earlier run, or this one: a duplicate, another stage under its event
id), settled by another process of a fleet or from the store's backlog before the reader came
to them, or left queued (``delivery.own``, ``delivery.elsewhere``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

from leadrelay.outcome import Delivery, State
from leadrelay.summary_rows import (
    duplicate_row,
    payload_row,
    reused_message,
    settled_row,
)

if TYPE_CHECKING:
    from leadrelay.delivery.store import EventRecord

__all__ = ["EARLIER", "ELSEWHERE", "FAILED", "REUSED", "Example", "StoredOutcomes"]

REUSED: Final = "its event_id came before for another stage"  # Tally.reused_id
ELSEWHERE: Final = "another process"  # of a fleet: where what it settled is said to be
EARLIER: Final = "an earlier run"  # where an event found stored settled is said to be


@dataclass(slots=True)
class Example:
    """One event shown as an example of a reason: where it came from and what was wrong."""

    where: str
    key: str
    field: str
    message: str


FAILED: Final = (State.REJECTED, State.EXPIRED, State.DEAD)
"""The final states of a payload that did not reach Meta (exit code 2)."""


class _Counting(Protocol):
    """What of ``Tally`` these counts use."""

    report: IO[bytes] | None
    delivered_now: int
    delivered_retry: int
    delivered_split: int
    delivered_elsewhere: int
    delivered_before: int
    duplicates: int
    reused: int
    backlog_delivered: int
    backlog_failed: int
    queued_left: int
    rejected: Counter[str]

    def _write(self, row: dict[str, Any]) -> None: ...

    def _example(self, reason: str, example: Example) -> None: ...

    def _unsent(self, r: EventRecord, where: str, when: str = "") -> None: ...

    def _failed(
        self, state: State, said: Delivery | EventRecord, where: str, key: str, when: str = ""
    ) -> None: ...


class StoredOutcomes:
    """``Tally``'s methods for the events found stored, settled elsewhere or left queued."""

    __slots__ = ()

    def settled_elsewhere(self: _Counting, record: EventRecord) -> None:
        """Count one of the run's events that another process of a fleet delivered, or saw
        refused by Meta, expire or die (``delivery.elsewhere``), as ``delivery`` counts those it
        settles. One the store refused before it could go out (``unencodable``: never sent) is
        rejected, as the reader's refusals are."""
        r, where = record, ELSEWHERE
        if r.state is State.DELIVERED:
            self.delivered_elsewhere += 1
        elif r.state is State.REJECTED and r.attempts == 0:
            self._unsent(r, where)
        else:
            self._failed(r.state, r, where, r.key)
        self._write(settled_row(where, r.key, r.source_event, r.lead_id, r.event_name, r))

    def duplicate(
        self: _Counting,
        event_id: str,
        event: str,
        lead_id: int | None,
        event_name: str | None,
        where: str | None = None,
    ) -> None:
        """One payload not sent: its event id came before in this run (``delivery.own``)."""
        self.duplicates += 1
        self._write(duplicate_row(where, event_id, event, lead_id, event_name))

    def reused_id(
        self: _Counting, event_id: str, event: str, lead_id: int | None, name: str | None,
        stored: str | None, where: str | None, *, same_event: bool = False,
    ) -> None:  # fmt: skip
        """One payload not sent: its event id was read before (in this run or an earlier one)
        for another stage, named ``stored``, and the store keeps one event per id
        (``delivery.own``); ``same_event`` as for ``reused_message``."""
        self.reused += 1
        message = reused_message(name, stored, "read before", "not sent", same_event=same_event)
        self._example(REUSED, Example(where or "", event_id, "event_id", message))
        self._write(
            payload_row(
                where, event_id, event, lead_id, name,
                outcome="not_sent", reason="event_id_reused", field="event_id", message=message,
            )
        )  # fmt: skip

    def found_settled(self: _Counting, record: EventRecord) -> None:
        """One payload found stored and settled before this run (``delivery.own``): counted as
        what an earlier run (or ``serve``) made of it. Refused by Meta, expired or dead then, it
        did not reach Meta: exit code 2 (``dead-letters`` replays it)."""
        r = record
        if r.state is State.DELIVERED:
            self.delivered_before += 1
        elif r.state is State.REJECTED and r.attempts == 0:
            self._unsent(r, EARLIER, f" ({EARLIER})")
        elif r.state in FAILED:
            self._failed(r.state, r, EARLIER, r.key, f" ({EARLIER})")
        else:  # queued again since (a replay): the next delivery sends it
            self.queued_left += 1
        self._write(settled_row(EARLIER, r.key, r.source_event, r.lead_id, r.event_name, r))

    def backlog(self: _Counting, results: Sequence[Delivery]) -> None:
        """What this run's delivery made of events of the store's backlog, not (yet) found in
        its files: counted apart, with no report row (``settled_here`` takes one back)."""
        for d in results:
            if d.state is State.DELIVERED:
                self.backlog_delivered += 1
            elif d.state in FAILED:
                self.backlog_failed += 1

    def settled_here(
        self: _Counting,
        record: EventRecord,
        *,
        backlog: bool,
        split: bool = False,
        where: str | None = None,
    ) -> None:
        """One of the files' payloads that this run settled before its reader came to it (from
        the store's backlog, or a fleet's queue): counted as this run's, and no longer apart
        (``backlog``). ``split``: delivered after its batch was split (not retried)."""
        r = record
        if backlog:
            if r.state is State.DELIVERED:
                self.backlog_delivered -= 1
            elif r.state in FAILED:
                self.backlog_failed -= 1
        row = settled_row(where, r.key, r.source_event, r.lead_id, r.event_name, r)
        if r.state is State.DELIVERED:
            if split:
                self.delivered_split += 1
                row["outcome"] = "delivered_after_split"
            elif r.attempts > 1:
                self.delivered_retry += 1
                row["outcome"] = "delivered_after_retry"
            else:
                self.delivered_now += 1
        elif r.state in FAILED:
            self._failed(r.state, r, "", r.key)
        else:
            self.queued_left += 1
        self._write(row)

    def left_queued(
        self: _Counting,
        event_id: str,
        event: str,
        lead_id: int | None,
        event_name: str | None,
        where: str | None = None,
    ) -> None:
        """One payload of the run left queued in the store when delivery stopped."""
        self.queued_left += 1
        if self.report is not None:
            self._write(payload_row(where, event_id, event, lead_id, event_name, outcome="queued"))

    def held_elsewhere(self: _Counting, record: EventRecord) -> None:
        """The report's row of one of the run's events still open in a fleet's queue when it
        ended (counted in ``elsewhere``)."""
        r = record
        self._write(settled_row(ELSEWHERE, r.key, r.source_event, r.lead_id, r.event_name, r))
