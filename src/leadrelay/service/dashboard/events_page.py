"""``GET /dashboard/events`` (a filtered list) and ``GET /dashboard/events/{id}`` (one event).

One event shows what happened to it, what to fix, Meta's answer, the request sent to Meta and the
event as received, with customer information only as hashes or redacted (``redact``).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Final
from urllib.parse import urlencode

from leadrelay.delivery.store import EventRecord, Store
from leadrelay.diagnostics.fixes import what_to_fix
from leadrelay.diagnostics.html import html_table
from leadrelay.outcome import State
from leadrelay.scrub import scrub_text
from leadrelay.service.dashboard.delivery_page import STATES_OF
from leadrelay.service.dashboard.layout import BASE, json_block, kv_table, when
from leadrelay.service.dashboard.redact import redact_original, redact_payload, scrub, scrub_note

PAGE: Final = 50


def meta_code(code: int | None, subcode: int | None) -> str:
    """Meta's code as Events Manager shows it (``100/2804036``), or empty."""
    if code is None:
        return ""
    return f"{code}/{subcode}" if subcode else str(code)


def outcome_text(r: EventRecord) -> str:
    """What became of the event, in a sentence."""
    code = meta_code(r.code, r.subcode)
    match r.state:
        case State.DELIVERED:
            return "Delivered to Meta."
        case State.REJECTED if code:
            return f"Rejected by Meta (code {code})."
        case State.REJECTED:
            return "Rejected by leadrelay before sending: Meta never saw it."
        case State.FILTERED:
            return "Filtered: not for Meta by your settings (not an error)."
        case State.EXPIRED:
            return "Expired: it passed Meta's 7-day window before it could be delivered."
        case State.DEAD:
            return "Not delivered: retries ran out."
        case State.QUEUED:
            return "Waiting to be delivered."
        case _:
            return "Being delivered right now."


def _meta_answer(r: EventRecord) -> str:
    message = escape(scrub_text(r.message)) if r.message else "-"
    if r.code is not None or r.fbtrace_id is not None:
        rows = [
            ("Meta code", escape(meta_code(r.code, r.subcode)) or "-"),
            ("Code", "-" if r.code is None else str(r.code)),
            ("Subcode", "-" if r.subcode is None else str(r.subcode)),
            ("Message", message),
            ("fbtrace_id", escape(r.fbtrace_id or "-")),
        ]
        out = kv_table("Code and message from Meta", rows)
        if r.response:
            out += json_block(scrub(r.response), "More of Meta's answer")
        return out
    if r.state == State.DELIVERED:
        return "<p>Meta accepted the request that carried this event.</p>"
    if r.state in (State.QUEUED, State.IN_FLIGHT):
        return "<p>No answer yet: the event has not been delivered.</p>"
    return "<p>None: the event was not sent to Meta.</p>"


def _request(r: EventRecord) -> str:
    if r.payload is None:
        if r.state in (State.REJECTED, State.FILTERED) and r.code is None:
            return "<p>None: leadrelay did not make a payload of this event.</p>"
        return "<p>Not kept: the payload was dropped after delivery (retention).</p>"
    out = (
        '<p class="note">This event as it goes in the <code>data</code> array of the request '
        "to Meta (the other events of its batch are left out). Customer information is "
        "SHA-256 hashed.</p>" + json_block({"data": [redact_payload(r.payload)]}, "Request payload")
    )
    if r.notes:
        rows = [
            (escape(n.field), escape(n.reason), escape(scrub_note(n.field, n.message)))
            for n in r.notes
        ]
        out += html_table("Fields left out of the payload", ("Field", "Reason", "Why"), rows)
    return out


def _original(r: EventRecord) -> str:
    if r.original is None:
        return (
            "<p>Not kept: <code>store.originals</code> is <code>drop</code>, or it was dropped "
            "after delivery (retention).</p>"
        )
    return (
        '<p class="note">Values under <code>user</code> (except consent categories) and '
        "anything that looks like an email, a phone number or an IP address are redacted.</p>"
        + json_block(redact_original(r.original), "Original event, redacted")
    )


def render_event(r: EventRecord) -> str:
    """The page body for one stored event."""
    code = meta_code(r.code, r.subcode)
    fix = ""
    if r.reason and r.state != State.DELIVERED:
        fix = (
            '<section aria-labelledby="fix-h"><h2 id="fix-h">What to fix</h2>'
            f"<p>{escape(what_to_fix(r.reason, r.code, r.subcode))}</p></section>"
        )
    details = [
        ("Outcome", escape(r.state.value)),
        ("Reason", escape(r.reason or "-")),
        ("Meta code", escape(code) or "-"),
        ("Field", escape(r.field or "-")),
        ("Event id", f"<code>{escape(scrub_text(r.key)) or '-'}</code>"),
        ("CRM event", escape(r.source_event or "-")),
        ("Facebook event", escape(r.event_name or "-")),
        ("Lead id", "-" if r.lead_id is None else str(r.lead_id)),
        ("Event time", escape(when(r.event_time))),
        ("Received", escape(when(r.received_at))),
        ("Last update", escape(when(r.updated_at))),
        ("Requests that carried it", str(r.attempts)),
    ]
    if r.message and r.code is None:  # else it is Meta's, in Meta's answer below
        details.insert(4, ("Message", escape(scrub_text(r.message))))
    if r.next_attempt_at is not None and r.state == State.QUEUED:
        details.append(("Next attempt", escape(when(r.next_attempt_at))))
    sections = (
        ("answer", "Meta's answer", _meta_answer(r)),
        ("request", "Request sent to Meta", _request(r)),
        ("original", "Original event as received", _original(r)),
    )
    return (
        f'<p><a href="{BASE}">← Event Delivery</a></p>'
        f"<h1>Event #{r.id}</h1><p><strong>{escape(outcome_text(r))}</strong></p>"
        + fix
        + kv_table("What happened", details)
        + "".join(
            f'<section aria-labelledby="{k}-h"><h2 id="{k}-h">{t}</h2>{html}</section>'
            for k, t, html in sections
        )
    )


def list_events(
    store: Store,
    *,
    category: str | None,
    reason: str | None,
    code: int | None,
    subcode: int | None,
    after: int | None,
) -> tuple[list[EventRecord], int | None]:
    """Up to ``PAGE`` matching events after id ``after``, and the id to page on from (or None)."""
    states = STATES_OF.get(category) if category else None
    # One more than a page: a page of exactly PAGE events has no next page to link to.
    rows = store.events(states=states, reason=reason or None, limit=PAGE + 1, after_id=after)
    more = rows[PAGE - 1].id if len(rows) > PAGE else None
    rows = rows[:PAGE]
    if code is not None:
        rows = [r for r in rows if (r.code, r.subcode) == (code, subcode)]
    return rows, more


def render_list(rows: Sequence[EventRecord], *, filters: dict[str, str], more: int | None) -> str:
    """The page body for a list of events."""
    what = ", ".join(f"{k} {v}" for k, v in filters.items()) or "all events"
    out = [f'<p><a href="{BASE}">← Event Delivery</a></p><h1>Events</h1>']
    all_link = f' <a href="{BASE}/events">Show all events</a>.' if filters else ""
    out.append(f"<p>Showing {escape(what)}.{all_link}</p>")
    if not rows:
        out.append("<p>No event matches on this page.</p>")
    else:
        table_rows = [
            (
                f'<a href="{BASE}/events/{r.id}">#{r.id}</a>',
                f"<code>{escape(scrub_text(r.key)) or '-'}</code>",
                escape(r.source_event or "-"),
                escape(r.event_name or "-"),
                "-" if r.lead_id is None else str(r.lead_id),
                escape(r.state.value),
                escape(r.reason or "-"),
                escape(meta_code(r.code, r.subcode)) or "-",
                escape(when(r.updated_at)),
            )
            for r in rows
        ]
        head = (
            "Event",
            "Event id",
            "CRM event",
            "Facebook event",
            "Lead id",
            "Outcome",
            "Reason",
            "Meta code",
            "Last update",
        )
        out.append(html_table("Stored events, oldest first", head, table_rows))
    if more is not None:
        query = urlencode({**filters, "after": str(more)})
        out.append(f'<p><a href="{BASE}/events?{escape(query)}">Next {PAGE} events →</a></p>')
    return "".join(out)
