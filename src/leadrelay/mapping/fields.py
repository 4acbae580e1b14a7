"""The Facebook side of the mapping: which fields exist, how each is treated, the prebuilt table.

This is data, not code (the Segment "destination is data" idea): the prebuilt mapping of the
Commanders Act "Facebook Lead Ads" destination is the ``PREBUILT`` table below, written in the same
expression language users write in ``[smart_mapping]``, so every row can be shown, explained and
overridden the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from leadrelay.meta.normalize import HASHED_FIELDS


class Treatment(StrEnum):
    """How a mapped value becomes a Facebook value."""

    EVENT_TIME = "event_time"  # integer seconds from ms/s/ISO, checked against Meta's window
    LEAD_ID = "lead_id"  # 15-17 digits, exact JSON integer, never hashed
    HASHED = "hashed"  # normalized as Meta specifies, then SHA-256 (lists allowed)
    TEXT = "text"  # sent as a trimmed string, never hashed (fbc, IP, user agent, event_id)
    NATIVE = "native"  # sent with its own JSON type (custom_data values)


@dataclass(frozen=True, slots=True)
class Row:
    """One prebuilt field mapping: Facebook path (relative to ``data.0``), default source, label."""

    target: str
    source: str
    label: str


# Fields the Conversion Leads integration requires with fixed values; no mapping may change them.
FIXED: Final[dict[str, str]] = {
    "action_source": "system_generated",
    "custom_data.event_source": "crm",
}

# The prebuilt mapping. ``${lead_id}`` and ``${lead_event_source}`` stand for the settings of
# those names; every other source is an expression over the incoming event.
PREBUILT: Final[tuple[Row, ...]] = (
    Row("event_time", "{{context.event_timestamp}}", "Event Timestamp"),
    Row("event_id", "{{context.event_id}}", "Event Id"),
    Row("user_data.lead_id", "${lead_id}", "Lead Id"),
    Row("custom_data.lead_event_source", "${lead_event_source}", "Lead Event Source"),
    Row("user_data.em", "=COALESCE(user.email, user.email_sha256)", "User Email"),
    Row("user_data.ph", "=COALESCE(user.phone, user.phone_sha256)", "User Phone"),
    Row("user_data.external_id", "=COALESCE(user.id, user.id_sha256)", "User Id"),
    Row("user_data.fn", "=COALESCE(user.firstname, user.firstname_sha256)", "User First Name"),
    Row("user_data.ln", "=COALESCE(user.lastname, user.lastname_sha256)", "User Last Name"),
    Row("user_data.db", "=COALESCE(user.birthdate, user.birthdate_sha256)", "User Birthdate"),
    Row("user_data.ge", "=COALESCE(user.gender, user.gender_sha256)", "User Gender"),
    Row("user_data.ct", "=COALESCE(user.city, user.city_sha256)", "User City"),
    Row(
        "user_data.st",
        "=COALESCE(user.state_short, user.state, user.state_sha256)",
        "User State",
    ),
    Row("user_data.zp", "=COALESCE(user.zipcode, user.zipcode_sha256)", "User Zipcode"),
    Row("user_data.country", "=COALESCE(user.country, user.country_sha256)", "User Country"),
    Row("user_data.fbc", "{{partners.facebook.fbc}}", "Click Id"),
    Row("user_data.client_ip_address", "{{context.device.ip}}", "User IP Address"),
    Row("user_data.client_user_agent", "{{context.device.user_agent}}", "User Agent"),
)

# user_data keys Meta documents that are sent as given (never hashed).
PLAIN_USER_DATA: Final = frozenset(
    {
        "fbc",
        "fbp",
        "client_ip_address",
        "client_user_agent",
        "subscription_id",
        "fb_login_id",
        "anon_id",
        "madid",
        "page_id",
        "page_scoped_user_id",
        "ctwa_clid",
        "ig_account_id",
        "ig_sid",
    }
)

# Top-level server-event keys a user may point at their own data.
_TOP_LEVEL: Final[dict[str, Treatment]] = {
    "event_time": Treatment.EVENT_TIME,
    "event_id": Treatment.TEXT,
    "event_source_url": Treatment.TEXT,
    "opt_out": Treatment.NATIVE,
    "data_processing_options": Treatment.NATIVE,
    "data_processing_options_country": Treatment.NATIVE,
    "data_processing_options_state": Treatment.NATIVE,
}


class TargetError(ValueError):
    """A Facebook field path no mapping may write to, with a hint."""


def treatment(target: str) -> Treatment:
    """How values for ``target`` are treated; ``TargetError`` for paths Meta would not take."""
    if target in FIXED:
        raise TargetError(
            f"{target} is always {FIXED[target]!r} for Conversion Leads; it cannot be mapped"
        )
    if target == "event_name":
        raise TargetError("event_name comes from [mapping]; map your event names there")
    if target == "action_source":
        raise TargetError("action_source is always 'system_generated' for Conversion Leads")
    head, _, rest = target.partition(".")
    if head in _TOP_LEVEL and not rest:
        return _TOP_LEVEL[head]
    if head == "user_data" and rest:
        if rest == "lead_id":
            return Treatment.LEAD_ID
        if rest in HASHED_FIELDS:
            return Treatment.HASHED
        if rest in PLAIN_USER_DATA:
            return Treatment.TEXT
        known = sorted(HASHED_FIELDS | PLAIN_USER_DATA | {"lead_id"})
        raise TargetError(
            f"unknown customer information key {rest!r}; Meta's keys are {', '.join(known)}"
        )
    if head == "custom_data" and rest and "." not in rest:
        # The name of the CRM is text to Meta (a number is its digits); the rest go as they are.
        return Treatment.TEXT if rest == "lead_event_source" else Treatment.NATIVE
    raise TargetError(
        f"cannot map {target!r}: use event_time, event_id, event_source_url, user_data.<key> "
        "or custom_data.<name>"
    )
