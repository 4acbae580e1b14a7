"""What to fix, for every reason an event is not delivered: ours, and Meta's codes.

Meta's errors are looked up by ``code/subcode``, then by ``code`` (reference 3.3): their texts are
localized and change, the codes do not. Our reasons are the ones ``Mapper.map``, the dispatcher and
the store record (see README "Outcomes").
"""

from __future__ import annotations

from typing import Final

_DAILY: Final = "Send stage changes as they happen (at least daily)"

OUR_FIXES: Final[dict[str, str]] = {
    "missing_lead_id": (
        "The event has no lead id. Store Meta's Lead ID (15-17 digits) in the CRM for leads from "
        "Lead Ads and point the lead_id setting at it (e.g. {{facebook_lead_id}}); leave other "
        "leads' events out of [mapping]."
    ),
    "invalid_lead_id": (
        "The lead id is not 15-17 digits. Send Meta's Lead ID exactly as Lead Ads gives it, as a "
        "string or an integer (a floating-point number loses digits), and check that lead_id "
        "reads Meta's id, not the CRM's own id."
    ),
    "event_time_too_old": (
        f"The event is more than 7 days old; Meta refuses it. {_DAILY}; do not rewrite "
        "event_time to backfill (Meta may discard all of it)."
    ),
    "event_time_in_future": (
        "event_time is more than a minute ahead. Check the CRM clock, the time zone and the unit "
        "of context.event_timestamp (milliseconds or seconds)."
    ),
    "invalid_event_time": (
        "context.event_timestamp cannot be read as a time. Send milliseconds or seconds since "
        "1970, or ISO-8601 with a time zone."
    ),
    "missing_event_name": "The event has no event_name. Set it in the CRM export or tag.",
    "empty_event_name": (
        "The [mapping] row for this event is an expression that gave no value (e.g. "
        "{{crm_stage}} is missing). Fill that property, or map the event to a fixed stage name."
    ),
    "unreadable": (
        "The record is not a JSON object (or a CSV row that cannot be read). Fix the export; "
        "{example} says where."
    ),
    "unmapped": (
        "Not an error: the event name is not in [mapping]. If it is a lead stage, add a row "
        '(your_event = "Facebook stage name").'
    ),
    "consent": "Not an error: the user did not grant the category set in consent_category.",
    "expired": (
        "The event passed Meta's 7-day window before it could be sent (a backlog or a long "
        "pause). Keep delivery running and fix what stopped it (see the other rows)."
    ),
    "poison": (
        "Handed out queue.max_deliveries times without a result: each process that took it "
        "died or was stopped before recording one (it may crash them). Check the workers' logs "
        "around its event_id, then replay it."
    ),
    "retries_exhausted": (
        "Meta or the network kept failing until the retry budget ran out. A running serve or "
        "worker tries such events again by itself, later and later (queued, with their next "
        "attempt); after a send they are dead letters: check connectivity and Meta's status, "
        "then replay them. Raise delivery.max_retry_s if outages last longer."
    ),
    "paused_auth": (
        "Delivery is paused: Meta refused the access token, a permission or the endpoint. "
        "For a token, generate a new one for the dataset in Events Manager and update "
        "access_token; for an endpoint (Meta's code 2500 or 2635, HTTP 404), fix graph_url and "
        "api_version. Then reload or restart; the events stay queued."
    ),
    "unencodable": (
        "The payload cannot be encoded as JSON (e.g. a NaN number). Check the smart_mapping "
        "expression that produced the value."
    ),
}

HISTORY_FIX: Final = (
    "Expected in an export of the past: these events show the funnel but are too old to send. "
    f"Do not rewrite event_time to backfill; once live, {_DAILY[0].lower() + _DAILY[1:]}."
)
"""For events of a file older than Meta's 7-day window (the ``historical`` category)."""

META_FIXES: Final[dict[str, str]] = {
    "100/2804036": (
        "Meta does not accept this lead id (meaning reported by third parties): check that it is "
        "a Lead ID from this dataset's Lead Ads forms, not a CRM id or a lead of another account."
    ),
    "100/2804003": (
        f"Meta says the event is older than 7 days. {_DAILY}; check the CRM clock and time zone."
    ),
    "100/33": (
        "The pixel (dataset) does not exist or the token may not use it. Check pixel_id and that "
        "the token's system user has access to the dataset."
    ),
    "100": (
        "Meta refused a parameter of the event: {example} names it. Check the smart_mapping "
        "row that fills it."
    ),
    "190": (
        "The access token is invalid or expired. Generate a new one in Events Manager "
        "(Conversions API settings) and update access_token."
    ),
    "102": "The session is invalid. Generate a new access token and update access_token.",
    "200": (
        "Permission missing: the token's system user needs access to the dataset (Business "
        "settings > Data sources). Then restart delivery."
    ),
    "10": "Permission missing for this app or token. Check the token's permissions.",
    "368": (
        "Meta temporarily blocked the requests for a policy reason. Check Business Support "
        "Home; delivery waits before retrying."
    ),
    "1": "A temporary error at Meta; delivery retries. If it persists, check Meta's status.",
    "2": "Meta's service was temporarily down; delivery retries.",
}
_THROTTLE: Final = (
    "Meta's rate limit. Delivery backs off and retries; if it lasts, lower delivery.concurrency "
    "or raise delivery.batch_size so fewer requests are made."
)
_GENERIC_META: Final = "Meta refused the event: {example} gives Meta's message."


def what_to_fix(
    reason: str,
    code: int | None = None,
    subcode: int | None = None,
    *,
    example: str = "the example",
) -> str:
    """What a user should do about events with this reason (and Meta's code when Meta spoke);
    ``example`` says where the message of such an event is (``status`` shows none: it names
    the command that does)."""
    return _what_to_fix(reason, code, subcode).replace("{example}", example)


def _what_to_fix(reason: str, code: int | None, subcode: int | None) -> str:
    if code is not None:
        label = f"{code}/{subcode}" if subcode else str(code)
        meta = META_FIXES.get(label) or META_FIXES.get(str(code))
        if meta is None and 200 <= code < 300:
            meta = META_FIXES["200"]
        if meta is None and (code in (4, 17, 32, 613) or 80000 <= code <= 80014):
            meta = _THROTTLE
        ours = OUR_FIXES.get(reason)
        if ours is not None and reason != "expired":
            # retries_exhausted / paused_auth: our reason says what to do, Meta's code why.
            return ours if meta is None else f"{ours} Meta's code: {meta}"
        return meta or OUR_FIXES.get(reason, _GENERIC_META)
    return OUR_FIXES.get(reason) or (
        _GENERIC_META if reason.startswith("meta_") else "Its message says why: see {example}."
    )
