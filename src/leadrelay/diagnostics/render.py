"""The report in the terminal: rich tables for the good-fit checks, the funnel and delivery."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from leadrelay.diagnostics.delivery import CATEGORIES, DeliveryFigures
from leadrelay.diagnostics.goodfit import Status
from leadrelay.diagnostics.report import Report

STATUS_STYLE: Final = {
    Status.PASS: "bold green",
    Status.FAIL: "bold red",
    Status.NOT_ENOUGH_DATA: "yellow",
    Status.NOT_APPLICABLE: "dim",
}
HEALTH_STYLE: Final = {
    "sunny": "bold green",
    "cloudy": "yellow",
    "rainy": "bold yellow",
    "stormy": "bold red",
}
_LAST_BUCKETS: Final = 14


def category_label(category: str, *, from_store: bool) -> str:
    """How a delivery category is named for people (files were not sent: "would be sent")."""
    if category == "delivered" and not from_store:
        return "would be sent"
    if category == "historical":
        return "older than 7 days"
    return category.replace("_", " ")


def pct(value: float | None) -> str:
    """A share as a percentage, or a dash."""
    return "-" if value is None else f"{value * 100:.1f}%"


def bucket_label(start: int, granularity: str) -> str:
    """A bucket's start as people read it (UTC)."""
    when = datetime.fromtimestamp(start, UTC)
    if granularity == "hour":
        return when.strftime("%m-%d %H:00")
    if granularity == "week":
        return "week of " + when.strftime("%Y-%m-%d")
    return when.strftime("%Y-%m-%d")


def render_report(report: Report, console: Console) -> None:
    """Print the whole report."""
    when = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = Text("Conversion Leads report", "bold")
    header.append(
        f" for pixel {report.pixel_id}: {report.source}, {report.events} event(s), {when}"
    )
    console.print(header)
    _checks(report, console)
    _funnel(report, console)
    _delivery(report.delivery, console, from_store=report.from_store)


def _checks(report: Report, console: Console) -> None:
    table = Table(title="Good fit for Conversion Leads", header_style="bold", show_lines=True)
    for name in ("check", "Meta asks", "yours", "result", "why"):
        table.add_column(name, overflow="fold")
    for c in report.checks:
        table.add_row(
            Text(c.title),
            Text(c.meta_asks),
            Text(c.yours),
            Text(c.status.value, STATUS_STYLE[c.status]),
            Text(c.why),
        )
    console.print(table)


def _funnel(report: Report, console: Console) -> None:
    f = report.funnel
    table = Table(title="Funnel", header_style="bold")
    table.add_column("stage")
    for name in (
        "events",
        "leads",
        "from previous",
        "of first stage",
        "median days",
        f"within {f.criteria.window_days} d",
    ):
        table.add_column(name, justify="right")
    for s in f.stages:
        days = "-" if s.median_days is None else f"{s.median_days:.1f}"
        name = s.name if s.static else f"{s.name} (from data)"
        table.add_row(
            Text(name),
            str(s.events),
            str(s.leads),
            pct(s.conversion),
            pct(s.share_of_first),
            days,
            pct(s.rate_28d),
        )
    console.print(table)
    if f.historical:
        console.print(
            f"{f.historical} event(s) are older than Meta's 7-day window: they describe the "
            "funnel but cannot be sent now. Send new stage changes as they happen.",
            highlight=False,
        )


def _delivery(d: DeliveryFigures, console: Console, *, from_store: bool) -> None:
    title = "Event delivery" if from_store else "Event delivery (predicted: nothing sent yet)"
    console.print(Text(f"{title}: {d.health.text}", HEALTH_STYLE.get(d.health.label, "")))
    series = d.series[d.default]
    if series.starts:
        table = Table(title=f"Events per {d.default} (latest {_LAST_BUCKETS})", header_style="bold")
        table.add_column(d.default)
        shown = [c for c in CATEGORIES if d.totals[c]]
        for c in shown:
            table.add_column(category_label(c, from_store=from_store), justify="right")
        first = max(0, len(series.starts) - _LAST_BUCKETS)
        # The rows add up to the total: what came before the buckets shown, and the events with
        # no date to place them by (unreadable, repeats of an event_id), have rows of their own.
        earlier = {c: d.totals[c] - sum(series.counts[c][first:]) - d.undated[c] for c in shown}
        if any(earlier.values()):
            table.add_row("earlier", *(str(earlier[c]) for c in shown), style="dim")
        for i in range(first, len(series.starts)):
            table.add_row(
                bucket_label(series.starts[i], d.default),
                *(str(series.counts[c][i]) for c in shown),
            )
        if d.untimed:
            table.add_row("no date", *(str(d.undated[c]) for c in shown), style="dim")
        table.add_row("total", *(str(d.totals[c]) for c in shown), style="bold")
        console.print(table)
    if not d.errors:
        return
    table = Table(title="Errors and filtered events", header_style="bold", show_lines=True)
    for name in ("outcome", "reason", "Meta code", "events", "stages", "what to fix"):
        table.add_column(name, overflow="fold", justify="right" if name == "events" else "left")
    for e in d.errors:
        fix = Text(e.fix)
        if e.example:
            fix.append(f"\ne.g. {e.example}", "dim")
        table.add_row(
            category_label(e.category, from_store=from_store),
            Text(e.reason),
            e.meta_code,
            str(e.count),
            Text(", ".join(e.stages)),
            fix,
            style="cyan" if e.category == "filtered" else "red",
        )
    console.print(table)
