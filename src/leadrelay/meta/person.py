"""Rules for the fields about the person: email, first and last names, gender, external_id.

Split out of ``normalize`` (house rule: modules under ~300 lines), which compiles them per field
and re-exports what callers use. Each rule takes the trimmed, non-empty text of a value (and the
value, for messages) and returns what Meta hashes, or raises ``NormalizeError``.
"""

from __future__ import annotations

import re
from typing import Any, Final

from leadrelay.meta.field_rules import (
    INVISIBLE,
    PUNCTUATION,
    NormalizeError,
    TextRule,
    clean,
    emptied,
    lower,
    nfc,
    visible,
)
from leadrelay.meta.field_rules import show as _show

# Not "mailto:" first nor ">" last: a wrapped address (see ``_unwrapped``). Checked there, not
# with more characters refused all along: each one more made every address 20% slower to match.
_EMAIL: Final = re.compile(r"(?!mailto:)[^@]+@[^@.][^@]*\.[^@.>]+")
# What mail clients and exports wrap an address in: "Jane Doe <jane@example.com>", "mailto:".
_WRAPPED: Final = re.compile(r"(?:.*<(?P<inside>[^<>]*)>|mailto:(?P<after>.*))", re.IGNORECASE)


def email_rule(text: str, value: Any, region: str | None) -> str:
    """The ``em`` rule: the address without whitespace, lower case, composed (NFC)."""
    # Text without whitespace splits into [text] and joins back into text (no copies): cheaper
    # than looking for whitespace first, which isprintable() does with a look-up per character.
    email = lower("".join(text.split()))
    if not email.isascii():
        email = nfc("NFC", email.translate(INVISIBLE))
    if _EMAIL.fullmatch(email) is None:
        return _unwrapped(email, value)
    return email


def _unwrapped(email: str, value: Any) -> str:
    """The address in "Jane Doe <jane@example.com>" or "mailto:jane@example.com", or one that
    ends with the dot of a sentence; else the error."""
    wrapped = _WRAPPED.fullmatch(email)
    inner = (wrapped["inside"] or wrapped["after"] or "") if wrapped else email.rstrip(".")
    if inner != email and _EMAIL.fullmatch(inner) is not None:
        return inner
    raise NormalizeError(
        "invalid_email", f"email {_show(value)} is not an address like name@example.com"
    )


def name_rule(label: str) -> TextRule:
    """The ``fn``/``ln`` rule: lower case, no punctuation or symbols, spaces squeezed."""

    def normalize(text: str, value: Any, region: str | None) -> str:
        lowered = lower(text)
        # Letters only (most names): nothing to delete, no spaces to squeeze.
        if lowered.isalpha():
            return lowered if lowered.isascii() else nfc("NFC", lowered)
        # Letters and hyphens (double-barrelled names): the hyphens are all clean() deletes.
        joined = lowered.replace("-", "")
        if joined.isalpha():
            return joined if joined.isascii() else nfc("NFC", joined)
        name = " ".join(clean(lowered, PUNCTUATION).split())
        if not name:
            raise emptied(label, value)
        return name

    return normalize


# French forms included: Commanders Act's customers often keep "H"/"F" (homme/femme).
# And the words of the main European markets, and titles (a salutation field mapped to gender).
# Not Spanish "M" (mujer): "M" is male in every other CRM.
_GENDERS: Final = {
    **dict.fromkeys(
        (
            *("f", "female", "woman", "w", "femme", "féminin", "feminin", "mme", "mlle"),
            *("mrs", "ms", "miss", "frau", "weiblich", "mujer", "femenino", "feminino"),
            *("femmina", "donna", "vrouw"),
        ),
        "f",
    ),
    **dict.fromkeys(
        (
            *("m", "male", "man", "h", "homme", "masculin", "m.", "mr", "herr", "männlich"),
            *("maennlich", "hombre", "masculino", "maschio", "uomo"),
        ),
        "m",
    ),
}


def gender_rule(text: str, value: Any, region: str | None) -> str:
    """The ``ge`` rule: ``f`` or ``m``."""
    gender = _GENDERS.get(lower(text)) or _GENDERS.get(lower(visible(text)).rstrip("."))
    if gender is None:
        raise NormalizeError(
            "invalid_gender",
            f"gender {_show(value)} is not one of f, m, female, male (nor woman, man, Mrs, Mr, "
            "or their French, German, Spanish, Italian, Portuguese or Dutch words)",
        )
    return gender


def external_id_rule(text: str, value: Any, region: str | None) -> str:
    """The ``external_id`` rule: the text as it is (trimmed by the caller)."""
    return text
