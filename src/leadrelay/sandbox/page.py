"""The ``GET /_sandbox`` page: counters, errors by code and the last requests, in plain HTML."""

from __future__ import annotations

import time
from html import escape

from leadrelay.sandbox.state import SandboxState

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f3f3f3}.bad{color:#b00020}"
)


def _row(*cells: object, bad: bool = False) -> str:
    attr = ' class="bad"' if bad else ""
    return f"<tr{attr}>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in cells) + "</tr>"


def render_page(state: SandboxState) -> str:
    """Render the page. Everything shown is escaped; no token is ever part of the state."""
    records = state.recent_requests()
    counts = sorted(state.errors_by_code.items())
    error_rows = "".join(_row(key, count, bad=True) for key, count in counts) or _row("none", 0)
    tests = sorted(state.test_event_codes.items())
    test_rows = "".join(_row(code, count) for code, count in tests) or _row("none", 0)
    request_rows = "".join(
        _row(
            time.strftime("%H:%M:%S", time.gmtime(record.at)),
            record.pixel_id,
            record.status or "dropped",
            "-" if record.events is None else record.events,
            record.error or "",
            bad=record.error is not None,
        )
        for record in reversed(records)
    ) or _row("no requests yet", "", "", "", "")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>leadrelay sandbox</title>"
        f"<style>{_STYLE}</style></head><body><h1>leadrelay sandbox</h1>"
        "<p>A local stand-in for Meta's Conversions API.</p>"
        "<table><tr><th>requests</th><th>events received</th></tr>"
        f"{_row(state.requests, state.events_received)}</table>"
        "<h2>Errors by code</h2><table><tr><th>code</th><th>count</th></tr>"
        f"{error_rows}</table>"
        "<h2>Events by test_event_code</h2><table><tr><th>code</th><th>events</th></tr>"
        f"{test_rows}</table>"
        "<h2>Last 20 requests (newest first, UTC)</h2><table><tr><th>time</th><th>pixel</th>"
        f"<th>status</th><th>events</th><th>error</th></tr>{request_rows}</table>"
        "</body></html>"
    )
