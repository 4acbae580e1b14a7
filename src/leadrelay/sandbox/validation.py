"""Meta's per-event rules for a ``data`` array, all-or-nothing and fast.

``BatchValidator.validate`` stops at the first failing event and returns its ``GraphError``; the
caller then keeps nothing from the request, as Meta processes none of it. A passing batch yields
the warnings for the success body's ``messages``: events Meta accepts but does not use for
Conversion Leads (no ``custom_data.event_source == "crm"``, no ``lead_event_source``, an
``action_source`` other than ``system_generated``).

The loop is written for ~1000-event batches at several hundred thousand events per second: type
checks with ``type(x) is``, frozen lookup tables, one precompiled regex for the digests, and
strings built only on the failing path.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from leadrelay.mapping.fields import PLAIN_USER_DATA
from leadrelay.sandbox.errors import (
    BAD_FIELD,
    BAD_HASH,
    BAD_LEAD_ID,
    IN_FUTURE,
    NO_CUSTOMER_INFO,
    TOO_OLD,
    GraphError,
    event_error,
)

MAX_FUTURE_S: Final = 7 * 86400
ACTION_SOURCES: Final = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)
_LEAD_MIN: Final = 10**14  # smallest 15-digit number
_LEAD_MAX: Final = 10**17  # first 18-digit number
_is_sha256: Final = re.compile(r"[0-9a-f]{64}").fullmatch

# user_data keys Meta counts as customer information, by how the value is checked.
_HASHED, _LEAD, _TEXT, _PLAIN = 1, 2, 3, 4
_USER_KEYS: Final = {
    **dict.fromkeys(("em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country"), _HASHED),
    "lead_id": _LEAD,
    # Meta recommends hashing external_id but accepts it plain (its own SDK does not hash it).
    "external_id": _TEXT,
    **dict.fromkeys(PLAIN_USER_DATA, _PLAIN),
}


def _show(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _shape(value: Any) -> str:
    # Describes a would-be hash without echoing it: it may be raw PII.
    if isinstance(value, str):
        return f"a {len(value)}-character string"
    return "null" if value is None else f"a JSON {type(value).__name__}"


def _hash_error(index: int, key: str, value: Any) -> GraphError:
    return event_error(
        index,
        ("user_data", key),
        BAD_HASH,
        "Invalid Hashed Value",
        f"must be a SHA-256 digest (64 lowercase hex characters) or a list of them, "
        f"got {_shape(value)}",
    )


def _lead_error(index: int, value: Any, deleted: bool) -> GraphError:
    if deleted:
        detail = f"is a deleted or unknown lead ID ({value})"
    elif type(value) is int:
        detail = f"must have 15 to 17 digits, got {value} ({len(str(abs(value)))} digits)"
    else:
        detail = f"must be a JSON integer of 15 to 17 digits, got {_show(value)}"
    return event_error(index, ("user_data", "lead_id"), BAD_LEAD_ID, "Invalid Lead ID", detail)


def _field_error(index: int, path: tuple[str, ...], detail: str) -> GraphError:
    return event_error(index, path, BAD_FIELD, "Invalid Event Parameter", detail)


def _time_error(index: int, value: int, now: float, max_age_s: int) -> GraphError:
    if value < now - max_age_s:
        return event_error(
            index,
            ("event_time",),
            TOO_OLD,
            "Event Timestamp Too Old",
            f"is {int(now - value)} seconds old ({value}); events must be sent within "
            f"{max_age_s} seconds of when they occurred",
        )
    hint = " (it looks like milliseconds; send seconds)" if value > 10**11 else ""
    return event_error(
        index,
        ("event_time",),
        IN_FUTURE,
        "Event Timestamp In The Future",
        f"is {int(value - now)} seconds in the future ({value}){hint}",
    )


def _check_user_data(
    index: int, user: dict[str, Any], deleted: frozenset[int]
) -> GraphError | None:
    has_info = False
    for key, value in user.items():
        kind = _USER_KEYS.get(key)
        if kind is None:
            continue
        if kind == _HASHED:
            if type(value) is str:
                if _is_sha256(value) is None:
                    return _hash_error(index, key, value)
            elif type(value) is list:
                for item in value:
                    if type(item) is not str or _is_sha256(item) is None:
                        return _hash_error(index, key, item)
                if not value:
                    continue
            else:
                return _hash_error(index, key, value)
        elif kind == _LEAD:
            if type(value) is not int or not _LEAD_MIN <= value < _LEAD_MAX:
                return _lead_error(index, value, deleted=False)
            if value in deleted:
                return _lead_error(index, value, deleted=True)
        elif kind == _TEXT:
            if type(value) is list:
                if not all(type(item) is str for item in value):
                    return _field_error(index, ("user_data", key), "must be a string or strings")
                if not value:
                    continue
            elif type(value) is not str:
                return _field_error(index, ("user_data", key), "must be a string or strings")
        elif value is None or value == "":
            continue
        has_info = True
    if has_info:
        return None
    return event_error(
        index,
        ("user_data",),
        NO_CUSTOMER_INFO,
        "Missing Customer Information",
        "must contain at least one customer information parameter (lead_id, em, ph, ...)",
    )


def _decode_event(raw: Any) -> dict[str, Any] | None:
    # The form shape may carry each event as a JSON-encoded string (list<JSON-encoded string>).
    if type(raw) is str:
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if type(decoded) is dict:
            return decoded
    return None


class BatchValidator:
    """Checks ``data`` arrays against Meta's rules; compiled once per app from its options."""

    def __init__(self, *, max_age_s: int, deleted_lead_ids: frozenset[int]) -> None:
        self._max_age_s = max_age_s
        self._deleted = deleted_lead_ids

    def validate(self, data: list[Any], now: float) -> GraphError | list[str]:
        """Return the first failing event's error, or the success warnings.

        Events sent as JSON-encoded strings are decoded in place.
        """
        oldest = now - self._max_age_s
        newest = now + MAX_FUTURE_S
        deleted = self._deleted
        sources = ACTION_SOURCES
        check_user = _check_user_data
        no_crm: list[int] = []
        no_source: list[int] = []
        not_system: list[int] = []
        for index, event in enumerate(data):
            if type(event) is not dict:
                decoded = _decode_event(event)
                if decoded is None:
                    return _field_error(index, (), f"must be a JSON object, got {_show(event)}")
                data[index] = event = decoded
            name = event.get("event_name")
            if type(name) is not str or not name:
                return _field_error(
                    index, ("event_name",), f"must be a non-empty string, got {_show(name)}"
                )
            moment = event.get("event_time")
            if type(moment) is not int:
                return _field_error(
                    index,
                    ("event_time",),
                    f"must be an integer Unix time in seconds, got {_show(moment)}",
                )
            if moment < oldest or moment > newest:
                return _time_error(index, moment, now, self._max_age_s)
            source = event.get("action_source")
            if type(source) is not str or source not in sources:
                return _field_error(
                    index,
                    ("action_source",),
                    f"must be one of {', '.join(sorted(sources))}, got {_show(source)}",
                )
            if source != "system_generated":
                not_system.append(index)
            user = event.get("user_data")
            if type(user) is not dict:
                return _field_error(index, ("user_data",), f"must be an object, got {_show(user)}")
            problem = check_user(index, user, deleted)
            if problem is not None:
                return problem
            custom = event.get("custom_data")
            if type(custom) is dict:
                if custom.get("event_source") != "crm":
                    no_crm.append(index)
                lead_source = custom.get("lead_event_source")
                if type(lead_source) is not str or not lead_source:
                    no_source.append(index)
            elif custom is None:
                no_crm.append(index)
                no_source.append(index)
            else:
                return _field_error(
                    index, ("custom_data",), f"must be an object, got {_show(custom)}"
                )
        return _warnings(len(data), no_crm, no_source, not_system)


def _warnings(
    total: int, no_crm: list[int], no_source: list[int], not_system: list[int]
) -> list[str]:
    messages = []
    for indexes, what in (
        (no_crm, 'custom_data.event_source is not "crm"'),
        (no_source, "custom_data.lead_event_source is missing or empty"),
        (not_system, 'action_source is not "system_generated"'),
    ):
        if indexes:
            messages.append(
                f"{len(indexes)} of {total} events: {what} (first: data[{indexes[0]}]); "
                "Meta accepts them but does not use them as Conversion Leads events"
            )
    return messages
