"""``GET /dashboard/funnel``: the funnel and Meta's "good fit" checks, from the event store.

The figures and their rendering are the ``leadrelay report`` ones (``build_report``, the HTML
report's sections), so the page and the report never disagree.
"""

from __future__ import annotations

from html import escape

from leadrelay.config import Settings
from leadrelay.delivery.store import Store
from leadrelay.diagnostics import sources
from leadrelay.diagnostics.html import checks_section, funnel_section
from leadrelay.diagnostics.report import Report, build_report
from leadrelay.service.dashboard.layout import when


def collect(store: Store, settings: Settings, now: float) -> Report:
    """The report over every stored event (blocking: run it in a thread)."""
    return build_report(
        sources.from_store(store),
        static=sources.static_stages(settings),
        now=now,
        from_store=True,
        source="the event store",
        pixel_id=settings.pixel_id,
    )


def render(report: Report) -> str:
    """The page body."""
    f = report.funnel
    # The stage table carries the stage-to-stage conversions: show it, not only the chart.
    funnel = funnel_section(report).replace("<details>", "<details open>", 1)
    return (
        "<h1>Funnel</h1>"
        f"<p>{f.leads} lead(s) with a stage event, from the {report.events} event(s) in the "
        f"store, as of {escape(when(report.generated_at))}. Stages are in the order of your "
        "<code>[mapping]</code>; each lead counts once per stage.</p>"
        '<section aria-labelledby="fit-h"><h2 id="fit-h">Good fit for Conversion Leads</h2>'
        '<p class="note">Each check says pass, fail or not enough data yet, and why.</p>'
        f"{checks_section(report)}</section>"
        f'<section aria-labelledby="stages-h"><h2 id="stages-h">Stages</h2>{funnel}</section>'
    )
