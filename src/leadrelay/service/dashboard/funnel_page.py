"""``GET /dashboard/funnel``: the funnel and Meta's "good fit" checks, from the event store.

The figures and their rendering are the ``leadrelay report`` ones (``build_report``, the HTML
report's sections), so the page and the report never disagree; the report is ``reports``' (the
events stored last, made anew at most once a minute).
"""

from __future__ import annotations

from html import escape

from leadrelay.diagnostics.html import checks_section, funnel_section
from leadrelay.diagnostics.report import Report
from leadrelay.service.dashboard.layout import when
from leadrelay.service.dashboard.reports import WHOLE


def _partial(report: Report) -> str:
    """What to run for the checks over every stored event, when the page covers fewer."""
    if report.source == WHOLE:
        return ""
    return (
        '<p class="note">The checks look at up to 30 days of events; this page reads the '
        f"{report.events} stored last (a page view must stay cheap however large the store). "
        "<code>leadrelay report --config &lt;your config&gt;</code> reads them all.</p>"
    )


def render(report: Report) -> str:
    """The page body."""
    f = report.funnel
    # The stage table carries the stage-to-stage conversions: show it, not only the chart.
    funnel = funnel_section(report).replace("<details>", "<details open>", 1)
    return (
        "<h1>Funnel</h1>"
        f"<p>{f.leads} lead(s) with a stage event, from the {report.events} event(s) in "
        f"{escape(report.source)}, as of {escape(when(report.generated_at))}. Stages are in the "
        "order of your <code>[mapping]</code>; each lead counts once per stage.</p>"
        f"{_partial(report)}"
        '<section aria-labelledby="fit-h"><h2 id="fit-h">Good fit for Conversion Leads</h2>'
        '<p class="note">Each check says pass, fail or not enough data yet, and why.</p>'
        f"{checks_section(report)}</section>"
        f'<section aria-labelledby="stages-h"><h2 id="stages-h">Stages</h2>{funnel}</section>'
    )
