"""What the dashboard may show of an event: customer information only as hashes, or redacted.

Whatever the store kept (``store.originals = "keep"`` keeps everything), pages go through here:

- the original event: every value under ``user`` except ``consent_categories`` (needed to
  explain consent filtering), every value under a key that names customer information
  (``email``, ``phone``, ``ip``...) unless it is a SHA-256 digest, and anything in any other
  text that looks like an email address or a phone number;
- the request payload: it holds customer information only as SHA-256 digests already; the
  plain ``user_data`` values Meta takes unhashed (``client_ip_address``) are redacted, and
  ``lead_id``, ``fbc``, ``fbp`` and the user agent are kept (they identify the lead or the click,
  and are what a user needs to check);
- messages: emails and phone numbers in them are redacted, and in the notes of customer
  information left out of a payload, every value they quote.

Emails and phone numbers in text are found by ``leadrelay.scrub`` (shared with the diagnostics
report).
"""

from __future__ import annotations

import re
from typing import Any, Final

from leadrelay.delivery.store import REDACTED
from leadrelay.scrub import scrub_text

_KEPT_USER: Final = frozenset({"consent_categories"})
_KEPT_USER_DATA: Final = frozenset({"lead_id", "fbc", "fbp", "client_user_agent"})
_PII_KEY_PARTS: Final = (
    "email",
    "phone",
    "mobile",
    "firstname",
    "lastname",
    "surname",
    "fullname",
    "birth",
    "address",
    "street",
    "zipcode",
    "postcode",
    "postal",
)
_PII_KEYS: Final = frozenset({"ip", "tel", "zip", "dob", "ssn", "fn", "ln", "em", "ph"})
_NOT_KEY: Final = re.compile(r"[^a-z0-9]")
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
# A value as field messages quote it (repr: in single quotes, or double when it holds one).
_QUOTED: Final = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _pii_key(key: str) -> bool:
    flat = _NOT_KEY.sub("", key.lower())
    return flat in _PII_KEYS or any(part in flat for part in _PII_KEY_PARTS)


def scrub_note(field: str, message: str) -> str:
    """The message of a field left out of a payload. For customer information (``user_data``
    but for the keys kept as they are) every value it quotes is redacted, whatever it looks
    like ("06-12-34-56-78", "jane at example dot com"); then ``scrub_text``."""
    section, _, key = field.partition(".")
    if section == "user_data" and key not in _KEPT_USER_DATA:
        message = _QUOTED.sub(REDACTED, message)
    return scrub_text(message)


def scrub(value: Any) -> Any:
    """``scrub_text`` applied to every string in a JSON value."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    return value


def _hashed(value: Any) -> bool:
    if isinstance(value, str):
        return _DIGEST.fullmatch(value) is not None
    if isinstance(value, list):
        return bool(value) and all(_hashed(v) for v in value)
    return False


def _by_key(value: Any) -> Any:
    """Redact values under customer-information keys (unless hashed), scrub the rest."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if _pii_key(str(k)) and not _hashed(v) else _by_key(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_by_key(v) for v in value]
    return scrub(value)


def redact_original(event: Any) -> Any:
    """The event as received, safe to show (see the module docstring)."""
    if not isinstance(event, dict):
        return scrub(_by_key(event))
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key == "user":
            if isinstance(value, dict):
                out[key] = {k: v if k in _KEPT_USER else REDACTED for k, v in value.items()}
            else:
                out[key] = REDACTED
        else:
            out[key] = _by_key({key: value})[key]
    return out


def redact_payload(data: Any) -> Any:
    """A server event as sent to Meta, safe to show (see the module docstring)."""
    if not isinstance(data, dict):
        return scrub(data)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "user_data" and isinstance(value, dict):
            out[key] = {
                k: v if k in _KEPT_USER_DATA or _hashed(v) else REDACTED for k, v in value.items()
            }
        else:
            out[key] = scrub(value)
    return out
