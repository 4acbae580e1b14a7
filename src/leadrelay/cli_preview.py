"""``leadrelay preview``: one event's payload, field by field, with where each value came from
(``cli`` registers it). No ``from __future__ import annotations``: see ``cli``."""

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from leadrelay.cli_common import ConfigOpt, configure_logging, err, load_settings
from leadrelay.events import InputError
from leadrelay.mapping.expressions import MISSING

__all__ = ["preview"]


def preview(
    event_file: Annotated[str, typer.Argument(help="A file holding one event (or - for stdin).")],
    config: ConfigOpt,
) -> None:
    """Show the payload for one event, field by field, with the source of each value."""
    from rich.table import Table

    from leadrelay.events import read_events
    from leadrelay.mapping.engine import Mapper
    from leadrelay.mapping.explain import explain
    from leadrelay.outcome import Filtered, Payload, Rejected

    configure_logging(0)
    settings = load_settings(config)
    mapper = Mapper(settings)
    try:
        records = iter(read_events(event_file))
        record = next(records, None)
        more = record is not None and next(records, None) is not None
    except InputError as exc:
        err.print(f"[bold red]Input error:[/bold red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    if record is None or record.event is None:
        why = record.error if record else "empty input"
        err.print(f"[red]No event could be read:[/red] {escape(str(why))}", highlight=False)
        raise typer.Exit(1)
    if more:  # it said nothing of the others
        err.print(
            f"[yellow]Note[/yellow] {escape(event_file)} holds more than one event: this is the "
            "first. `leadrelay send FILE --dry-run --report REPORT` maps them all.",
            highlight=False,
        )
    result = explain(mapper, record.event)
    out = Console()
    outcome = result.outcome
    if isinstance(outcome, Payload):
        out.print(
            f"[green]Sendable[/green] as [bold]{outcome.event_name}[/bold] "
            f"(lead_id {outcome.lead_id}, event_time {outcome.event_time})"
        )
    elif isinstance(outcome, Filtered):
        out.print(f"[cyan]Filtered[/cyan] ({outcome.reason}): {escape(outcome.message)}")
    else:
        out.print(
            f"[red]Rejected[/red] ({outcome.reason}) {outcome.field}: {escape(outcome.message)}"
        )
    table = Table(show_header=True, header_style="bold")
    for col in ("Facebook field", "from", "source", "read", "sent / why not"):
        table.add_column(col, overflow="fold")
    for line in result.fields:
        sent = (
            Text(_show(line.sent))
            if line.sent is not MISSING
            else Text(str(line.why_not), style="yellow")
        )
        if line.hashed is not None:  # what the digest is of: the value as Meta normalizes it
            sent.append(f"\nSHA-256 of {_show(line.hashed)}", style="dim")
        table.add_row(line.target, line.origin, Text(line.source), Text(_show(line.read)), sent)
    out.print(table)
    if isinstance(outcome, Payload):
        import orjson

        out.print_json(orjson.dumps(outcome.data).decode())
    if isinstance(outcome, Rejected):
        raise typer.Exit(2)


def _show(value: Any) -> str:
    if value is MISSING:
        return "-"
    text = str(value)
    return text if len(text) <= 70 else text[:67] + "..."
