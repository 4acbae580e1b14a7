"""The summary table ``send`` prints at its end, with the first examples of each problem.

Split out of ``summary`` (house rule: modules under ~300 lines): ``Tally`` counts, this says.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from leadrelay.summary import Tally
from leadrelay.summary_stored import EARLIER, ELSEWHERE, REUSED

__all__ = ["render"]


def render(t: Tally, console: Console, *, dry_run: bool, stopped: bool) -> None:
    """``Tally.render``: the table, then up to three examples of each problem."""
    table = Table(
        title="leadrelay dry run" if dry_run else "leadrelay delivery",
        show_header=True,
        header_style="bold",
    )
    table.add_column("outcome")
    table.add_column("reason")
    table.add_column("events", justify="right")
    table.add_row("read", "", str(t.read))
    if dry_run:
        table.add_row("mapped", "ready to send", str(t.mapped), style="green")
    else:
        table.add_row("delivered", "immediately", str(t.delivered_now), style="green")
        table.add_row("delivered", "after retry", str(t.delivered_retry), style="green")
        if t.delivered_split:
            label = "after its batch was split for a refused event"
            table.add_row("delivered", label, str(t.delivered_split), style="green")
        if t.delivered_elsewhere:
            label = f"by {ELSEWHERE}"
            table.add_row("delivered", label, str(t.delivered_elsewhere), style="green")
        if t.backlog_delivered:  # not among those read: the store's, from before
            label = "queued in the store before this run, not from these files"
            table.add_row("delivered", label, str(t.backlog_delivered), style="green")
        if t.delivered_before:
            label = f"by {EARLIER} (not sent again)"
            table.add_row("delivered", label, str(t.delivered_before), style="green")
    for reason, n in sorted(t.filtered.items()):
        table.add_row("filtered", reason, str(n), style="cyan")
    for reason, n in sorted(t.rejected.items()):
        table.add_row("rejected", reason, str(n), style="red")
    for label, n in sorted(t.meta_rejected.items()):
        table.add_row("rejected by Meta", label, str(n), style="red")
    if t.expired:
        table.add_row(
            "expired",
            "older than 7 days before it could be sent",
            str(t.expired),
            style="red",
        )
    for reason, n in sorted(t.dead.items()):
        table.add_row("not delivered", reason, str(n), style="red")
    if t.backlog_failed:
        label = "queued in the store before this run, not from these files"
        table.add_row("not delivered", label, str(t.backlog_failed), style="red")
    for reason, n in sorted(t.not_sent.items()):
        table.add_row("not sent", reason, str(n), style="yellow")
    if t.reused:
        table.add_row("not sent", REUSED, str(t.reused), style="red")
    if t.duplicates:
        label = "the event_id of an event before it in this run"
        table.add_row("not sent again", label, str(t.duplicates), style="yellow")
    if t.queued_left:
        label = "queued in the store: the next send (or serve) delivers it"
        if t.store_failed:  # what it held in memory was stored as it closed, if the store could
            label = "queued in the store if it took them; else the next send reads them again"
        table.add_row("not sent yet", label, str(t.queued_left), style="yellow")
    earlier = t.mapped - t.settled - t.elsewhere
    if t.elsewhere:
        label = "held by another process, queued for a retry, or behind its lead"
        if stopped:  # what it had not sent yet waits in the fleet's queue too
            label = "queued for the fleet's workers, or held by another process"
        table.add_row("not sent yet", label, str(t.elsewhere), style="yellow")
    if not dry_run and earlier > 0:
        if t.store_failed:  # the store could not be asked (see delivery.store_calls)
            label = "not known: the event store stopped answering (queued, in flight or lost)"
            table.add_row("not accounted for", label, str(earlier), style="red")
        elif stopped:
            label = "queued in the store (or stored by an earlier run)"
            if t.fleet:  # or held by one of its other processes, for all it knows
                label = "queued in the store, held by another process, or stored earlier"
            table.add_row("not sent yet", label, str(earlier), style="yellow")
        else:
            label = "stored by an earlier run"
            if t.fleet:
                label += " or another process"
            table.add_row("not sent again", label, str(earlier), style="dim")
    for label, n in sorted(t.notes.items()):
        table.add_row("field left out", label, str(n), style="yellow")
    if not dry_run:
        table.add_row("requests", "", str(t.requests), style="dim")
        table.add_row("transient errors", "", str(t.transient_errors), style="dim")
    console.print(table)
    for reason, examples in t.examples.items():
        console.print(f"[bold]{reason}[/bold], e.g.:")
        for ex in examples:
            who = " ".join(x for x in (ex.where, f"(event_id {ex.key})" if ex.key else "") if x)
            what = f"{ex.field}: " if ex.field else ""
            console.print(f"  {who}: {what}{ex.message}", markup=False, highlight=False)
    if t.dead or t.expired or t.meta_rejected or t.backlog_failed:
        console.print(
            "Events not delivered, expired or refused by Meta are kept: `leadrelay "
            "dead-letters list --config ...` shows them; once the cause is fixed, "
            "`dead-letters replay` queues them again and `leadrelay deliver` sends them.",
            markup=False,
            highlight=False,
        )
