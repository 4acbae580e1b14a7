"""Where the diagnostics' records come from: event files (before going live) or the event store.

Files go through the real ``Mapper``, so a CRM export is judged exactly as ``send`` would treat it.
A CRM export is usually history, older than Meta's 7-day window: such events are rejected for
sending (``event_time_too_old``) but still describe the funnel, so they come out ``historical``
with their time read back through the config's ``event_time`` mapping.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from leadrelay.config import Settings
from leadrelay.delivery.store import Store
from leadrelay.diagnostics.records import MAPPED, StageRecord
from leadrelay.events import read_events
from leadrelay.mapping.engine import Mapper, Plan
from leadrelay.mapping.expressions import MISSING, EvaluationError, compile_expression
from leadrelay.meta.normalize import NormalizeError
from leadrelay.meta.rules import FieldProblem
from leadrelay.outcome import Filtered, Outcome, Payload

PAGE: Final = 5000
"""Store rows read per ``events()`` call."""


def static_stages(settings: Settings) -> list[str]:
    """The distinct Facebook names ``[mapping]`` gives as plain text, in the order written."""
    names = []
    for ours, theirs in settings.mapping.items():
        if compile_expression(theirs, key=f"mapping.{ours}").kind == "static":
            names.append(theirs)
    return list(dict.fromkeys(names))


def _time_reader(mapper: Mapper) -> Plan | None:
    return next((p for p in mapper.plans if p.target == "event_time"), None)


def _event_time(plan: Plan | None, event: Mapping[str, Any], now: float) -> int | None:
    """The event's time in seconds as the mapping reads it (now when it has none), or None."""
    if plan is None:
        return int(now)
    try:
        raw = plan.read(event)
        if raw is MISSING:
            return int(now)
        value = plan.finish(raw, None)
    except (FieldProblem, NormalizeError, EvaluationError):
        return None
    return value if isinstance(value, int) else None


def record_of(
    outcome: Outcome, event: Mapping[str, Any], time_plan: Plan | None, now: float
) -> StageRecord:
    """The record for one mapping outcome of a file event."""
    if isinstance(outcome, Payload):
        return StageRecord(
            outcome.lead_id,
            outcome.event_name,
            outcome.event_time,
            MAPPED,
            source_event=outcome.source_event,
        )
    t = _event_time(time_plan, event, now)
    if isinstance(outcome, Filtered):
        return StageRecord(
            None,
            None,
            t,
            "filtered",
            outcome.reason,
            source_event=outcome.source_event,
            message=outcome.message,
        )
    historical = (
        outcome.reason == "event_time_too_old"
        and outcome.lead_id is not None
        and outcome.event_name is not None
        and t is not None
    )
    return StageRecord(
        outcome.lead_id,
        outcome.event_name,
        t,
        "rejected",
        outcome.reason,
        outcome.code,
        outcome.subcode,
        source_event=outcome.source_event,
        message=outcome.message,
        historical=historical,
    )


def from_files(files: Sequence[str], settings: Settings, *, now: float) -> Iterator[StageRecord]:
    """Records for every event of ``files`` (streamed), mapped as ``send`` would at ``now``.

    Raises ``InputError`` when a file cannot be opened at all.
    """
    mapper = Mapper(settings, clock=lambda: now)
    time_plan = _time_reader(mapper)
    seen: set[int] = set()  # the events' ids (hashed: some 60 bytes an event)
    for name in files:
        for rec in read_events(name):
            if rec.event is None:
                yield StageRecord(
                    None,
                    None,
                    None,
                    "rejected",
                    "unreadable",
                    message=rec.error,
                )
                continue
            outcome = mapper.map(rec.event)
            key = hash(outcome.key) if outcome.key else None
            if key is not None and key in seen:
                # Overlapping exports: a send sends it once ("not sent again"); it was counted
                # twice, in the funnel and the prediction.
                yield StageRecord(
                    None,
                    None,
                    None,
                    "filtered",
                    "same_event_id",
                    source_event=outcome.source_event,
                    message="the event_id of an event before it in these files: not sent again",
                )
                continue
            if key is not None:
                seen.add(key)
            yield record_of(outcome, rec.event, time_plan, now)


def from_store(
    store: Store, *, since: float | None = None, page: int = PAGE, after_id: int | None = None
) -> Iterator[StageRecord]:
    """Records for every stored event (updated at or after ``since``, with an id above
    ``after_id``), paging by id. Their bodies are not read: a record needs none of them."""
    after = after_id
    while True:
        rows = store.events(since=since, limit=page, after_id=after, bodies=False)
        for r in rows:
            yield StageRecord(
                r.lead_id,
                r.event_name,
                r.event_time,
                r.state.value,
                r.reason,
                r.code,
                r.subcode,
                r.updated_at,
                r.source_event,
                r.message,
            )
        if len(rows) < page:
            return
        after = rows[-1].id
