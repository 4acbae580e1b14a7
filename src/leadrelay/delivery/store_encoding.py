"""The encoding rules every store backend shares: payload bytes, notes, the PII policy for the
events as received.

Split out of ``store`` (house rule: modules under ~300 lines), which re-exports these names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

from leadrelay.delivery.encoded import EncodedPayload
from leadrelay.outcome import FieldNote, Payload

OriginalPolicy = Literal["keep", "redact", "drop"]
"""What to keep of the event as received: all of it, all but the values under ``user``, nothing."""

REDACTED: Final = "[redacted]"
_KEPT_USER_FIELDS: Final = frozenset({"consent_categories"})  # needed to explain consent filtering


def encode_payload(payload: Payload) -> tuple[bytes, bytes | None]:
    """The stored form of a payload: its ``data`` and its notes (``None`` if none) as JSON bytes.

    Raises ``TypeError`` (orjson's ``JSONEncodeError``) when ``data`` is not plain JSON.
    """
    notes = (
        orjson.dumps([[n.field, n.reason, n.message] for n in payload.notes])
        if payload.notes
        else None
    )
    # A payload still encoded (claimed, or mapped in another process) is stored as those very
    # bytes: they are what orjson.dumps(payload.data) gives (see ``EncodedPayload``).
    if type(payload) is EncodedPayload and payload.body is not None:
        return payload.body, notes
    return orjson.dumps(payload.data), notes


_EVENT_TIME: Final = re.compile(rb'"event_time":-?[0-9]+')


def same_but_time(body: bytes, refused: bytes) -> bool:
    """Whether a payload (stored JSON, ``encode_payload``) is the one Meta refused but for its
    event_time: the same event read again, its time the clock's when it has none of its own (a
    payload is sent again in place of a refused one only when the event was changed at its
    source, ``Store.add``). The lua twin is ``lua_queue``'s ``same_but_time``."""
    return body == refused or _EVENT_TIME.sub(b"", body, 1) == _EVENT_TIME.sub(b"", refused, 1)


def decode_notes(blob: bytes | None) -> tuple[FieldNote, ...]:
    """The notes ``encode_payload`` stored."""
    if not blob:
        return ()
    return tuple(FieldNote(f, r, m) for f, r, m in orjson.loads(blob))


def redacted(original: Mapping[str, Any]) -> bool:
    """Whether an original was kept under ``redact`` (see ``keep_original``): its customer
    information is gone, and mapped again it would be sent as the word "[redacted]"."""
    user = original.get("user")
    if isinstance(user, Mapping):
        return any(value == REDACTED for value in user.values())
    return user == REDACTED


def keep_original(original: bytes | None, policy: OriginalPolicy) -> bytes | None:
    """What the PII policy lets the store keep of an event as received.

    ``redact`` replaces every value under ``user`` with ``"[redacted]"`` except
    ``consent_categories`` (needed to explain consent filtering). An original that is not a JSON
    object cannot be redacted safely and is not kept under ``redact``.
    """
    if original is None or policy == "drop":
        return None
    if policy == "keep":
        return original
    try:
        event = orjson.loads(original)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    user = event.get("user")
    if isinstance(user, dict):
        event["user"] = {k: v if k in _KEPT_USER_FIELDS else REDACTED for k, v in user.items()}
    elif user is not None:
        event["user"] = REDACTED
    return orjson.dumps(event)
