"""``leadrelay send``: read files, map every event, deliver (or print with --dry-run), account.

This is the file intake of the pipeline: the same Mapper and Dispatcher serve the HTTP service.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from leadrelay.config import Settings
from leadrelay.delivery.dispatcher import Dispatcher
from leadrelay.delivery.pipeline import BatchPolicy, deliver_stream
from leadrelay.delivery.wiring import make_client, make_dispatcher
from leadrelay.events import read_events
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Payload
from leadrelay.summary import Tally


@dataclass(frozen=True, slots=True)
class SendOptions:
    """What to send and how to report it."""

    files: Sequence[str]
    dry_run: bool = False
    report: Path | None = None
    verbose: int = 0


def payloads(
    files: Sequence[str], mapper: Mapper, tally: Tally, progress: Progress | None = None
) -> Iterator[Payload]:
    """Read and map every event of ``files``, count each outcome, yield what can be sent."""
    task = progress.add_task("events", total=None) if progress is not None else None
    for name in files:
        for record in read_events(name):
            if progress is not None and task is not None:
                progress.advance(task)
            if record.event is None:
                tally.unreadable(record.where, record.error or "unreadable")
                continue
            outcome = mapper.map(record.event)
            tally.outcome(record.where, outcome)
            if isinstance(outcome, Payload):
                yield outcome


def _body(batch: list[bytes], test_event_code: str | None) -> bytes:
    tail = (
        b"" if test_event_code is None else b',"test_event_code":' + orjson.dumps(test_event_code)
    )
    return b'{"data":[' + b",".join(batch) + b"]" + tail + b"}\n"


def dry_run(settings: Settings, stream: Iterator[Payload], out: IO[bytes], tally: Tally) -> None:
    """Write the request bodies that would be sent, one per line."""
    size = settings.delivery.batch_size
    batch: list[bytes] = []
    for payload in stream:
        batch.append(orjson.dumps(payload.data))
        if len(batch) == size:
            out.write(_body(batch, settings.test_event_code))
            batch = []
    if batch:
        out.write(_body(batch, settings.test_event_code))
    out.flush()


async def deliver(settings: Settings, stream: Iterator[Payload], tally: Tally) -> Dispatcher:
    """Deliver every payload of ``stream``; the returned dispatcher says why it stopped."""
    d = settings.delivery
    async with make_client(settings) as client:
        dispatcher = make_dispatcher(settings, client)
        policy = BatchPolicy(
            max_events=d.batch_size, max_age_s=d.batch_max_age_s, concurrency=d.concurrency
        )
        await deliver_stream(stream, dispatcher, policy, tally.delivery)
        tally.requests = dispatcher.requests
        tally.retries = dispatcher.retries
        return dispatcher


def run_send(settings: Settings, options: SendOptions, *, err: Console) -> int:
    """Run a send; returns the exit code (0 clean, 2 some rejected or expired, 1 stopped)."""
    mapper = Mapper(settings)
    with ExitStack() as stack:
        report = stack.enter_context(options.report.open("wb")) if options.report else None
        tally = Tally(report=report, dry_run=options.dry_run)
        progress = None
        if err.is_terminal:
            progress = stack.enter_context(
                Progress(
                    TextColumn("[progress.description]{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed} read"),
                    TimeElapsedColumn(),
                    console=err,
                    transient=True,
                )
            )
        stream = payloads(options.files, mapper, tally, progress)
        if options.dry_run:
            dry_run(settings, stream, sys.stdout.buffer, tally)
            paused = None
        else:
            paused = asyncio.run(deliver(settings, stream, tally)).paused
    tally.render(err, dry_run=options.dry_run)
    if paused is not None:
        err.print(
            f"[bold red]Delivery stopped:[/bold red] Meta refused the request ({paused.label()}): "
            f"{paused.message}. Check access_token and pixel_id in your config; events not "
            "delivered are listed as 'not sent' and the rest of the input was not read.",
            highlight=False,
        )
        return 1
    return 2 if tally.any_rejected else 0
