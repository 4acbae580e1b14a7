"""``GET|POST /dashboard/playground``: paste an event, see the exact payload and where each field
comes from (``explain``, the same as ``leadrelay preview``), and try smart-mapping rows before
putting them in the config. Nothing is saved, stored or sent.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any, Final

import orjson

from leadrelay.config import Settings
from leadrelay.diagnostics.html import html_table
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.explain import Explanation, FieldLine, explain
from leadrelay.mapping.expressions import MISSING, ExpressionError, compile_expression
from leadrelay.mapping.fields import TargetError, treatment
from leadrelay.outcome import Filtered, Payload, Rejected
from leadrelay.service.dashboard.layout import BASE, json_block

FORM_LIMIT: Final = 256 * 1024
_SHOWN: Final = 120  # characters of a value read from the event


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A smart-mapping row that cannot be used; ``position`` is 0-based in ``source``."""

    line: int
    target: str
    message: str
    source: str = ""
    position: int | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """What a submitted form gave: problems, or the explanation of the event."""

    event_problem: str | None = None
    row_problems: tuple[RowProblem, ...] = ()
    explanation: Explanation | None = None
    body: dict[str, Any] | None = None


def sample_event(settings: Settings, now: float) -> str:
    """A starting event for the form: the first mapped event name, the lead id where the
    ``lead_id`` setting reads it, an event time of now."""
    name = next((k for k in settings.mapping if k != "*"), "lead_qualified")
    event: dict[str, Any] = {
        "event_name": name,
        "context": {"event_id": "playground-1", "event_timestamp": int(now * 1000)},
        "user": {"email": "Jane.Doe@example.com", "phone": "+33 6 12 34 56 78", "country": "FR"},
    }
    lead = compile_expression(settings.lead_id, key="lead_id")
    if lead.kind == "path":
        node = event
        *parents, last = lead.paths[0].split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = "123456789012345"
    return orjson.dumps(event, option=orjson.OPT_INDENT_2).decode()


_SECTION: Final = re.compile(r"\[\s*smart_mapping\s*\]\s*(?:#.*)?")
# A comment after an expression's end ("{{value}} # the deal value", "=LOWER(x) #note"); not
# a "#" in text ("Lead #{{id}}", "Order # {{id}}") nor in a formula's string ('=CONCAT("# ", x)').
_COMMENT: Final = re.compile(r"(?:(?<=\}\})|(?<=\)))\s+#.*$")


def parse_rows(text: str) -> tuple[dict[str, str], list[RowProblem]]:
    """``target = expression`` lines (blank lines and ``#`` comments skipped), as the config's
    ``[smart_mapping]`` rows are written (``"custom_data.value" = "{{value}}"``, a TOML string)
    or bare (``custom_data.value = {{value}}``)."""
    rows: dict[str, str] = {}
    problems: list[RowProblem] = []
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        # Blank lines, comments, and the section's header when the block is pasted whole.
        if not stripped or stripped.startswith("#") or _SECTION.fullmatch(stripped):
            continue
        target, eq, source = line.partition("=")
        target, source = target.strip().strip("\"'"), source.strip()
        if source[:1] not in ('"', "'"):  # bare: a comment after it is no part of it
            source = _COMMENT.sub("", source)
        if source[:1] in ('"', "'"):  # a TOML string, as in the config: its text
            try:
                value = tomllib.loads(f"value = {source}")["value"]
            except tomllib.TOMLDecodeError:
                value = None
            if not isinstance(value, str):
                problems.append(
                    RowProblem(n, target, "the quoted value is not a TOML string: close its quote")
                )
                continue
            source = value
        if not eq or not target:
            problems.append(
                RowProblem(
                    n,
                    target,
                    "write it as: Facebook field = expression, e.g. custom_data.value = {{value}}",
                )
            )
            continue
        try:
            treatment(target)
        except TargetError as exc:
            problems.append(RowProblem(n, target, str(exc)))
            continue
        if source:
            try:
                compile_expression(source, key=f'smart_mapping."{target}"')
            except ExpressionError as exc:
                problems.append(RowProblem(n, target, exc.message, source, exc.position))
                continue
        rows[target] = source
    return rows, problems


def run(
    settings: Settings,
    mapper: Mapper,
    event_text: str,
    rows_text: str,
    clock: Callable[[], float] = time.time,
) -> Result:
    """Map the pasted event with the current config plus the rows tried (never saved)."""
    rows, problems = parse_rows(rows_text)
    if problems:
        return Result(row_problems=tuple(problems))
    try:
        event = orjson.loads(event_text)
    except orjson.JSONDecodeError as exc:
        return Result(event_problem=f"The event is not valid JSON: {exc}")
    if not isinstance(event, dict):
        return Result(
            event_problem=f"Paste one event: a JSON object ({{...}}), not a {type(event).__name__}."
        )
    if rows:
        tried = settings.model_copy(update={"smart_mapping": {**settings.smart_mapping, **rows}})
        mapper = Mapper(tried, clock=clock)
    result = explain(mapper, event)
    body: dict[str, Any] | None = None
    if isinstance(result.outcome, Payload):
        body = {"data": [result.outcome.data]}
        if settings.test_event_code is not None:
            body["test_event_code"] = settings.test_event_code
    return Result(explanation=result, body=body)


def _show(value: Any) -> str:
    if value is MISSING:
        return "-"
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _row_problem(p: RowProblem) -> str:
    where = f"Line {p.line}" + (f", <code>{escape(p.target)}</code>" if p.target else "")
    out = f"<p><strong>{where}:</strong> {escape(p.message)}"
    if p.position is not None:
        s, i = p.source, p.position
        mark = escape(s[i]) if i < len(s) else "&nbsp;"
        out += (
            f" (at position {i})</p><p><code>{escape(s[:i])}<mark>{mark}</mark>"
            f"{escape(s[i + 1 :])}</code></p>"
        )
    else:
        out += "</p>"
    return f'<div class="problem">{out}</div>'


def _outcome(e: Explanation) -> str:
    o = e.outcome
    if isinstance(o, Payload):
        return (
            f'<p class="ok">Sendable as <strong>{escape(o.event_name)}</strong> '
            f"(lead_id {o.lead_id}, event_time {o.event_time}).</p>"
        )
    if isinstance(o, Filtered):
        return f'<p class="ok">Filtered ({escape(o.reason)}): {escape(o.message)}</p>'
    assert isinstance(o, Rejected)
    return (
        f'<p class="problem">Rejected ({escape(o.reason)}), field '
        f"<code>{escape(o.field)}</code>: {escape(o.message)}</p>"
    )


def _sent(f: FieldLine) -> str:
    """The cell of what a field sends: the value (and what a digest is of), or why not."""
    if f.sent is MISSING:
        return f"<em>{escape(f.why_not or 'not sent')}</em>"
    cell = f'<code class="wrap">{escape(_show(f.sent))}</code>'
    if f.hashed is not None:
        cell += f'<br><small>SHA-256 of <code class="wrap">{escape(_show(f.hashed))}</code></small>'
    return cell


def _result(result: Result) -> str:
    if result.row_problems:
        return (
            '<div role="alert"><p>These smart-mapping rows cannot be used; nothing was '
            "mapped:</p>" + "".join(_row_problem(p) for p in result.row_problems) + "</div>"
        )
    if result.event_problem:
        return f'<div class="problem" role="alert"><p>{escape(result.event_problem)}</p></div>'
    e = result.explanation
    assert e is not None
    rows = [
        (
            f"<code>{escape(f.target)}</code>",
            escape(f.origin),
            f"<code>{escape(f.source)}</code>",
            f'<code class="wrap">{escape(_show(f.read))}</code>',
            _sent(f),
        )
        for f in e.fields
    ]
    head = ("Facebook field", "From", "Source", "Read from the event", "Sent / why not")
    table = html_table("Where each field comes from", head, rows)
    out = f'{_outcome(e)}<div class="fields">{table}</div>'
    if result.body is not None:
        out += (
            '<h3 id="payload-h">Exact request body</h3><p class="note">As Meta would receive '
            "it for this event alone (a batch holds up to 1000 in <code>data</code>).</p>"
            + json_block(result.body, "Request body")
        )
    return out


def render(event_text: str, rows_text: str, result: Result | None) -> str:
    """The page body: the form (with what was submitted) and the result, if any."""
    out = (
        "<h1>Mapping playground</h1>"
        "<p>Paste a Commanders Act event to see the exact payload and where each field comes "
        "from, with the current config. Try smart-mapping rows before putting them in the "
        "config: they apply to this page only. Nothing is saved, stored or sent.</p>"
        # After sending, the browser lands on the result, below the form.
        f'<form method="post" action="{BASE}/playground#result-h">'
        '<label for="event">Commanders Act event (JSON)'
        '<span class="hint" id="event-hint">One event as your tag or CRM export sends it.</span>'
        "</label>"
        '<textarea id="event" name="event" rows="14" spellcheck="false" '
        f'aria-describedby="event-hint" required>{escape(event_text)}</textarea>'
        '<label for="rows">Smart-mapping rows to try (optional)'
        '<span class="hint" id="rows-hint">One per line: Facebook field = expression, e.g. '
        "<code>custom_data.value = {{value}}</code> or "
        "<code>user_data.em = =LOWER(user.work_email)</code>. An empty expression removes a "
        "prebuilt row.</span></label>"
        '<textarea id="rows" name="rows" rows="4" spellcheck="false" '
        f'aria-describedby="rows-hint">{escape(rows_text)}</textarea>'
        '<p><button type="submit">Show the payload</button></p></form>'
    )
    if result is not None:
        out += (
            f'<section aria-labelledby="result-h"><h2 id="result-h">Result</h2>'
            f"{_result(result)}</section>"
        )
    return out
