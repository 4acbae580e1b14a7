"""The ``leadrelay`` commands that read the store: ``status``, ``report`` and ``dead-letters``
(``cli`` registers them). No ``from __future__ import annotations``: see ``cli``."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer
from rich.console import Console
from rich.markup import escape

from leadrelay.cli_common import ConfigOpt, configure_logging, err, load_settings, open_store

if TYPE_CHECKING:
    from leadrelay.delivery.store import EventRecord, Store

__all__ = ["dead", "report", "status"]


def status(config: ConfigOpt) -> None:
    """The Event Delivery view: outcomes by reason over the last hour/day/week, health, backlog."""
    from leadrelay import status as view

    configure_logging(0)
    settings = load_settings(config)
    store = open_store(settings)
    try:
        view.render(view.collect(settings, store), Console())
    finally:
        store.close()


def report(
    config: ConfigOpt,
    from_files: Annotated[
        list[str] | None,
        typer.Option("--from", help="Event files (e.g. a CRM export) instead of the store."),
    ] = None,
    html: Annotated[Path, typer.Option("--html", help="Where to write the HTML report.")] = Path(
        "leadrelay-report.html"
    ),
    files: Annotated[
        list[str] | None,
        typer.Argument(help="More event files, as --from (--from a.csv b.ndjson reads both)."),
    ] = None,
) -> None:
    """Funnel and Conversion Leads good-fit checks, in the terminal and as a self-contained HTML."""
    from leadrelay.diagnostics import run_report

    configure_logging(0)
    settings = load_settings(config)
    # `--from a.csv b.ndjson` stopped at b.ndjson ("unexpected extra argument"): both are read.
    from_files = [*(from_files or []), *(files or [])] or None
    store = None if from_files else open_store(settings)
    try:
        code = run_report(
            settings, files=from_files, store=store, html_path=html, console=Console()
        )
    finally:
        if store is not None:
            store.close()
    raise typer.Exit(code)


dead = typer.Typer(help="What failed and why; replay after fixing the cause.", no_args_is_help=True)


def _a_reason(value: str | None) -> str | None:
    if value is not None and not value.strip():  # '' matched nothing, silently
        raise typer.BadParameter("is empty: give a reason as list shows it, e.g. invalid_lead_id")
    return value.strip() if value is not None else None


ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Only this reason.", callback=_a_reason)
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="Only events updated since: 2h, 7d, or ISO-8601.")
]


def _since(text: str | None) -> float | None:
    from leadrelay.deadletters import parse_since

    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None


@dead.command("list")
def dead_list(
    config: ConfigOpt,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 100,
) -> None:
    """List dead letters: rejected, expired and undeliverable events, with the reason."""
    from leadrelay.deadletters import dead_letters, render_list

    configure_logging(0)
    settings = load_settings(config)
    store = open_store(settings)
    try:
        found = dead_letters(store, reason=reason, since=_since(since), limit=limit)
        n = render_list(found, Console())
    finally:
        store.close()
    err.print(f"{n} dead letter(s)" + (" (limit reached)" if n == limit else ""))


@dead.command("show")
def dead_show(
    event: Annotated[
        str, typer.Argument(help="An event_id, or a store id as list shows it (#34).")
    ],
    config: ConfigOpt,
) -> None:
    """Everything about one event: the original, the request payload, Meta's answer."""
    import orjson

    configure_logging(0)
    settings = load_settings(config)
    store = open_store(settings)
    said: list[str] = []
    try:
        record = _find(store, event, said)
    finally:
        store.close()
    for line in said:
        err.print(line, markup=False, highlight=False)
    if record is None:
        err.print(f"[red]No stored event {escape(repr(event))}[/red]", highlight=False)
        raise typer.Exit(1)
    out = Console()
    for name in (
        "id",
        "key",
        "state",
        "source_event",
        "event_name",
        "lead_id",
        "event_time",
        "attempts",
        "reason",
        "field",
        "value",
        "code",
        "subcode",
        "fbtrace_id",
        "message",
    ):
        value = getattr(record, name)
        if value is not None:
            out.print(f"[bold]{name}[/bold]: {escape(str(value))}", highlight=False)
    for note in record.notes:
        out.print(f"[bold]left out[/bold] {note.field}: {escape(note.message)}", highlight=False)
    for title, blob in (
        ("original event", record.original),
        ("request payload", record.payload),
        ("Meta's answer", record.response),
    ):
        if blob is not None:
            out.print(f"[bold]{title}[/bold]:")
            out.print_json(orjson.dumps(blob).decode())


_STORE_IDS: Final = 2**63  # SQLite's ids fit in 64 bits: a longer number is an event_id only


def _find(store: "Store", ref: str, said: list[str]) -> "EventRecord | None":
    """The stored event ``ref`` names: ``#34`` is a store id (as ``list`` shows it), else the
    event_id "#34"; anything else is an event_id, or, if digits and no event has that
    event_id, a store id (``show 7`` showed the event stored 7th, not the event "7": CRM event
    ids are often numbers). A ref that names two events says in ``said`` which was taken."""
    text = ref.strip()
    if text[:1] == "#" and text[1:].isascii() and text[1:].isdigit():
        number = int(text[1:])
        stored = store.get(number) if number < _STORE_IDS else None
        return _chosen(stored, store.get(text), said, f"{text}: the event stored as {text}")
    by_key = store.get(text) if text else None
    by_id = None
    if text.isascii() and text.isdigit() and int(text) < _STORE_IDS:
        by_id = store.get(int(text))
    taken = f"{text}: the event with that event_id" + (f" (#{by_key.id})" if by_key else "")
    return _chosen(by_key, by_id, said, taken)


def _chosen(
    first: "EventRecord | None", second: "EventRecord | None", said: list[str], taken: str
) -> "EventRecord | None":
    """``first`` if there is one (``taken`` says so when ``second`` is another event), else
    ``second``."""
    if first is None:
        return second
    if second is not None and second.id != first.id:
        said.append(f"{taken}; the other is #{second.id} ({second.key})")
    return first


@dead.command("replay")
def dead_replay(
    config: ConfigOpt,
    ids: Annotated[
        list[str] | None,
        typer.Argument(help="Event_ids, or store ids as list shows them (#34); default: all."),
    ] = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
) -> None:
    """Queue dead letters again, re-mapped with the current config (after you fixed the cause)."""
    from leadrelay.deadletters import dead_letters, replay

    configure_logging(0)
    settings = load_settings(config)
    store = open_store(settings)
    try:
        missing: list[str] = []
        if ids:
            said: list[str] = []
            found = [(i, _find(store, i, said)) for i in ids]
            for line in said:
                err.print(line, markup=False, highlight=False)
            records = [r for _, r in found if r is not None]
            missing = [i for i, r in found if r is None]
        else:
            records = list(dead_letters(store, reason=reason, since=_since(since)))
        result = replay(store, settings, records)
    finally:
        store.close()
    err.print(
        f"Queued {result.queued} event(s) again ({result.remapped} re-mapped with the "
        f"current config, {result.as_is} as they were)."
    )
    for why, n in result.skipped.items():
        err.print(f"  left as they are: {n} {why}", highlight=False)
    for example in result.examples:
        err.print(f"    e.g. {example}", markup=False, highlight=False)
    err.print(
        f"The running service delivers them; without one, run: leadrelay deliver --config {config}"
    )
    if missing:  # as show: an id that names no stored event is an error
        err.print(
            f"[red]No stored event {', '.join(escape(repr(i)) for i in missing)}[/red]",
            highlight=False,
        )
        raise typer.Exit(1)
