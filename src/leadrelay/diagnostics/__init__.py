"""Conversion Leads diagnostics: "is my CRM integration healthy and good enough?".

From event files (a CRM export, before going live) or from the event store, in one pass:

- the funnel (``funnel``): events per Facebook stage per day, leads per stage, conversions;
- Meta's "good fit" checks next to the user's figures (``goodfit``);
- Event Delivery (``delivery``): outcomes over time, a health label, errors with what to fix.

``run_report`` prints it all and writes a self-contained HTML page (``html``, ``svg``).
"""

from leadrelay.diagnostics.command import run_report
from leadrelay.diagnostics.delivery import DeliveryFigures, ErrorRow, Health, health
from leadrelay.diagnostics.funnel import Criteria, FunnelFigures, StageFigures, order_stages
from leadrelay.diagnostics.goodfit import Check, Status
from leadrelay.diagnostics.records import StageRecord
from leadrelay.diagnostics.report import Report, build_report

__all__ = [
    "Check",
    "Criteria",
    "DeliveryFigures",
    "ErrorRow",
    "FunnelFigures",
    "Health",
    "Report",
    "StageFigures",
    "StageRecord",
    "Status",
    "build_report",
    "health",
    "order_stages",
    "run_report",
]
