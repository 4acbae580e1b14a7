"""The contract between ``normalize`` and its per-field rule modules (``person``, ``places``,
``phone``, ``dates``), the error type every field rule raises (``meta.rules`` too), and the text
cleaning that names and places share.

Kept apart so the rule modules can share these without importing ``normalize`` (which imports
them). The types are re-exported by ``normalize``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any, Final

Normalizer = Callable[[Any, str | None], str]
# A field's rule given the trimmed, non-empty text of a value; the value itself comes along for
# error messages and for the few checks that depend on its type (a negative number).
TextRule = Callable[[str, Any, str | None], str]
# The event's country hint (or None) -> the region to read values in (or None).
Resolver = Callable[[str | None], str | None]

# Python's str.lower, called as a function. In the compiled build (mypyc) the lower method of a
# str is mypyc's own lowercasing, which misses Unicode's final sigma ("a@a.Σ" gave "a@a.σ", where
# Python gives "a@a.ς", and so another digest): the modules it compiles lowercase with this.
lower: Final[Callable[[str], str]] = str.lower


class FieldProblem(ValueError):
    """A value that cannot be used for a field: ``reason`` is a code, ``message`` is for people.

    Every field rule raises it: the normalizers here (as ``NormalizeError``) and Meta's lead_id
    and event_time rules (``meta.rules``), so callers catch one type.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


NormalizeError = FieldProblem


def show(value: Any) -> str:
    """``repr`` of a value for error messages, truncated so a long value cannot flood a log."""
    text = repr(value)
    return text if len(text) <= 42 else text[:39] + "..."


def emptied(label: str, value: Any) -> NormalizeError:
    """The error for a value that cleaning leaves empty."""
    return NormalizeError("empty", f"{label} {show(value)} has nothing left once cleaned")


class Deleter(dict[int, int | None]):
    """``str.translate`` table deleting characters of the given Unicode major categories
    (``"PS"``: punctuation and symbols), and of the given ``exact`` ones (``("Cf",)``) but for
    the characters of ``keep``.

    Filled on first sight of each character, so we never build a table for all of Unicode.
    """

    __slots__ = ("_categories", "_exact", "_keep", "ascii")

    def __init__(self, categories: str, exact: tuple[str, ...] = (), keep: str = "") -> None:
        super().__init__()
        self._categories = categories
        self._exact = exact
        self._keep = keep
        # The same deletions for ASCII text, for bytes.translate (several times faster).
        self.ascii = bytes(c for c in range(128) if self._deletes(chr(c)))

    def _deletes(self, char: str) -> bool:
        category = unicodedata.category(char)
        return (category[0] in self._categories or category in self._exact) and (
            char not in self._keep
        )

    def __missing__(self, code: int) -> int | None:
        kept = None if self._deletes(chr(code)) else code
        self[code] = kept
        return kept


# Invisible formatting characters (Unicode's Cf): a byte-order mark, zero-width spaces,
# left-to-right and right-to-left marks, soft hyphens. Pasted text carries them, and a person
# typing the same name or address into Facebook does not: hashed, it would never match. Not the
# zero-width joiner and non-joiner, which Persian and Indic names are written with.
_JOINERS: Final = "\u200c\u200d"
INVISIBLE: Final = Deleter("", ("Cf",), keep=_JOINERS)
PUNCTUATION: Final = Deleter("PS", ("Cf",), keep=_JOINERS)  # and invisible characters
COMPACT: Final = Deleter("PSZC")  # ... and spaces, controls (invisible ones are Cf: C)
CITY: Final = Deleter("PSZCN")  # ... and digits


def visible(text: str) -> str:
    """``text`` without invisible formatting characters (``INVISIBLE``), trimmed again."""
    return text if text.isascii() else text.translate(INVISIBLE).strip()


FLOAT_EXACT: Final = 2**53
"""Whole numbers below this are exact as floats; from it on, a float may have lost digits."""


def number_text(value: int | float) -> str | None:
    """A number as the text of an id or a text field, as Python writes it (``12345.0`` stays
    ``"12345.0"``: event keys written so by earlier versions must stay the same, or a resend
    would be sent again); None for a whole float of 2**53 or more, whose digits are not all
    known (a JSON integer past 64 bits is read as a float)."""
    if type(value) is float and value.is_integer() and abs(value) >= FLOAT_EXACT:
        return None
    return str(value)


def float_digits(text: str) -> str | None:
    """The digits of a whole number that pandas (or a spreadsheet) wrote as a float in text
    ("75011.0", "33612345678.0", "19900304.0"), else None."""
    return text[:-2] if text[-2:] == ".0" and text[:-2].isdigit() else None


nfc: Final = unicodedata.normalize
"""``unicodedata.normalize``, called as ``nfc("NFC", text)``."""


def clean(lowered: str, table: Deleter) -> str:
    """``lowered`` without the characters ``table`` deletes, in Unicode composed form (NFC)."""
    if lowered.isascii():
        return lowered.encode("ascii").translate(None, table.ascii).decode("ascii")
    cleaned = lowered.translate(table)
    # Composed last: deleting a character can bring a letter and an accent together.
    return cleaned if cleaned.isascii() else nfc("NFC", cleaned)
