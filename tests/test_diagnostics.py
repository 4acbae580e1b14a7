"""Conversion Leads diagnostics: funnel figures, Meta's good-fit checks, delivery health, the
error table, the HTML page and ``run_report`` end to end, on hand-built data with known answers."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from conftest import NOW, make_settings
from leadrelay.delivery.store import EventRecord
from leadrelay.diagnostics import Status, build_report, health, order_stages, run_report
from leadrelay.diagnostics.delivery import DeliveryCounter
from leadrelay.diagnostics.fixes import OUR_FIXES, what_to_fix
from leadrelay.diagnostics.funnel import Criteria, FunnelCounter, FunnelFigures
from leadrelay.diagnostics.goodfit import Check, good_fit
from leadrelay.diagnostics.html import render_html
from leadrelay.diagnostics.records import MAPPED, StageRecord
from leadrelay.diagnostics.sources import from_files, from_store
from leadrelay.outcome import State

DAY = 86400
LEAD = 100_000_000_000_000  # the smallest valid (15-digit) lead id
STAGES = ["Lead", "Marketing Qualified Lead", "Converted"]


def rec(
    lead: int | None, stage: str | None, t: float | None, state: str = "delivered", **kw: Any
) -> StageRecord:
    updated = kw.pop("updated_at", t if state != "mapped" else None)
    return StageRecord(lead, stage, None if t is None else int(t), state, updated_at=updated, **kw)


def figures(
    records: Iterable[StageRecord],
    *,
    static: Sequence[str] = STAGES,
    as_of: float = NOW,
    from_store: bool = True,
    **criteria: Any,
) -> FunnelFigures:
    counter = FunnelCounter()
    for r in records:
        counter.add(r)
    return counter.result(
        static, as_of=as_of, now=as_of, from_store=from_store, criteria=Criteria(**criteria)
    )


def check(key: str, records: Iterable[StageRecord], **kw: Any) -> Check:
    from_store = kw.get("from_store", True)
    return {c.key: c for c in good_fit(figures(records, **kw), from_store=from_store)}[key]


# ------------------------------------------------------------------------------ stage order


@pytest.mark.parametrize(
    ("static", "medians", "expected"),
    [
        # Mapping order wins for static names, whatever the data says.
        (STAGES, {"Lead": 0, "Marketing Qualified Lead": 9, "Converted": 2}, STAGES),
        # Dynamic names go before the first static stage with a larger median.
        (["Lead", "Converted"], {"Lead": 0, "Converted": 20, "SQL": 10, "MQL": 3},
         ["Lead", "MQL", "SQL", "Converted"]),
        # No static name: by median, ties by name.
        ([], {"B": 5, "A": 5, "Raw": 0}, ["Raw", "A", "B"]),
        # The raw lead stays first even if a dynamic stage happens earlier.
        (["Lead"], {"Lead": 5, "Early": 0}, ["Lead", "Early"]),
        # A static stage without data keeps its place in the mapping order.
        (["Lead", "MQL", "Converted"], {"Lead": 0, "Converted": 20, "Demo": 25, "X": 1},
         ["Lead", "MQL", "X", "Converted", "Demo"]),
        # Duplicate static names (two CRM events, one Facebook stage) count once.
        (["Lead", "Lead", "Won"], {}, ["Lead", "Won"]),
    ],
)  # fmt: skip
def test_stage_order(static: list[str], medians: dict[str, float], expected: list[str]) -> None:
    assert order_stages(static, medians) == expected


def test_dynamic_stage_order_comes_from_the_data() -> None:
    start = NOW - 40 * DAY
    records = []
    for i in range(4):
        records += [
            rec(LEAD + i, "Lead", start),
            rec(LEAD + i, "Won", start + 9 * DAY),
            rec(LEAD + i, "Qualified", start + 2 * DAY),
        ]
    f = figures(records, static=["Lead"])
    assert [s.name for s in f.stages] == ["Lead", "Qualified", "Won"]
    assert [s.static for s in f.stages] == [True, False, False]


# ------------------------------------------------------------------------------ funnel figures


def known_funnel() -> list[StageRecord]:
    """10 leads 40 days ago; 5 qualified 2 days later; 2 of those converted 10 days later;
    one more converted 30 days later without being qualified (outside the 28-day window)."""
    t0 = NOW - 40 * DAY
    out = [rec(LEAD + i, "Lead", t0) for i in range(10)]
    out += [rec(LEAD + i, "Marketing Qualified Lead", t0 + 2 * DAY) for i in range(5)]
    out += [rec(LEAD + i, "Converted", t0 + 10 * DAY) for i in range(2)]
    out.append(rec(LEAD + 9, "Converted", t0 + 30 * DAY))
    # A resend of the same stage: one more event, not one more lead.
    out.append(rec(LEAD, "Lead", t0 + DAY))
    # Not funnel events: filtered, rejected by Meta, queued without a stage.
    out.append(rec(None, None, t0, "filtered", reason="unmapped"))
    out.append(
        rec(LEAD + 50, "Lead", t0, "rejected", reason="meta_100_2804036", code=100, subcode=2804036)
    )
    return out


def test_the_share_of_the_first_stage_counts_the_leads_that_went_through_it() -> None:
    """An export of later stages (one lead seen at the first stage, eight that came in at the
    second) gave "of first stage 800%". It is the share of the first stage's leads: at most 1."""
    t0 = NOW - 10 * DAY
    records = [rec(LEAD, "Lead", t0), rec(LEAD, "Marketing Qualified Lead", t0 + DAY)]
    records += [rec(LEAD + i, "Marketing Qualified Lead", t0 + DAY) for i in range(1, 9)]
    by = {s.name: s for s in figures(records).stages}
    assert by["Marketing Qualified Lead"].leads == 9
    assert by["Marketing Qualified Lead"].share_of_first == pytest.approx(1.0)
    assert by["Lead"].share_of_first == pytest.approx(1.0)


def test_funnel_figures_leads_conversions_and_28_day_rates() -> None:
    f = figures(known_funnel())
    by = {s.name: s for s in f.stages}
    assert [s.name for s in f.stages] == STAGES
    assert [(s.events, s.leads) for s in f.stages] == [(11, 10), (5, 5), (3, 3)]
    assert by["Lead"].conversion is None
    assert by["Marketing Qualified Lead"].conversion == pytest.approx(0.5)
    # Of the 5 qualified leads, 2 converted (lead 9 converted without being qualified).
    assert by["Converted"].conversion == pytest.approx(0.4)
    assert by["Converted"].share_of_first == pytest.approx(0.3)
    assert by["Converted"].median_days == pytest.approx(10.0)
    assert f.cohort == 10
    assert by["Marketing Qualified Lead"].rate_28d == pytest.approx(0.5)
    assert (by["Converted"].reached_28d, by["Converted"].rate_28d) == (2, pytest.approx(0.2))
    assert (f.leads, f.seen_leads, f.accepted_leads) == (10, 11, 10)


def test_events_per_stage_per_day() -> None:
    f = figures(known_funnel())
    first = int((NOW - 40 * DAY) // DAY)
    assert f.days == tuple(range(first, first + 31))
    assert f.per_day["Lead"][:2] == (10, 1)
    assert f.per_day["Marketing Qualified Lead"][2] == 5
    assert f.per_day["Converted"][10] == 2 and f.per_day["Converted"][30] == 1
    assert sum(f.per_day["Converted"]) == 3


# ------------------------------------------------------------------------------ good-fit checks


def leads(
    n: int,
    start: float,
    span_days: float,
    stage: str = "Lead",
    state: str = "delivered",
    first: int = LEAD,
) -> list[StageRecord]:
    """``n`` leads reaching ``stage``, evenly spread over ``span_days`` from ``start``."""
    return [
        rec(first + i, stage, start + span_days * DAY * i / max(1, n - 1), state) for i in range(n)
    ]


def with_later_stage(n: int, converted: int, delay_days: float) -> list[StageRecord]:
    t0 = NOW - 35 * DAY
    out = leads(n, t0, 0)
    out += [rec(LEAD + i, "Converted", t0 + delay_days * DAY) for i in range(converted)]
    return out


CHECK_CASES: list[tuple[str, str, list[StageRecord], dict[str, Any], Status, str]] = [
    ("volume", "250 leads in the last 30 days",
     [*leads(250, NOW - 29 * DAY, 29), rec(LEAD + 999, "Lead", NOW - 45 * DAY)], {}, Status.PASS,
     "Meta needs 200"),
    ("volume", "50 leads a month", leads(50, NOW - 40 * DAY, 40), {}, Status.FAIL,
     "Meta needs 200"),
    ("volume", "10 days, scaled to 300", leads(100, NOW - 10 * DAY, 10), {}, Status.PASS,
     "estimated from 100 leads over 10.0 days"),
    ("volume", "3 days of data", leads(100, NOW - 3 * DAY, 3), {}, Status.NOT_ENOUGH_DATA,
     "Only 3.0 days of data"),
    ("volume", "no raw lead stage", leads(300, NOW - 40 * DAY, 40, "Converted"), {}, Status.FAIL,
     "No lead reached the first stage 'Lead'"),
    ("volume", "nothing yet", [], {}, Status.NOT_ENOUGH_DATA, "No stage event yet"),
    ("stages", "three stages", known_funnel(), {}, Status.PASS, "3 stages"),
    ("stages", "two stages", with_later_stage(40, 4, 5), {}, Status.PASS, "recommends 3 or more"),
    ("stages", "raw lead only", leads(10, NOW - 9 * DAY, 5), {}, Status.FAIL,
     "Send at least one later stage"),
    ("stages", "no raw lead", leads(10, NOW - 9 * DAY, 5, "Converted"), {}, Status.FAIL,
     "raw lead stage 'Lead' has no events"),
    ("stages", "no event", [], {}, Status.NOT_ENOUGH_DATA, "No stage event yet"),
    ("rate", "10% within 28 days", with_later_stage(40, 4, 5), {}, Status.PASS,
     "'Converted' (4 of 40 leads) within 28 days"),
    ("rate", "everybody converts", with_later_stage(40, 40, 5), {}, Status.FAIL,
     "no later stage is reached by 1.0%-40.0%"),
    ("rate", "converted after 28 days", with_later_stage(40, 4, 30), {}, Status.FAIL,
     "no later stage"),
    ("rate", "leads too recent", leads(40, NOW - 5 * DAY, 0) + leads(4, NOW - 4 * DAY, 0,
     "Converted"), {}, Status.NOT_ENOUGH_DATA, "0 lead(s) were first seen at least 28 days ago"),
    ("rate", "small cohort", with_later_stage(10, 1, 5), {}, Status.NOT_ENOUGH_DATA,
     "need 30 or more"),
    ("rate", "one stage", leads(40, NOW - 40 * DAY, 0), {"static": ["Lead"]},
     Status.NOT_ENOUGH_DATA, "Only one stage"),
    ("coverage", "all delivered", leads(10, NOW - DAY, 0), {}, Status.PASS,
     "10 of the 10 leads seen"),
    ("coverage", "30% delivered", leads(3, NOW - DAY, 0) + leads(7, NOW - DAY, 0, state="rejected",
     first=LEAD + 100), {}, Status.FAIL, "all leads generated in Lead Ads"),
    ("coverage", "files: mapped counts", leads(10, NOW - DAY, 0, state="mapped"),
     {"from_store": False}, Status.PASS, "would be accepted"),
    ("coverage", "no lead id", [rec(None, None, NOW, "rejected", reason="missing_lead_id")], {},
     Status.NOT_ENOUGH_DATA, "No lead id seen yet"),
    ("lead_ids", "all valid", known_funnel()[:-2], {}, Status.PASS, "Every event"),
    ("lead_ids", "1 bad in 200",
     [*leads(199, NOW - DAY, 0), rec(None, "Lead", NOW, "rejected", reason="invalid_lead_id")],
     {}, Status.PASS, "1 invalid (not 15-17 digits, or digits lost)"),
    ("lead_ids", "5 bad in 100",
     leads(95, NOW - DAY, 0) + [rec(None, "Lead", NOW, "rejected", reason="missing_lead_id")] * 3
     + [rec(LEAD, "Lead", NOW, "rejected", reason="meta_100_2804036", code=100,
            subcode=2804036)] * 2,
     {}, Status.FAIL, "2 unknown to Meta (100/2804036), 3 missing"),
    ("lead_ids", "filtered only", [rec(None, None, NOW, "filtered", reason="unmapped")], {},
     Status.NOT_ENOUGH_DATA, "No event yet"),

    ("upload", "files", leads(10, NOW - DAY, 0, state="mapped"), {"from_store": False},
     Status.NOT_APPLICABLE, "before going live"),
    ("upload", "every 6 hours", leads(41, NOW - 10 * DAY, 10), {}, Status.PASS, "every 6.0 h"),
    ("upload", "a 3-day gap", leads(10, NOW - 10 * DAY, 2) + leads(10, NOW - 5 * DAY, 5,
     first=LEAD + 100), {}, Status.FAIL, "Nothing was delivered from"),
    ("upload", "stopped 2 days ago", leads(40, NOW - 12 * DAY, 10), {}, Status.FAIL, "(48.0 h)"),
    ("upload", "live since this morning", leads(10, NOW - 10 * 3600, 10 / 24), {},
     Status.NOT_ENOUGH_DATA, "judged after 2 days"),
    ("upload", "nothing delivered", leads(10, NOW - DAY, 0, state="queued"), {},
     Status.NOT_ENOUGH_DATA, "Nothing delivered"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "case", "records", "kw", "status", "why"),
    CHECK_CASES,
    ids=[f"{c[0]}: {c[1]}" for c in CHECK_CASES],
)
def test_good_fit_check(
    key: str, case: str, records: list[StageRecord], kw: dict[str, Any], status: Status, why: str
) -> None:
    result = check(key, records, **kw)
    assert (result.status, why in result.why) == (status, True), result


def test_the_lead_ids_check_counts_events_not_unreadable_records() -> None:
    """Unreadable records have no lead id to judge: the check said "8 of 50" of 48 events."""
    records = [
        *leads(8, NOW - DAY, 0),
        rec(None, "Lead", NOW, "rejected", reason="invalid_lead_id"),
    ]
    result = check(
        "lead_ids", [*records, *[rec(None, None, NOW, "rejected", reason="unreadable")] * 2]
    )
    assert result.yours == "11.1% rejected (1 of 9)"


def test_every_check_says_what_meta_asks_and_the_users_figure() -> None:
    checks = good_fit(figures(with_later_stage(40, 4, 5)), from_store=True)
    assert [c.key for c in checks] == ["volume", "stages", "rate", "coverage", "upload", "lead_ids"]
    asks = {c.key: c.meta_asks for c in checks}
    assert "200" in asks["volume"] and "1.0%-40.0%" in asks["rate"] and "60.0%" in asks["coverage"]
    assert {c.key: c.yours for c in checks}["coverage"] == "100.0% (40 of 40)"


def test_historical_file_events_count_for_the_funnel_not_for_sending() -> None:
    old = [
        rec(
            LEAD + i,
            "Lead",
            NOW - 40 * DAY,
            "rejected",
            reason="event_time_too_old",
            historical=True,
        )
        for i in range(3)
    ]
    f = figures(old, from_store=False)
    assert (f.stages[0].leads, f.accepted_leads, f.historical) == (3, 3, 3)
    counter = DeliveryCounter()
    for r in old:
        counter.add(r)
    d = counter.result()
    assert d.totals["historical"] == 3 and d.totals["rejected"] == 0
    assert d.health.label == "no data"  # history does not count against the health


# ------------------------------------------------------------------------------ Event Delivery


@pytest.mark.parametrize(
    ("delivered", "failed", "label"),
    [
        (96, 4, "sunny"),
        (95, 5, "cloudy"),  # 95% is not above 95%
        (90, 10, "cloudy"),
        (89, 11, "rainy"),
        (50, 50, "rainy"),
        (49, 51, "stormy"),
        (0, 3, "stormy"),
        (0, 0, "no data"),
    ],
)
def test_health_label_thresholds(delivered: int, failed: int, label: str) -> None:
    assert health(delivered, failed).label == label


def test_health_ignores_filtered_and_pending_events() -> None:
    counter = DeliveryCounter()
    t = NOW - 3600
    for state, n in (
        ("delivered", 90),
        ("filtered", 1000),
        ("queued", 500),
        ("rejected", 6),
        ("expired", 2),
        ("dead", 2),
    ):
        for _ in range(n):
            counter.add(rec(LEAD, "Lead", t, state, reason=None if state == "delivered" else "x"))
    d = counter.result(end=NOW)
    assert (d.health.label, d.health.share) == ("cloudy", pytest.approx(0.9))
    assert d.health.text == "cloudy: 90.0% delivered (90 of 100)"
    assert d.totals == {
        "delivered": 90,
        "filtered": 1000,
        "rejected": 6,
        "expired": 2,
        "not_delivered": 2,
        "pending": 500,
        "historical": 0,
    }


def test_error_table_groups_by_reason_and_meta_code() -> None:
    counter = DeliveryCounter()
    t = NOW - DAY
    rows = (
        [rec(None, "Lead", t, "rejected", reason="invalid_lead_id", message="lead_id 12 ...")] * 3
        + [
            rec(
                LEAD,
                "Lead",
                t + i,
                "rejected",
                reason="meta_100_2804036",
                code=100,
                subcode=2804036,
            )
            for i in range(5)
        ]
        + [
            rec(
                LEAD,
                "Converted",
                t,
                "rejected",
                reason="meta_100_2804036",
                code=100,
                subcode=2804036,
            )
        ]
        + [rec(LEAD, "Lead", t, "queued", reason="paused_auth", code=190)] * 2
        + [rec(LEAD, "Lead", t, "dead", reason="retries_exhausted", code=2)]
        + [rec(None, None, t, "filtered", reason="unmapped", source_event="page_view")] * 9
    )
    for r in rows:
        counter.add(r)
    errors = counter.result().errors
    summary = [(e.category, e.reason, e.meta_code, e.count) for e in errors]
    assert summary == [
        ("rejected", "meta_100_2804036", "100/2804036", 6),
        ("rejected", "invalid_lead_id", "", 3),
        ("pending", "paused_auth", "190", 2),
        ("not_delivered", "retries_exhausted", "2", 1),
        ("filtered", "unmapped", "", 9),  # not an error: listed last
    ]
    meta = errors[0]
    assert meta.stages == ("Lead", "Converted") and meta.last_seen == t + 4
    assert "lead id" in meta.fix.lower()
    assert errors[1].example == "lead_id 12 ..."
    assert "access token" in errors[2].fix and errors[4].stages == ("page_view",)


def test_the_examples_of_a_report_to_share_carry_no_email_or_phone_number() -> None:
    """A lead id mapped to the wrong field is refused quoting its value: an email, a phone
    number. The report is a page to share: the example says what was wrong without them."""
    counter = DeliveryCounter()
    message = "lead_id 'Reba.Loba0@example.com' is not a number of 15 to 17 digits"
    counter.add(rec(None, "Lead", NOW - DAY, "rejected", reason="invalid_lead_id", message=message))
    phone = "lead_id 'abc+33612345678' is not a number of 15 to 17 digits"
    counter.add(
        rec(None, "Lead", NOW - DAY, "rejected", reason="invalid_event_time", message=phone)
    )
    examples = sorted(e.example or "" for e in counter.result().errors)
    assert examples == [
        "lead_id '[redacted]' is not a number of 15 to 17 digits",
        "lead_id 'abc[redacted]' is not a number of 15 to 17 digits",
    ]


REASONS = [
    "missing_lead_id",
    "invalid_lead_id",
    "event_time_too_old",
    "event_time_in_future",
    "invalid_event_time",
    "missing_event_name",
    "empty_event_name",
    "unreadable",
    "unmapped",
    "consent",
    "expired",
    "retries_exhausted",
    "paused_auth",
    "poison",
]


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_of_ours_has_its_own_fix(reason: str) -> None:
    assert what_to_fix(reason) == OUR_FIXES[reason].replace("{example}", "the example")


@pytest.mark.parametrize(
    ("code", "subcode", "words"),
    [
        (100, 2804036, "lead id"),
        (100, 2804003, "older than 7 days"),
        (190, 460, "access token is invalid or expired"),
        (100, 33, "pixel_id"),
        (200, None, "permission"),
        (294, None, "permission"),
        (613, None, "rate limit"),
        (100, None, "parameter"),
    ],
)
def test_meta_codes_have_a_fix(code: int, subcode: int | None, words: str) -> None:
    reason = f"meta_{code}_{subcode}" if subcode else f"meta_{code}"
    assert words in what_to_fix(reason, code, subcode).lower()


def test_delivery_series_by_hour_day_and_monday_weeks() -> None:
    monday = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
    counter = DeliveryCounter()
    for t, state in (
        (monday + 3600, "delivered"),
        (monday + 3700, "rejected"),
        (monday + DAY + 10, "delivered"),
        (monday + 8 * DAY, "expired"),
    ):
        counter.add(rec(LEAD, "Lead", t, state, reason=None if state == "delivered" else "x"))
    d = counter.result()
    day, week = d.series["day"], d.series["week"]
    assert day.starts[0] == monday and len(day.starts) == 9
    assert (day.counts["delivered"][:2], day.counts["rejected"][0]) == ((1, 1), 1)
    assert week.starts == (monday, monday + 7 * DAY)
    assert (week.counts["delivered"], week.counts["expired"]) == ((2, 0), (0, 1))
    assert d.series["hour"].counts["delivered"][-1] == 0 and len(d.series["hour"].starts) == 48
    assert d.default == "day"


# ------------------------------------------------------------------------------ HTML


VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr", "area", "base"}


class Checker(HTMLParser):
    """Checks that every element is closed in order; collects attributes and ids."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            self.attrs.append((tag, name, value or ""))
            if name == "id":
                assert value not in self.ids, f"duplicate id {value}"
                self.ids.add(value or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def report_of(records: list[StageRecord], *, from_store: bool = True) -> Any:
    return build_report(
        records,
        static=STAGES,
        now=NOW,
        from_store=from_store,
        source="the event store",
        pixel_id="123456789012345",
    )


def test_html_is_well_formed_self_contained_and_shows_the_figures() -> None:
    records = [*known_funnel(), rec(LEAD + 7, "<b>Won & Co</b>", NOW - DAY)]
    page = render_html(report_of(records))
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [] and page.startswith("<!DOCTYPE html>")
    text = " ".join(checker.text)
    for figure in (
        "Marketing Qualified Lead",
        "Good fit for Conversion Leads",
        "not enough data yet",
        "Health: sunny",
        "100/2804036",
        "unmapped",
        "<b>Won & Co</b>",
    ):
        assert figure in text, figure
    assert "<b>Won" not in page  # user data is escaped, never markup
    # Nothing to fetch: no script, no stylesheet link, no remote URL in any attribute or CSS.
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert not [a for a in checker.attrs if a[2].startswith(("http:", "https:", "//"))]
    # Every chart is an accessible image labelled by ids that exist, and valid SVG.
    svgs = [a for a in checker.attrs if a[0] == "svg" and a[1] == "aria-labelledby"]
    assert len(svgs) >= 3
    for _, _, ids in svgs:
        assert set(ids.split()) <= checker.ids
    assert ("svg", "role", "img") in checker.attrs
    start = 0
    while (start := page.find("<svg", start)) >= 0:
        end = page.index("</svg>", start) + 6
        ET.fromstring(page[start:end])  # raises on a malformed attribute or element
        start = end
    assert ("html", "lang", "en") in checker.attrs
    # Statuses are words, not colours alone; each chart has its data as a table.
    assert page.count("<table>") >= 6 and "Data table" in page


# ------------------------------------------------------------------------ sources and run_report


class PagedStore:
    """Just enough of ``Store`` for the diagnostics: ``events`` paging by id."""

    def __init__(self, rows: list[EventRecord]) -> None:
        self.rows = rows
        self.calls = 0

    def events(
        self,
        *,
        states: Any = None,
        reason: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after_id: int | None = None,
        bodies: bool = True,
    ) -> list[EventRecord]:
        self.calls += 1
        return [r for r in self.rows if after_id is None or r.id > after_id][:limit]


def stored(i: int, state: State, name: str, t: float, **kw: Any) -> EventRecord:
    base: dict[str, Any] = dict(
        id=i,
        key=f"k{i}",
        state=state,
        source_event="crm",
        event_name=name,
        lead_id=LEAD + i,
        event_time=int(t),
        received_at=t,
        updated_at=t,
        attempts=1,
        reason=None,
        message=None,
        field=None,
        code=None,
        subcode=None,
        fbtrace_id=None,
        payload=None,
        original=None,
        response=None,
    )
    base.update(kw)
    return EventRecord(**base)


def test_from_store_reads_every_page() -> None:
    rows = [stored(i, State.DELIVERED, "Lead", NOW - i) for i in range(1, 8)]
    rows.append(
        stored(8, State.REJECTED, "Lead", NOW, reason="meta_100_2804036", code=100, subcode=2804036)
    )
    store = PagedStore(rows)
    records = list(from_store(store, page=3))  # type: ignore[arg-type]
    assert [r.lead_id for r in records] == [LEAD + i for i in range(1, 9)]
    assert store.calls == 3
    assert (records[-1].state, records[-1].code, records[-1].updated_at) == ("rejected", 100, NOW)


def write_funnel(path: Path) -> None:
    events = []
    for i in range(40):
        t0 = NOW - (35 - i % 5) * DAY
        events.append(
            {
                "event_name": "generate_lead",
                "facebook_lead_id": str(LEAD + i),
                "context": {"event_timestamp": int(t0 * 1000)},
            }
        )
        if i % 4 == 0:
            events.append(
                {
                    "event_name": "lead_qualified",
                    "facebook_lead_id": str(LEAD + i),
                    "context": {"event_timestamp": int((t0 + 3 * DAY) * 1000)},
                }
            )
        if i % 10 == 0:
            events.append(
                {
                    "event_name": "deal_won",
                    "facebook_lead_id": str(LEAD + i),
                    "context": {"event_timestamp": int((t0 + 20 * DAY) * 1000)},
                }
            )
    events.append(
        {
            "event_name": "generate_lead",
            "facebook_lead_id": "12345",
            "context": {"event_timestamp": int(NOW * 1000)},
        }
    )
    events.append({"event_name": "page_view"})
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + b"{not json\n")


def test_run_report_on_a_crm_export(tmp_path: Path) -> None:
    data = tmp_path / "funnel.ndjson"
    write_funnel(data)
    settings = make_settings(
        mapping={"generate_lead": "Lead", "lead_qualified": "Qualified", "deal_won": "Converted"}
    )
    out = io.StringIO()
    page = tmp_path / "report.html"
    code = run_report(
        settings,
        files=[str(data)],
        store=None,
        html_path=page,
        console=Console(file=out, width=200),
        now=NOW,
    )
    assert code == 0
    text = out.getvalue()
    for figure in (
        "Good fit for Conversion Leads",
        "Qualified",
        "Converted",
        "not applicable",
        "invalid_lead_id",
        "unreadable",
        "unmapped",
        f"Wrote {page}",
    ):
        assert figure in text, figure
    # 40 leads, 10 qualified, 4 converted within 28 days of their first event: 25% and 10% pass.
    html = page.read_text(encoding="utf-8")
    assert "&#x27;Converted&#x27; (4 of 40 leads)" in html
    assert "Qualified" in html and "older than 7 days" in html
    assert "EAAB-secret-token-do-not-print" not in text + html
    assert not list(tmp_path.glob("*.tmp"))


def test_run_report_says_when_there_is_nothing_to_read(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    page = tmp_path / "r.html"
    settings = make_settings()
    assert run_report(settings, files=None, store=None, html_path=page, console=console) == 1
    assert "Nothing to report on" in out.getvalue()
    missing = str(tmp_path / "nope.ndjson")
    assert run_report(settings, files=[missing], store=None, html_path=page, console=console) == 1
    assert "nope.ndjson" in out.getvalue() and not page.exists()


def test_a_timestamp_far_in_the_future_does_not_break_the_charts() -> None:
    # A microsecond timestamp read as seconds lands tens of thousands of years ahead.
    bad = rec(LEAD, "Lead", 10**12, "rejected", reason="event_time_in_future", updated_at=None)
    report = build_report([*known_funnel(), bad], static=STAGES, now=NOW, from_store=False,
                          source="x.ndjson", pixel_id="123456789012345")  # fmt: skip
    assert report.delivery.untimed == 1
    assert report.funnel.as_of == NOW
    assert "event_time_in_future" in render_html(report)


def test_overlapping_exports_count_each_event_once(tmp_path: Path) -> None:
    """The same export given twice (exports overlap) counted every lead's events twice: "322
    of 322 delivered" predicted where a send delivers 161 and sends 161 again as nothing. The
    repeats (by event_id) are counted once, and said ("same_event_id")."""
    data = tmp_path / "export.ndjson"
    events = [
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": LEAD + n,
            "context": {"event_id": f"q-{n}", "event_timestamp": int((NOW - 3600) * 1000)},
        }
        for n in range(5)
    ]
    data.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    settings = make_settings(mapping={"lead_qualified": "Qualified"})
    once = Counter((r.state, r.reason) for r in from_files([str(data)], settings, now=NOW))
    twice = Counter((r.state, r.reason) for r in from_files([str(data)] * 2, settings, now=NOW))
    assert once == {(MAPPED, None): 5}
    assert twice == {(MAPPED, None): 5, ("filtered", "same_event_id"): 5}


def test_the_rows_of_events_per_day_add_up_to_the_total(tmp_path: Path) -> None:
    """Events with no date to place them by (repeats of an event_id, unreadable lines) and
    those before the days shown have rows of their own: the per-day "filtered" column summed
    to 2 under a total of 413 (411 repeats were only in the total)."""
    data = tmp_path / "export.ndjson"
    events = [
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": LEAD + n,
            "context": {"event_id": f"q-{n}", "event_timestamp": int((NOW - n * 86400) * 1000)},
        }
        for n in range(20)  # 20 days: the table shows the latest 14
    ]
    data.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + b"not json\n")
    settings = make_settings(mapping={"lead_qualified": "Qualified"})
    out = io.StringIO()
    code = run_report(
        settings,
        files=[str(data)] * 2,
        store=None,
        html_path=tmp_path / "r.html",
        console=Console(file=out, width=200),
        now=NOW,
    )
    assert code == 0
    text = out.getvalue()
    table = text[text.index("Events per") : text.index("Errors and filtered")]
    rows = {
        cells[0]: [int(c) for c in cells[1:]]
        for line in table.splitlines()
        if (cells := [c.strip() for c in line.strip("│┃ ").split("│")])[0]
        and all(c.isdigit() for c in cells[1:])
        and len(cells) > 1
    }
    total = rows.pop("total")
    assert [sum(column) for column in zip(*rows.values(), strict=True)] == total
    assert "no date" in rows  # 20 repeats and 2 unreadable lines
    assert "earlier" in rows  # the first 6 days
