"""Funnel figures: events per stage per day, leads per stage, stage-to-stage conversion.

Pure computation in one pass: ``FunnelCounter.add`` takes each ``StageRecord`` and keeps, per lead,
the earliest time it reached each stage (memory grows with leads x stages, not with events);
``FunnelCounter.result`` turns that into ``FunnelFigures``, which ``goodfit`` judges.

Stage order (first = the raw lead stage):

1. the distinct static Facebook names of ``[mapping]``, in the order written (the first one is
   the raw lead stage and stays first);
2. names only seen in the data (from expressions such as ``{{crm_stage}}``) are ordered by their
   median time after each lead's first event, and each is placed before the first later static
   stage whose median is larger than its own (a static stage without data keeps its place).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from leadrelay.diagnostics.records import (
    ACCEPTED_STATES,
    DAY,
    FUNNEL_STATES,
    LEAD_ID_REASONS,
    StageRecord,
)

MAX_DAYS: Final = 90
"""Days shown in the events-per-stage-per-day chart (the most recent ones)."""


@dataclass(frozen=True, slots=True)
class Criteria:
    """Meta's "good fit" numbers for Conversion Leads (reference 2.4 and 2.5), and our margins.

    ``max_upload_gap_s`` allows a daily batch that runs an hour late; ``min_cohort`` is how many
    28-day-old leads a stage rate needs before it means something.
    """

    min_leads_month: int = 200
    min_stages: int = 2
    recommended_stages: int = 3
    window_days: int = 28
    rate_low: float = 0.01
    rate_high: float = 0.40
    min_coverage: float = 0.60
    max_upload_gap_s: float = 25 * 3600
    min_upload_history_s: float = 2 * DAY
    month_days: int = 30
    min_span_days: int = 7
    min_cohort: int = 30
    max_lead_id_problems: float = 0.01


META_CRITERIA: Final = Criteria()
"""Meta's published numbers."""


@dataclass(frozen=True, slots=True)
class StageFigures:
    """One funnel stage.

    ``conversion``: of the leads that reached the previous stage, the share that reached this one.
    ``share_of_first``: of the leads that reached the first stage, the share that reached this
    one (at most 100%: leads that came in at a later stage are not counted; it was leads at this
    stage per lead at the first stage, 800% for an export of later stages). ``rate_28d``: of the
    leads first seen at least 28 days ago, the share that reached this stage within 28 days.
    """

    name: str
    static: bool
    events: int
    leads: int
    conversion: float | None
    share_of_first: float | None
    median_days: float | None
    rate_28d: float | None
    reached_28d: int


@dataclass(frozen=True, slots=True)
class UploadFigures:
    """Delivery cadence over the last month (store only): the largest gap between deliveries."""

    first: float
    last: float
    max_gap_s: float
    gap_from: float
    gap_to: float


@dataclass(frozen=True, slots=True)
class FunnelFigures:
    """Everything the funnel view and the good-fit checks need, as plain numbers."""

    stages: tuple[StageFigures, ...]
    days: tuple[int, ...]  # UTC day numbers (epoch seconds // 86400), ascending, contiguous
    per_day: dict[str, tuple[int, ...]]  # stage -> events per day, aligned with ``days``
    as_of: float
    first_time: int | None
    last_time: int | None
    leads: int  # distinct leads with a funnel event
    seen_leads: int  # distinct lead ids seen at all
    accepted_leads: int  # of those, with at least one accepted event
    cohort: int  # leads first seen at least ``window_days`` before ``as_of``
    recent_first_stage_leads: int  # leads reaching the first stage in the last month
    considered: int  # events read and not filtered
    lead_id_problems: dict[str, int]
    historical: int
    upload: UploadFigures | None
    criteria: Criteria = META_CRITERIA

    @property
    def span_days(self) -> float:
        """Days of data up to ``as_of`` (0 without data)."""
        return 0.0 if self.first_time is None else max(0.0, self.as_of - self.first_time) / DAY


def order_stages(static: Sequence[str], medians: Mapping[str, float]) -> list[str]:
    """All stages in funnel order (see the module docstring for the rule)."""
    fixed = list(dict.fromkeys(static))
    known = set(fixed)
    dynamic = sorted((s for s in medians if s not in known), key=lambda s: (medians[s], s))
    if not fixed:
        return dynamic
    out = [fixed[0]]
    rest = fixed[1:]
    carry = medians.get(fixed[0], 0.0)
    i = j = 0
    while i < len(rest) and j < len(dynamic):
        key = medians.get(rest[i], carry)
        if medians[dynamic[j]] < key:
            out.append(dynamic[j])
            j += 1
        else:
            out.append(rest[i])
            carry = key
            i += 1
    return out + rest[i:] + dynamic[j:]


class FunnelCounter:
    """Single-pass accumulator of ``StageRecord``s; ``result`` computes the figures."""

    def __init__(self) -> None:
        self._leads: dict[int, dict[str, int]] = {}
        self._events: Counter[str] = Counter()
        self._per_day: Counter[tuple[str, int]] = Counter()
        self._seen: set[int] = set()
        self._accepted: set[int] = set()
        self._minutes: set[int] = set()
        self._considered = 0
        self._lead_id_problems: Counter[str] = Counter()
        self._historical = 0
        self._first: int | None = None
        self._last: int | None = None

    def add(self, rec: StageRecord) -> None:
        """Count one event."""
        state = rec.state
        # Filtered events are not sent; a record that could not be read has no lead id to judge
        # (counting it, the Lead ids check said "8 of 50" of 48 events).
        if state == "filtered" or rec.reason == "unreadable":
            return
        self._considered += 1
        reason = rec.reason
        if reason is not None and (
            reason in LEAD_ID_REASONS or (rec.code == 100 and rec.subcode == 2804036)
        ):
            self._lead_id_problems[reason] += 1
        lead = rec.lead_id
        if lead is None:
            return
        self._seen.add(lead)
        if state in ACCEPTED_STATES or rec.historical:
            self._accepted.add(lead)
        if state == "delivered" and rec.updated_at is not None:
            self._minutes.add(int(rec.updated_at // 60))
        stage, t = rec.stage, rec.event_time
        if stage is None or t is None or not (state in FUNNEL_STATES or rec.historical):
            return
        stages = self._leads.get(lead)
        if stages is None:
            self._leads[lead] = {stage: t}
        else:
            prev = stages.get(stage)
            if prev is None or t < prev:
                stages[stage] = t
        self._events[stage] += 1
        self._per_day[(stage, t // DAY)] += 1
        self._historical += rec.historical
        if self._first is None or t < self._first:
            self._first = t
        if self._last is None or t > self._last:
            self._last = t

    def result(
        self,
        static: Sequence[str],
        *,
        as_of: float,
        now: float,
        from_store: bool,
        criteria: Criteria = META_CRITERIA,
    ) -> FunnelFigures:
        """The figures as of ``as_of`` (the end of the data for files, the clock for a store)."""
        window = criteria.window_days * DAY
        cohort_end = as_of - window
        month_start = as_of - criteria.month_days * DAY
        delays: dict[str, list[int]] = {}
        reached: Counter[str] = Counter()
        cohort = 0
        for stages in self._leads.values():
            first = min(stages.values())
            old = first <= cohort_end
            cohort += old
            for stage, t in stages.items():
                delay = t - first
                delays.setdefault(stage, []).append(delay)
                if old and delay <= window:
                    reached[stage] += 1
        medians = {s: float(statistics.median(d)) for s, d in delays.items()}
        order = order_stages(static, medians)
        static_set = set(static)
        first_stage = order[0] if order else None
        recent = 0
        pairs: Counter[int] = Counter()
        with_first: Counter[int] = Counter()  # leads at the first stage and at stage k
        for stages in self._leads.values():
            t0 = None if first_stage is None else stages.get(first_stage)
            recent += t0 is not None and month_start < t0 <= as_of
            for k in range(1, len(order)):
                if order[k] in stages:
                    pairs[k] += order[k - 1] in stages
                    with_first[k] += t0 is not None
        first_leads = len(delays.get(first_stage, ())) if first_stage is not None else 0
        figures = []
        for k, name in enumerate(order):
            leads = len(delays.get(name, ()))
            prev = len(delays.get(order[k - 1], ())) if k else 0
            figures.append(
                StageFigures(
                    name=name,
                    static=name in static_set,
                    events=self._events[name],
                    leads=leads,
                    conversion=pairs[k] / prev if k and prev else None,
                    share_of_first=(with_first[k] if k else leads) / first_leads
                    if first_leads
                    else None,
                    median_days=medians[name] / DAY if name in medians else None,
                    rate_28d=reached[name] / cohort if cohort else None,
                    reached_28d=reached[name],
                )
            )
        days, per_day = self._daily(order)
        return FunnelFigures(
            stages=tuple(figures),
            days=days,
            per_day=per_day,
            as_of=as_of,
            first_time=self._first,
            last_time=self._last,
            leads=len(self._leads),
            seen_leads=len(self._seen),
            accepted_leads=len(self._accepted),
            cohort=cohort,
            recent_first_stage_leads=recent,
            considered=self._considered,
            lead_id_problems=dict(self._lead_id_problems),
            historical=self._historical,
            upload=self._upload(now, criteria) if from_store else None,
            criteria=criteria,
        )

    def _daily(self, order: Sequence[str]) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
        if self._first is None or self._last is None:
            return (), {}
        last = self._last // DAY
        days = tuple(range(max(self._first // DAY, last - MAX_DAYS + 1), last + 1))
        per_day = {s: tuple(self._per_day.get((s, d), 0) for d in days) for s in order}
        return days, per_day

    def _upload(self, now: float, criteria: Criteria) -> UploadFigures | None:
        start = (now - criteria.month_days * DAY) // 60
        minutes = sorted(m for m in self._minutes if m >= start)
        if not minutes:
            return None
        # Minute resolution keeps memory flat; a gap is off by at most a minute.
        edges = [*(m * 60.0 for m in minutes), now]
        gap, gap_from, gap_to = 0.0, edges[0], edges[0]
        for a, b in pairwise(edges):
            if b - a > gap:
                gap, gap_from, gap_to = b - a, a, b
        return UploadFigures(edges[0], edges[-2], gap, gap_from, gap_to)
