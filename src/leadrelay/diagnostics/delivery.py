"""Event Delivery: what became of the events over time, a health label, and an error table.

Pure computation in one pass (``DeliveryCounter.add``). Events are placed in time by when their
outcome was recorded (store) or by their own time (files, where nothing was sent yet). Counts are
kept per hour and rolled up into days and weeks (Monday-based, UTC) at the end.

The health label follows Commanders Act's Event Delivery "weather", from the delivered share of the
events that were either delivered or failed (filtered events are not failures, queued ones are not
done yet): sunny above 95%, cloudy 90-95%, rainy 50-90%, stormy below 50%.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Final, Literal

from leadrelay.diagnostics.fixes import HISTORY_FIX, what_to_fix
from leadrelay.diagnostics.records import DAY, MAPPED, StageRecord
from leadrelay.scrub import scrub_text

Category = Literal[
    "delivered", "filtered", "rejected", "expired", "not_delivered", "pending", "historical"
]
CATEGORIES: Final[tuple[Category, ...]] = (
    "delivered",
    "filtered",
    "rejected",
    "expired",
    "not_delivered",
    "pending",
    "historical",
)
"""``historical``: events from a file older than Meta's 7-day window. They cannot be sent now,
but an export of the past is expected to hold them, so they do not count against the health."""
_CATEGORY_OF: Final[dict[str, Category]] = {
    "delivered": "delivered",
    MAPPED: "delivered",
    "filtered": "filtered",
    "rejected": "rejected",
    "expired": "expired",
    "dead": "not_delivered",
    "queued": "pending",
    "in_flight": "pending",
}
_FAILED: Final = ("rejected", "expired", "not_delivered")
_HOUR: Final = 3600
_WEEK: Final = 7 * DAY
# Epoch day 0 (1970-01-01) was a Thursday: shift by 3 days so weeks start on Monday.
_MONDAY_SHIFT: Final = 3 * DAY

Granularity = Literal["hour", "day", "week"]
SPANS: Final[dict[Granularity, int]] = {"hour": 48, "day": 60, "week": 104}
"""How many of the most recent buckets each series keeps."""


@dataclass(frozen=True, slots=True)
class Health:
    """The delivery "weather": ``label`` is sunny, cloudy, rainy, stormy or "no data"."""

    label: str
    share: float | None
    delivered: int
    failed: int

    @property
    def text(self) -> str:
        """The label with its figure, for people."""
        if self.share is None:
            return "no data: nothing delivered or failed yet"
        total = self.delivered + self.failed
        return f"{self.label}: {self.share * 100:.1f}% delivered ({self.delivered} of {total})"


def health(delivered: int, failed: int) -> Health:
    """The health label for ``delivered`` events out of ``delivered + failed``."""
    total = delivered + failed
    if not total:
        return Health("no data", None, delivered, failed)
    share = delivered / total
    if share > 0.95:
        label = "sunny"
    elif share >= 0.90:
        label = "cloudy"
    elif share >= 0.50:
        label = "rainy"
    else:
        label = "stormy"
    return Health(label, share, delivered, failed)


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """Events that share a category, a reason and Meta's code: how many, when, what to fix."""

    category: Category
    reason: str
    code: int | None
    subcode: int | None
    count: int
    last_seen: float | None
    stages: tuple[str, ...]
    example: str | None
    fix: str

    @property
    def meta_code(self) -> str:
        """Meta's code as it shows in Events Manager (``100/2804036``), or empty."""
        if self.code is None:
            return ""
        return f"{self.code}/{self.subcode}" if self.subcode else str(self.code)


@dataclass(frozen=True, slots=True)
class Series:
    """Counts per category for consecutive buckets of one granularity."""

    granularity: Granularity
    starts: tuple[int, ...]  # bucket start, epoch seconds
    counts: dict[Category, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class DeliveryFigures:
    """The Event Delivery view: totals, health, series by hour/day/week, errors."""

    totals: dict[Category, int]
    health: Health
    series: dict[Granularity, Series]
    default: Granularity
    errors: tuple[ErrorRow, ...]
    untimed: int  # events with no (plausible) time to place them on a chart
    undated: dict[Category, int]  # those, by category


class _Group:
    __slots__ = ("count", "example", "last_seen", "stages")

    def __init__(self) -> None:
        self.count = 0
        self.last_seen: float | None = None
        self.stages: Counter[str] = Counter()
        self.example: str | None = None


class DeliveryCounter:
    """Single-pass accumulator of ``StageRecord``s; ``result`` computes the figures."""

    def __init__(self, *, until: float | None = None) -> None:
        # A time past ``until`` (a millisecond timestamp read as seconds...) is not placed on a
        # chart: it would stretch the axis into the far future.
        self._until = float("inf") if until is None else until + 60
        self._totals: Counter[Category] = Counter()
        self._hours: Counter[tuple[int, Category]] = Counter()
        self._groups: dict[tuple[Category, str, int | None, int | None], _Group] = {}
        self._untimed: Counter[Category] = Counter()

    def add(self, rec: StageRecord) -> None:
        """Count one event."""
        category = _CATEGORY_OF.get(rec.state, "pending")
        if rec.historical:
            category = "historical"
        self._totals[category] += 1
        t = rec.updated_at if rec.updated_at is not None else rec.event_time
        if t is not None and t > self._until:
            t = None
        if t is None:
            self._untimed[category] += 1
        else:
            self._hours[(int(t // _HOUR), category)] += 1
        reason = rec.reason
        if reason is None or category == "delivered":
            return
        key = (category, reason, rec.code, rec.subcode)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
        group.count += 1
        if t is not None and (group.last_seen is None or t > group.last_seen):
            group.last_seen = t
        stage = rec.stage or rec.source_event
        if stage:
            group.stages[stage] += 1
        if group.example is None and rec.message:
            group.example = scrub_text(rec.message)  # the report is a page to share

    def result(self, *, end: float | None = None) -> DeliveryFigures:
        """The figures; the series end at ``end`` (default: the last event)."""
        totals = {c: self._totals[c] for c in CATEGORIES}
        failed = sum(totals[c] for c in _FAILED)
        series = self._series(end)
        hours = [h for h, _ in self._hours]
        last = max([*hours, int(end // _HOUR)] if end is not None else hours, default=0)
        span = (last - min(hours) + 1) * _HOUR if hours else 0
        default: Granularity = (
            "hour" if span <= 2 * DAY else "day" if span <= SPANS["day"] * DAY else "week"
        )
        errors = sorted(
            (
                ErrorRow(
                    category=cat,
                    reason=reason,
                    code=code,
                    subcode=subcode,
                    count=g.count,
                    last_seen=g.last_seen,
                    stages=tuple(name for name, _ in g.stages.most_common(3)),
                    example=g.example,
                    fix=HISTORY_FIX if cat == "historical" else what_to_fix(reason, code, subcode),
                )
                for (cat, reason, code, subcode), g in self._groups.items()
            ),
            key=lambda row: (row.category == "filtered", -row.count, row.reason),
        )
        return DeliveryFigures(
            totals=totals,
            health=health(totals["delivered"], failed),
            series=series,
            default=default,
            errors=tuple(errors),
            untimed=self._untimed.total(),
            undated={c: self._untimed[c] for c in CATEGORIES},
        )

    def _series(self, end: float | None) -> dict[Granularity, Series]:
        if not self._hours:
            return {g: Series(g, (), {c: () for c in CATEGORIES}) for g in SPANS}
        first_h = min(h for h, _ in self._hours)
        last_h = max(h for h, _ in self._hours)
        if end is not None:
            last_h = max(last_h, int(end // _HOUR))
        by: dict[Granularity, Counter[tuple[int, Category]]] = {g: Counter() for g in SPANS}
        for (h, cat), n in self._hours.items():
            start = h * _HOUR
            by["hour"][(start, cat)] += n
            by["day"][(_floor(start, "day"), cat)] += n
            by["week"][(_floor(start, "week"), cat)] += n
        out: dict[Granularity, Series] = {}
        sizes: dict[Granularity, int] = {"hour": _HOUR, "day": DAY, "week": _WEEK}
        for g, size in sizes.items():
            lo, hi = _floor(first_h * _HOUR, g), _floor(last_h * _HOUR, g)
            starts = tuple(range(max(lo, hi - (SPANS[g] - 1) * size), hi + 1, size))
            counts = by[g]
            out[g] = Series(
                g, starts, {c: tuple(counts.get((s, c), 0) for s in starts) for c in CATEGORIES}
            )
        return out


def _floor(t: int, g: Granularity) -> int:
    if g == "week":
        return _week_start(t)
    size = _HOUR if g == "hour" else DAY
    return t - t % size


def _week_start(t: int) -> int:
    return t - (t + _MONDAY_SHIFT) % _WEEK
