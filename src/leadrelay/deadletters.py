"""``leadrelay dead-letters``: what failed and why, and replay once the cause is fixed.

A dead letter is a stored event that did not reach Meta: rejected (by our rules or by Meta),
expired, or dead (retries exhausted). Replay maps the original event again with the current
config (so a fixed mapping applies) and queues it; events whose original was not kept, or was
kept redacted, are queued with the payload they had (enough after fixing the token).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import orjson
from rich.console import Console

from leadrelay.config import Settings
from leadrelay.delivery.store import REPLAYABLE_STATES, EventRecord, Incoming, Store
from leadrelay.delivery.store_encoding import redacted
from leadrelay.mapping.engine import Mapper
from leadrelay.meta.rules import FieldProblem, check_window
from leadrelay.outcome import Payload, State

DEAD_STATES: Final = (State.REJECTED, State.EXPIRED, State.DEAD)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """Epoch seconds from ``"2h"``, ``"30m"``, ``"7d"``, ``"1w"`` (ago) or an ISO-8601 time."""
    at = time.time() if now is None else now
    match = _DURATION.match(text)
    if match:
        return at - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: use a duration like 2h, 30m, 7d or an ISO-8601 time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed.timestamp()


def dead_letters(
    store: Store,
    *,
    reason: str | None = None,
    since: float | None = None,
    limit: int | None = None,
) -> Iterator[EventRecord]:
    """Dead letters by ascending id, filtered, paging through the store."""
    after: int | None = None
    served = 0
    while limit is None or served < limit:
        page = store.events(
            states=DEAD_STATES, reason=reason, since=since, limit=500, after_id=after
        )
        if not page:
            return
        for record in page:
            yield record
            served += 1
            if limit is not None and served >= limit:
                return
        after = page[-1].id


@dataclass(slots=True)
class ReplayResult:
    """What a replay did: queued (re-mapped or as they were) and left alone, by reason."""

    remapped: int = 0
    as_is: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def queued(self) -> int:
        """Events put back in the queue."""
        return self.remapped + self.as_is

    def skip(self, why: str, record: EventRecord, said: str) -> None:
        """``record`` left as it is, counted under ``why``; ``said`` of it among the first
        examples."""
        self.skipped[why] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{record.key or record.id}: {said}")


def replay(
    store: Store,
    settings: Settings,
    records: Sequence[EventRecord],
    *,
    now: float | None = None,
) -> ReplayResult:
    """Queue ``records`` again: re-mapped from their original with ``settings`` when it was kept
    whole, else as they were (an original under ``originals = "redact"`` has no customer
    information left to map). Each is mapped as at the time it was received: an event without
    a time keeps the event_time, and the event_id made from it, it was first sent with. One
    that our rules still refuse keeps what the store says of it up to date: the new reason and
    message (``Store.add_new``), which status and dead-letters list show."""
    received = 0.0
    mapper = Mapper(settings, clock=lambda: received)
    result = ReplayResult()
    remap_ids: list[int] = []
    remapped: list[Payload] = []
    as_is: list[int] = []
    at = time.time() if now is None else now
    refused: list[Incoming] = []  # still refused: the store says why now (add_new)
    for record in records:
        if record.state not in REPLAYABLE_STATES:  # named by id: it said "Queued 0", no reason
            why = _NOT_REPLAYED.get(record.state, f"{record.state.value}: not a dead letter")
            result.skip(why, record, record.state.value)
            continue
        if record.original is not None and not redacted(record.original):
            received = record.received_at
            outcome = mapper.map(record.original)
            if isinstance(outcome, Payload) and _past_window(
                outcome.event_time, at, result, record
            ):
                continue
            if isinstance(outcome, Payload):
                remap_ids.append(record.id)
                remapped.append(outcome)
            else:
                result.skip(f"still {outcome.reason}", record, outcome.message)
                if record.key and outcome.key == record.key:
                    refused.append(Incoming(outcome, orjson.dumps(record.original), at))
        elif record.payload is not None:
            if not _past_window(record.event_time, at, result, record):
                as_is.append(record.id)
        else:
            result.skipped["nothing kept to resend"] += 1
    if remap_ids:
        result.remapped = store.requeue(remap_ids, remapped, now=at)
    if as_is:
        result.as_is = store.requeue(as_is, now=at)
    if refused:
        store.add_new(refused)
    return result


_NOT_REPLAYED: Final = {
    State.DELIVERED: "delivered: Meta has it (a replay never sends an event twice)",
    State.QUEUED: "still queued: delivery sends it",
    State.IN_FLIGHT: "being sent",
}


def _past_window(
    event_time: int | None, now: float, result: ReplayResult, record: EventRecord
) -> bool:
    """Whether ``event_time`` is now too old for Meta (then ``result`` says so): an event
    mapped as at the time it was received passed, was queued, "Queued 1 event(s) again", and
    expired again at once."""
    if event_time is None:
        return False
    try:
        check_window(event_time, now)
    except FieldProblem as exc:
        if exc.reason != "event_time_too_old":
            return False  # in the future (a clock fixed since): delivery says it
        result.skip("too old now", record, exc.message)
        return True
    return False


_WIDE: Final = 140  # columns from which the list is a table; narrower, two lines per event


def render_list(records: Iterator[EventRecord], console: Console) -> int:
    """Print dead letters for ``dead-letters list``; returns how many. A table on a wide
    terminal; on a narrow one (at 80 columns the table's eight columns folded each message into
    a tower of ten lines), each event on two lines: who and what, then Meta's or our message."""
    from rich.table import Table
    from rich.text import Text

    wide = console.width >= _WIDE
    table = Table(header_style="bold")
    for col in (
        "id",
        "event_id",
        "state",
        "reason",
        "Meta",
        "Facebook event",
        "lead_id",
        "message",
    ):
        table.add_column(col, overflow="fold")
    n = 0
    for r in records:
        meta = "" if r.code is None else f"{r.code}/{r.subcode}" if r.subcode else str(r.code)
        # The Facebook event name, else (unmapped, refused before naming) the CRM's own.
        name = r.event_name or (f"{r.source_event} (yours)" if r.source_event else "(no name)")
        message = _clipped(r.message or "")
        # Text, not markup: event ids, names and messages are the event's data ("[x]").
        if wide:
            table.add_row(
                str(r.id), Text(r.key), r.state.value, Text(r.reason or ""), meta, Text(name),
                str(r.lead_id or ""), Text(message),
            )  # fmt: skip
        else:
            head = Text(f"#{r.id}  ", style="bold")
            head.append(r.key or "(no event_id)")
            head.append(f"  {r.state.value} {r.reason or ''}", style="red")
            head.append(f"  {meta}  " if meta else "  ")
            head.append(name)
            console.print(head)
            console.print(Text(f"    lead_id {r.lead_id or '-'}: {message}", style="dim"))
        n += 1
    if wide:
        console.print(table)
    return n


def _clipped(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."
