"""The report as one self-contained HTML file: inline CSS, inline SVG, no script, no network.

Semantic sections with headings, tables with captions and header cells, charts labelled for
screen readers with their data in a table beside them, statuses in words (never colour alone),
text contrast of at least 7:1. It opens from disk on a laptop with no internet connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

from leadrelay.diagnostics.delivery import CATEGORIES, DeliveryFigures, Granularity
from leadrelay.diagnostics.goodfit import Status
from leadrelay.diagnostics.records import DAY
from leadrelay.diagnostics.render import bucket_label, category_label, pct
from leadrelay.diagnostics.report import Report
from leadrelay.diagnostics.svg import SERIES_COLOURS, hbar_chart, legend, line_chart, stacked_bars

CATEGORY_COLOURS: Final = {
    "delivered": "#1b7f3b",
    "filtered": "#546e7a",
    "rejected": "#b3261e",
    "expired": "#8c5a00",
    "not_delivered": "#6a1b9a",
    "pending": "#0b5cad",
    "historical": "#757575",
}
_STATUS_CLASS: Final = {
    Status.PASS: "pass",
    Status.FAIL: "fail",
    Status.NOT_ENOUGH_DATA: "wait",
    Status.NOT_APPLICABLE: "na",
}
_WEATHER: Final = {"sunny": "☀", "cloudy": "⛅", "rainy": "🌧", "stormy": "⛈"}

CSS: Final = """
:root{color-scheme:light}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;
background:#fff;margin:0}
header,main,footer{max-width:72rem;margin:0 auto;padding:0 1.25rem}
header{padding-top:1rem}
h1{font-size:1.6rem;margin:.5rem 0}h2{font-size:1.3rem;margin-top:2rem;
border-bottom:2px solid #1a1a1a}h3{font-size:1.1rem}
a{color:#0b4f91}a:focus,summary:focus{outline:3px solid #0b4f91;outline-offset:2px}
nav ul{display:flex;flex-wrap:wrap;gap:1rem;list-style:none;padding:0}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem;font-size:.95rem}
caption{text-align:left;font-weight:600;padding:.25rem 0}
th,td{border:1px solid #8a8a8a;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.status{font-weight:700;padding:.1rem .4rem;border-radius:.25rem;white-space:nowrap}
.pass{background:#e3f1e6;color:#0d4d22}.fail{background:#fbe4e2;color:#7f1410}
.wait{background:#fff4d6;color:#5c3d00}.na{background:#eceff1;color:#37474f}
.health{font-size:1.2rem;font-weight:700;padding:.75rem 1rem;border:2px solid #1a1a1a;
display:inline-block;border-radius:.4rem}
.chart{width:100%;height:auto;max-width:60rem;display:block}
.chart text{font-size:12px;fill:#1a1a1a}
.legend{display:flex;flex-wrap:wrap;gap:1rem;list-style:none;padding:0;margin:.25rem 0}
.swatch{display:inline-block;width:.9rem;height:.9rem;margin-right:.35rem;
vertical-align:middle;border:1px solid #1a1a1a}
figure{margin:1rem 0}figcaption{font-weight:600}
details{margin:.5rem 0 1rem}summary{cursor:pointer;color:#0b4f91}
.note{color:#3d3d3d}
"""


def html_table(
    caption: str, head: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: int = 0
) -> str:
    """A table of already-escaped cells; the last ``numeric`` columns are right-aligned."""
    first_num = len(head) - numeric

    def cls(i: int) -> str:
        return ' class="n"' if i >= first_num else ""

    th = "".join(f'<th scope="col"{cls(i)}>{h}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(
            (f'<th scope="row">{c}</th>' if i == 0 else f"<td{cls(i)}>{c}</td>")
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f"<table><caption>{caption}</caption><thead><tr>{th}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _figure(chart: str, caption: str, table: str, key: str = "") -> str:
    return (
        f"<figure><figcaption>{caption}</figcaption>{chart}{key}"
        f"<details><summary>Data table: {caption}</summary>{table}</details></figure>"
    )


def _day(d: int) -> str:
    return datetime.fromtimestamp(d * DAY, UTC).strftime("%Y-%m-%d")


def checks_section(report: Report) -> str:
    """The good-fit checks as a table: Meta's criterion, the user's figure, result and why."""
    rows = [
        (
            escape(c.title),
            escape(c.meta_asks),
            escape(c.yours),
            f'<span class="status {_STATUS_CLASS[c.status]}">{escape(c.status.value)}</span>',
            escape(c.why),
        )
        for c in report.checks
    ]
    head = ("Check", "Meta asks", "Yours", "Result", "Why")
    return html_table("Meta's criteria next to your figures", head, rows)


def funnel_section(report: Report) -> str:
    """The funnel: leads per stage (table and chart) and the conversions between stages."""
    f = report.funnel
    within = f"Within {f.criteria.window_days} days"
    rows: list[tuple[str, ...]] = [
        (
            escape(s.name) + ("" if s.static else " <small>(from data)</small>"),
            str(s.events),
            str(s.leads),
            pct(s.conversion),
            pct(s.share_of_first),
            "-" if s.median_days is None else f"{s.median_days:.1f}",
            pct(s.rate_28d),
        )
        for s in f.stages
    ]
    head = (
        "Stage",
        "Events",
        "Leads",
        "From previous stage",
        "Of first stage",
        "Median days",
        within,
    )
    table = html_table("Leads per stage, in funnel order", head, rows, numeric=6)
    bars = [(s.name, s.leads, f"{s.leads} ({pct(s.share_of_first)})") for s in f.stages]
    desc = "; ".join(f"{s.name}: {s.leads} leads" for s in f.stages) or "no stage yet"
    out = [
        _figure(
            hbar_chart("funnel", "Leads reaching each stage", desc, bars),
            "Leads reaching each stage",
            table,
        )
    ]
    if f.days:
        labels = [_day(d) for d in f.days]
        colours = [SERIES_COLOURS[i % len(SERIES_COLOURS)] for i in range(len(f.per_day))]
        series = [(name, colours[i], values) for i, (name, values) in enumerate(f.per_day.items())]
        chart = line_chart(
            "per-day",
            "Events per stage per day",
            f"{len(labels)} days from {labels[0]} to {labels[-1]}, one line per stage",
            labels,
            series,
        )
        rows = [(labels[i], *(str(v[i]) for _, _, v in series)) for i in range(len(labels))]
        table = html_table(
            "Events per stage per day (UTC)",
            ("Day", *(escape(n) for n, _, _ in series)),
            rows,
            numeric=len(series),
        )
        key = legend([(n, c) for n, c, _ in series])
        out.append("<h3>Events per stage per day</h3>")
        out.append(_figure(chart, "Events per stage per day (UTC)", table, key))
    if f.historical:
        out.append(
            f'<p class="note">{f.historical} event(s) are older than Meta\'s 7-day window: they '
            "describe the funnel but cannot be sent now. Send new stage changes as they happen.</p>"
        )
    return "".join(out)


def series_figure(d: DeliveryFigures, g: Granularity, *, from_store: bool) -> str:
    """Events per ``g`` (hour, day, week) by outcome: a stacked bar chart with its data table."""
    s = d.series[g]
    if not s.starts:
        return '<p class="note">No event to place in time yet.</p>'
    shown = [c for c in CATEGORIES if d.totals[c]]
    names = {c: category_label(c, from_store=from_store) for c in shown}
    labels = [bucket_label(t, g) for t in s.starts]
    series = [(names[c], CATEGORY_COLOURS[c], s.counts[c]) for c in shown]
    caption = f"Events per {g} by outcome (UTC)"
    desc = "; ".join(f"{names[c]}: {sum(s.counts[c])}" for c in shown)
    chart = stacked_bars(f"delivery-{g}", caption, desc, labels, series)
    rows = [(escape(labels[i]), *(str(s.counts[c][i]) for c in shown)) for i in range(len(labels))]
    table = html_table(
        caption, (g.capitalize(), *(escape(names[c]) for c in shown)), rows, numeric=len(shown)
    )
    return _figure(chart, caption, table, legend([(names[c], CATEGORY_COLOURS[c]) for c in shown]))


def _delivery(report: Report) -> str:
    d = report.delivery
    store = report.from_store
    h = d.health
    icon = _WEATHER.get(h.label, "")
    out = [
        f'<p class="health"><span aria-hidden="true">{icon}</span> Health: {escape(h.text)}</p>',
        '<p class="note">From the delivered share of the events delivered or failed: sunny above '
        "95%, cloudy 90-95%, rainy 50-90%, stormy below 50%. Filtered events are not failures."
        + (
            ""
            if store
            else " Read from files: nothing was sent yet, this is what sending would do."
        )
        + (" Events older than 7 days are left out." if d.totals["historical"] else "")
        + "</p>",
    ]
    rows: list[tuple[str, ...]] = [
        (escape(category_label(c, from_store=store)), str(d.totals[c])) for c in CATEGORIES
    ]
    out.append(html_table("Events by outcome", ("Outcome", "Events"), rows, numeric=1))
    out.append(series_figure(d, d.default, from_store=store))
    for g in ("hour", "day", "week"):
        if g != d.default and d.series[g].starts:
            figure = series_figure(d, g, from_store=store)
            out.append(f"<details><summary>Per {g}</summary>{figure}</details>")
    if d.untimed:
        out.append(
            f'<p class="note">{d.untimed} event(s) had no time (or one in the future) and are '
            "only in the totals.</p>"
        )
    out.append('<h3 id="errors-h">Errors and filtered events</h3>')
    if not d.errors:
        out.append("<p>None.</p>")
        return "".join(out)
    rows = [
        (
            escape(category_label(e.category, from_store=store)),
            escape(e.reason),
            escape(e.meta_code) or "-",
            str(e.count),
            escape(", ".join(e.stages)),
            "-"
            if e.last_seen is None
            else escape(datetime.fromtimestamp(e.last_seen, UTC).strftime("%Y-%m-%d %H:%M")),
            escape(e.fix)
            + ("" if not e.example else f"<br><small>e.g. {escape(e.example)}</small>"),
        )
        for e in d.errors
    ]
    head = ("Outcome", "Reason", "Meta code", "Events", "Stages", "Last seen (UTC)", "What to fix")
    out.append(html_table("Grouped by reason and Meta code, most frequent first", head, rows))
    return "".join(out)


def render_html(report: Report) -> str:
    """The whole page."""
    when = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = (
        ("fit", "Good fit for Conversion Leads", checks_section(report)),
        ("funnel", "Funnel", funnel_section(report)),
        ("delivery", "Event delivery", _delivery(report)),
    )
    nav = "".join(f'<li><a href="#{key}">{title}</a></li>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}" aria-labelledby="{key}-h">'
        f'<h2 id="{key}-h">{title}</h2>{html}</section>'
        for key, title, html in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>leadrelay: Conversion Leads report, pixel {escape(report.pixel_id)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>Conversion Leads report</h1><p>Pixel {escape(report.pixel_id)}: "
        f"{escape(report.source)}, {report.events} event(s). Generated {when}.</p>"
        f'<nav aria-label="Sections"><ul>{nav}</ul></nav></header>'
        f"<main>{body}</main>"
        '<footer><p class="note">Made by leadrelay from your own data; Meta\'s figures in Events '
        "Manager may differ (Meta also counts leads that never reached your CRM).</p></footer>"
        "</body></html>\n"
    )
