"""One report from one pass over the records: the funnel, the good-fit checks, Event Delivery."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from leadrelay.diagnostics.delivery import DeliveryCounter, DeliveryFigures
from leadrelay.diagnostics.funnel import META_CRITERIA, Criteria, FunnelCounter, FunnelFigures
from leadrelay.diagnostics.goodfit import Check, good_fit
from leadrelay.diagnostics.records import StageRecord


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the terminal and the HTML page show.

    ``source`` says what was analysed, for people; ``from_store`` tells a live store (delivered
    events, upload cadence) from files read before going live (events that would be sent).
    """

    source: str
    from_store: bool
    generated_at: float
    pixel_id: str
    events: int
    funnel: FunnelFigures
    checks: tuple[Check, ...]
    delivery: DeliveryFigures


def build_report(
    records: Iterable[StageRecord],
    *,
    static: Sequence[str],
    now: float,
    from_store: bool,
    source: str,
    pixel_id: str,
    criteria: Criteria = META_CRITERIA,
) -> Report:
    """Read ``records`` once and compute every figure.

    The funnel is judged as of ``now`` for a store, and as of the latest event time in the files
    (an export describes the past: "the last 30 days" and "28 days old" count back from its end).
    """
    funnel = FunnelCounter()
    delivery = DeliveryCounter(until=now)
    add_funnel, add_delivery = funnel.add, delivery.add
    events = 0
    latest = -1
    for rec in records:
        add_funnel(rec)
        add_delivery(rec)
        events += 1
        t = rec.event_time
        if t is not None and t > latest:
            latest = t
    as_of = now if from_store or latest < 0 else min(now, float(latest))
    figures = funnel.result(static, as_of=as_of, now=now, from_store=from_store, criteria=criteria)
    return Report(
        source=source,
        from_store=from_store,
        generated_at=now,
        pixel_id=pixel_id,
        events=events,
        funnel=figures,
        checks=good_fit(figures, from_store=from_store),
        delivery=delivery.result(end=now if from_store else None),
    )
