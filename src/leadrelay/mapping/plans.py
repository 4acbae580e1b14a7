"""Plan compilation: the prebuilt field table with the smart mapping laid over it, as callables.

Split out of ``engine`` (house rule: modules under ~300 lines). ``compile_plans`` turns the config
into one ``Plan`` per Facebook field (the expression that reads the event and the finisher that
turns the value into what Meta wants); ``field_fill`` turns a plan into one closure that reads
and finishes its field (``steps`` builds ``Mapper.map``'s field loop from them); ``compile_names``
turns [mapping] into the readers of Facebook event names. Everything here runs once per config;
only the returned closures (and the finishers' shape constants) are used per event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from leadrelay.config import Settings
from leadrelay.mapping.expressions import MISSING, Expression, compile_expression
from leadrelay.mapping.fields import PREBUILT, Treatment, treatment
from leadrelay.meta.field_rules import number_text
from leadrelay.meta.normalize import NormalizeError, Reading, hasher
from leadrelay.meta.rules import FieldProblem, parse_lead_id, to_seconds

Read = Callable[[Mapping[str, Any]], Any]
Finisher = Callable[[Any, str | None], Any]
Fill = Callable[[Mapping[str, Any], str | None], Any]
_SECTIONS: Final = ("user_data", "custom_data")


@dataclass(frozen=True, slots=True)
class Plan:
    """How one Facebook field is filled: where the value comes from and how it is finished."""

    target: str
    section: str | None  # "user_data", "custom_data" or None for a top-level key
    name: str
    treatment: Treatment
    origin: str  # "prebuilt", "smart_mapping" or "setting"
    source: str  # the expression as the user would write it
    read: Callable[[Mapping[str, Any]], Any]
    finish: Finisher
    siblings: tuple[str, tuple[str, ...]] | None = None  # see Expression.siblings
    kind: str = "path"  # the expression's kind: static, path, template or formula


def _hashed_list(digest: Finisher, value: list[Any], region: str | None) -> list[str]:
    out: list[str] = []
    first_error: NormalizeError | None = None
    for item in value:
        try:
            hashed = digest(item, region)
        except NormalizeError as exc:
            first_error = first_error or exc
            continue
        if hashed not in out:
            out.append(hashed)
    if not out:
        if first_error is not None:
            raise first_error
        raise FieldProblem("empty", "the list has no values")
    return out


def _hashed(field: str, reading: Reading) -> Finisher:
    digest = hasher(field, **reading._asdict())

    def finish(value: Any, region: str | None) -> Any:
        if type(value) is list:
            return _hashed_list(digest, value, region)
        return [digest(value, region)]

    return finish


def _hashed_fill(read: Callable[[Mapping[str, Any]], Any], digest: Finisher) -> Fill:
    def fill(event: Mapping[str, Any], region: str | None) -> Any:
        value = read(event)
        if value is MISSING:
            return MISSING
        if type(value) is list:
            return _hashed_list(digest, value, region)
        return [digest(value, region)]

    return fill


def _text_fill(read: Callable[[Mapping[str, Any]], Any]) -> Fill:
    def fill(event: Mapping[str, Any], region: str | None) -> Any:
        value = read(event)
        if type(value) is str:
            value = value.strip()
            return value if value else MISSING
        return MISSING if value is MISSING else finish_text(value, region)

    return fill


def _native_fill(read: Callable[[Mapping[str, Any]], Any]) -> Fill:
    return lambda event, region: read(event)


def field_fill(plan: Plan, reading: Reading) -> Fill:
    """One call that reads and finishes ``plan``'s field: the value to send, or MISSING."""
    if plan.treatment is Treatment.HASHED:
        digest = hasher(plan.target.rpartition(".")[2], **reading._asdict())
        return _hashed_fill(plan.read, digest)
    if plan.treatment is Treatment.TEXT:
        return _text_fill(plan.read)
    if plan.treatment is Treatment.NATIVE:
        return _native_fill(plan.read)
    read, finish = plan.read, plan.finish

    def fill(event: Mapping[str, Any], region: str | None) -> Any:
        value = read(event)
        return MISSING if value is MISSING else finish(value, region)

    return fill


def finish_text(value: Any, region: str | None) -> Any:
    """A text field's value: trimmed text (MISSING when blank), numbers as text."""
    if isinstance(value, str):
        value = value.strip()
        return value if value else MISSING
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = number_text(value)
        if text is None:
            # Two event ids of 20 digits were one ("2.0211013e+19"): the second was not sent.
            raise FieldProblem(
                "inexact_number",
                f"{value!r} is a number too long to be read exactly (JSON numbers keep about "
                "16 digits); send it as text, in quotes",
            )
        return text
    raise FieldProblem("invalid_type", f"expected text, got {type(value).__name__}")


def _native(value: Any, region: str | None) -> Any:
    return value


# The shapes lead_id and event_time usually have, which their finishers settle without a detour
# (``Mapper.map_parts`` checks the same shapes inline, to skip the finisher's call).
LEAD_MIN: Final = 10**14  # 15 digits
LEAD_END: Final = 10**17  # 18 digits
MS_MIN: Final = 10**11  # timestamps this large are milliseconds (see rules.to_seconds)
MS_END: Final = 10**14


# The same shapes as text: the digits of numbers in those ranges, without leading zeros (what
# ``[1-9][0-9]{14,16}`` and ``[1-9][0-9]{11,13}`` match whole; checked without a regex, whose
# call cost more than the rest of reading the usual event's lead_id).
def lead_digits(text: str) -> bool:
    """Whether ``text`` is the digits of a number from ``LEAD_MIN`` up to ``LEAD_END``."""
    return 15 <= len(text) <= 17 and text.isascii() and text.isdigit() and text[0] != "0"


def ms_digits(text: str) -> bool:
    """Whether ``text`` is the digits of a number from ``MS_MIN`` up to ``MS_END``."""
    return 12 <= len(text) <= 14 and text.isascii() and text.isdigit() and text[0] != "0"


def _lead_id(value: Any, region: str | None) -> int:
    # What CRMs send (an int, or a string of 15 to 17 digits) is checked here without a detour;
    # everything else gets parse_lead_id's full checks and messages.
    if type(value) is int:
        if LEAD_MIN <= value < LEAD_END:
            return value
    elif (
        type(value) is str
        and 15 <= len(value) <= 17
        and value[0] != "0"
        and value.isdigit()
        and value.isascii()
    ):
        return int(value)
    return parse_lead_id(value)


def _event_time(value: Any, region: str | None) -> int:
    # Milliseconds (number or digits) and ISO-8601 date-times, the common shapes, go straight;
    # everything else, and every problem, goes through to_seconds.
    kind = type(value)
    if kind is int:
        if MS_MIN <= value < MS_END:
            return int(value // 1000)
    elif kind is str:
        if value.isdigit():
            if len(value) < 15:  # milliseconds have 12 to 14 digits; to_seconds reads the rest
                number = int(value)
                if MS_MIN <= number < MS_END:
                    return number // 1000
        elif value[4:5] == "-":
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return to_seconds(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                return int(parsed.timestamp())
            except (OverflowError, ValueError):  # the year 1 ahead of UTC: to_seconds says so
                return to_seconds(value)
    return to_seconds(value)


def _finisher(target: str, kind: Treatment, reading: Reading) -> Finisher:
    if kind is Treatment.HASHED:
        return _hashed(target.rpartition(".")[2], reading)
    if kind is Treatment.TEXT:
        return finish_text
    if kind is Treatment.LEAD_ID:
        return _lead_id
    if kind is Treatment.EVENT_TIME:
        return _event_time
    return _native


def compile_plans(settings: Settings) -> list[Plan]:
    """The prebuilt table with the user's smart mapping laid over it, compiled."""
    rows: dict[str, tuple[str, str]] = {}
    for row in PREBUILT:
        if row.source == "${lead_id}":
            rows[row.target] = (settings.lead_id, "setting")
        elif row.source == "${lead_event_source}":
            rows[row.target] = (settings.lead_event_source, "setting")
        else:
            rows[row.target] = (row.source, "prebuilt")
    for target, source in settings.smart_mapping.items():
        if source == "":
            rows.pop(target, None)
        else:
            rows[target] = (source, "smart_mapping")
    reading = reading_of(settings)
    plans = []
    for target, (source, origin) in rows.items():
        kind = treatment(target)
        head, _, rest = target.partition(".")
        section, name = (head, rest) if head in _SECTIONS else (None, target)
        expr: Expression = compile_expression(source, key=target)
        plans.append(
            Plan(
                target,
                section,
                name,
                kind,
                origin,
                source,
                expr.evaluate,
                _finisher(target, kind, reading),
                expr.siblings,
                expr.kind,
            )
        )
    return plans


def reading_of(settings: Settings) -> Reading:
    """How ``settings`` say values are read (``Reading``)."""
    return Reading(settings.default_country, settings.birthdate_order)


def top_level_key(plan: Plan) -> str | None:
    """The key of a ``{{key}}`` plan that reads an event's own key (as ``compile_path``'s
    one-key getter does: the value, MISSING for null), else None."""
    if plan.kind != "path":
        return None
    (path,) = compile_expression(plan.source, key=plan.target).paths
    return None if "." in path or (path.isascii() and path.isdigit()) else path


def compile_names(
    mapping: Mapping[str, str],
) -> tuple[dict[str, Read], Read | None, dict[str, str]]:
    """[mapping] compiled: the reader of the Facebook event name for each event_name, the
    catch-all's (``*``) or None, and the names that are plain text (looked up without a call:
    every event needs its name)."""
    names: dict[str, Read] = {}
    catch_all: Read | None = None
    for ours, theirs in mapping.items():
        read = compile_expression(theirs, key=f"mapping.{ours}").evaluate
        if ours == "*":
            catch_all = read
        else:
            names[ours] = read
    static = {
        ours: theirs
        for ours, theirs in mapping.items()
        if ours != "*" and theirs and compile_expression(theirs, key=ours).kind == "static"
    }
    return names, catch_all, static
