"""``GET /dashboard``: Event Delivery at a glance.

The health label, the totals and the error table come from the same diagnostics as
``leadrelay report`` (``build_report`` over the store), the recent windows from ``Store.counts`` as
in ``leadrelay status``, the backlog and the pause from the store and the running worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final
from urllib.parse import urlencode

from leadrelay.config import Settings
from leadrelay.delivery.store import Counts, Store
from leadrelay.diagnostics.delivery import SPANS, ErrorRow, Granularity, Health, health
from leadrelay.diagnostics.html import html_table, series_figure
from leadrelay.diagnostics.render import category_label
from leadrelay.diagnostics.report import Report
from leadrelay.outcome import State
from leadrelay.scrub import scrub_text
from leadrelay.service.dashboard.layout import BASE, when
from leadrelay.service.dashboard.reports import Reports
from leadrelay.status import FAILED, PAUSE_REASONS, age
from leadrelay.status import windows as retained_windows

STATES_OF: Final[dict[str, tuple[State, ...]]] = {
    "delivered": (State.DELIVERED,),
    "filtered": (State.FILTERED,),
    "rejected": (State.REJECTED,),
    "expired": (State.EXPIRED,),
    "not_delivered": (State.DEAD,),
    "pending": (State.QUEUED, State.IN_FLIGHT),
}
"""The store states behind each Event Delivery category."""

_SCAN: Final = 500  # rows looked at to find an example of an error row


@dataclass(frozen=True, slots=True)
class Example:
    """Where to see the events of one error row: one of them, and the list of all."""

    first: int | None
    list_url: str


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """Everything the page shows, read from the store (in a worker thread)."""

    report: Report
    backlog: Counts
    windows: tuple[tuple[str, Counts, Health], ...]
    examples: tuple[Example, ...]  # aligned with report.delivery.errors
    now: float


def events_url(category: str, reason: str, code: int | None, subcode: int | None) -> str:
    """The event list filtered to one error row."""
    query: list[tuple[str, str]] = [("category", category), ("reason", reason)]
    if code is not None:
        query.append(("code", str(code)))
    if subcode is not None:
        query.append(("subcode", str(subcode)))
    return f"{BASE}/events?{urlencode(query)}"


def _example(store: Store, row: ErrorRow) -> Example:
    states = STATES_OF.get(row.category)
    first = None
    if states is not None:
        after: int | None = None
        seen = 0
        while first is None and seen < _SCAN:
            rows = store.events(
                states=states, reason=row.reason, limit=100, after_id=after, bodies=False
            )
            seen += len(rows)
            first = next(
                (r.id for r in rows if (r.code, r.subcode) == (row.code, row.subcode)), None
            )
            if len(rows) < 100:
                break
            after = rows[-1].id
    return Example(first, events_url(row.category, row.reason, row.code, row.subcode))


def collect(store: Store, settings: Settings, now: float, reports: Reports) -> DeliveryView:
    """Read the store: the report (see ``reports``), a few counts, an example per error row."""
    report = reports.get(settings, now)
    windows = []
    for name, seconds in retained_windows(settings.store):
        counts = store.counts(since=now - seconds)
        failed = sum(counts.by_state.get(s, 0) for s in FAILED)
        windows.append((name, counts, health(counts.by_state.get("delivered", 0), failed)))
    backlog = store.counts(since=now)  # the backlog part ignores ``since``; the rest is cheap
    examples = tuple(_example(store, row) for row in report.delivery.errors)
    return DeliveryView(report, backlog, tuple(windows), examples, now)


def held_for_auth(view: DeliveryView) -> int:
    """Queued events waiting because Meta refused the token (seen in the last week)."""
    week = view.windows[-1][1]
    return sum(n for (s, r), n in week.by_reason.items() if s == "queued" and r in PAUSE_REASONS)


def _health(h: Health) -> str:
    # In words, with a coloured edge; no weather emoji (a machine without an emoji font shows
    # a blank box).
    kind = h.label if h.label in ("sunny", "cloudy", "rainy", "stormy") else "none"
    return f'<p class="health health-{kind}" id="health">Health: {escape(h.text)}</p>'


def _stats(view: DeliveryView) -> str:
    t = view.report.delivery.totals
    b = view.backlog
    oldest = "-" if b.oldest_queued_at is None else age(max(0.0, view.now - b.oldest_queued_at))
    items = [
        ("Delivered", str(t["delivered"])),
        ("Filtered", str(t["filtered"])),
        ("Rejected", str(t["rejected"])),
        ("Expired", str(t["expired"])),
        ("Not delivered", str(t["not_delivered"])),
        ("Queue depth", str(b.queued + b.in_flight)),
        ("Oldest waiting", oldest),
    ]
    cells = "".join(
        f'<div><dt>{name}</dt><dd data-stat="{name.lower().replace(" ", "-")}">{value}</dd></div>'
        for name, value in items
    )
    return f'<dl class="stats" aria-label="Totals and backlog">{cells}</dl>'


def _windows(view: DeliveryView) -> str:
    names = [name for name, _, _ in view.windows]
    rows: list[tuple[str, ...]] = [
        (
            escape(category_label(c, from_store=True)),
            *(str(counts.by_state.get(s, 0)) for _, counts, _ in view.windows),
        )
        for s, c in (
            ("delivered", "delivered"),
            ("filtered", "filtered"),
            ("rejected", "rejected"),
            ("expired", "expired"),
            ("dead", "not_delivered"),
        )
    ]
    rows.append(("Health", *(escape(h.label) for _, _, h in view.windows)))
    return html_table("Recent outcomes (by when they were recorded)", ("Outcome", *names), rows)


def _chart(view: DeliveryView, by: Granularity) -> str:
    d = view.report.delivery
    tabs = "".join(
        f'<li><a href="{BASE}?by={g}"{" aria-current=page" if g == by else ""}>Per {g}</a></li>'
        for g in SPANS
    )
    return (
        f'<ul class="tabs" aria-label="Chart period">{tabs}</ul>'
        + series_figure(d, by, from_store=True)
        + f'<p class="note">The latest {SPANS[by]} {by}s at most; each event is placed when its '
        "outcome was recorded.</p>"
    )


def _errors(view: DeliveryView) -> str:
    errors = view.report.delivery.errors
    if not errors:
        return "<p>No error: every event was delivered (or is on its way).</p>"
    rows: list[Sequence[str]] = []
    for e, ex in zip(errors, view.examples, strict=True):
        reason = escape(e.reason)
        if ex.first is not None:
            reason = f'<a href="{BASE}/events/{ex.first}">{reason}</a>'
        example = (
            "" if not e.example else f"<br><small>e.g. {escape(scrub_text(e.example))}</small>"
        )
        rows.append(
            (
                escape(category_label(e.category, from_store=True)),
                reason,
                escape(e.meta_code) or "-",
                # The name starts with the visible count (WCAG "label in name").
                f'<a href="{escape(ex.list_url)}" aria-label="{e.count} event(s): list them">'
                f"{e.count}</a>",
                escape(", ".join(e.stages)) or "-",
                "-" if e.last_seen is None else escape(when(e.last_seen)),
                escape(e.fix) + example,
            )
        )
    head = ("Outcome", "Reason", "Meta code", "Events", "Stages", "Last seen", "What to fix")
    table = html_table("Grouped by reason and Meta code, most frequent first", head, rows)
    return (
        '<p class="note">Open a reason to see one such event (the original, the request and '
        "Meta's answer); the count lists them all.</p>" + table
    )


def render(view: DeliveryView, *, by: Granularity | None, paused: str | None, worker: str) -> str:
    """The page body. ``paused``: why delivery is paused (or None); ``worker``: its state."""
    r = view.report
    g: Granularity = by or r.delivery.default
    out = [
        "<h1>Event Delivery</h1>",
        f"<p>{r.events} event(s) in {escape(r.source)}. Delivery worker: {escape(worker)}. "
        f"Updated {escape(when(view.now))}.</p>",
    ]
    if paused:
        out.append(
            '<section class="alert" role="alert" aria-labelledby="paused-h">'
            f'<h2 id="paused-h">Delivery is paused</h2><p>{escape(paused)}</p></section>'
        )
    out += [
        _health(r.delivery.health),
        '<p class="note">From the delivered share of the events delivered or failed: sunny above '
        "95%, cloudy 90-95%, rainy 50-90%, stormy below 50%. Filtered events are not "
        "failures.</p>",
        _stats(view),
        '<section aria-labelledby="recent-h"><h2 id="recent-h">Recent windows</h2>',
        _windows(view),
        "</section>",
        '<section aria-labelledby="time-h"><h2 id="time-h">Over time</h2>',
        _chart(view, g),
        "</section>",
        '<section aria-labelledby="errors-h"><h2 id="errors-h">Errors and filtered events</h2>',
        _errors(view),
        "</section>",
    ]
    return "".join(out)
