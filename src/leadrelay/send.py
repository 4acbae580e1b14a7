"""``leadrelay send``: read files, map every event, deliver (or print with --dry-run), account.

This is the file intake of the pipeline: the same Mapper and Dispatcher serve the HTTP service.
Reading lives in ``send_input``, delivering (the worker, the reader thread, stops) in
``send_delivery``; this module runs one or the other and prints the summary.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from leadrelay.collecting import collecting_less
from leadrelay.events import InputError, check_inputs, is_stream
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.parallel import dry_run_parallel, map_records
from leadrelay.outcome import Payload
from leadrelay.summary import Tally

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from leadrelay.config import Settings
    from leadrelay.interrupts import CtrlC

# The delivery stack (asyncio, httpx, the dispatcher, the SQLite store, structlog) and the
# progress bar are imported by the functions that use them: a dry run, usually written to a pipe,
# needs none of them, and they were most of its start-up time.

_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended
_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C


@dataclass(frozen=True, slots=True)
class SendOptions:
    """What to send and how to report it."""

    files: Sequence[str]
    dry_run: bool = False
    report: Path | None = None
    verbose: int = 0
    jobs: int = 1  # processes that read and map


def payloads(
    files: Sequence[str], mapper: Mapper, tally: Tally, progress: Progress | None = None
) -> Iterator[Payload]:
    """Read and map every event of ``files``, count each outcome, yield what can be sent."""
    task = progress.add_task("events", total=None) if progress is not None else None
    every = 1024  # the progress bar is updated every so many records, not for each
    unseen = 0
    for m in map_records(files, mapper):
        outcome = m.outcome
        if outcome is None:
            tally.unreadable(m.where, m.error or "unreadable")
        else:
            tally.outcome(m.where, outcome)
            if type(outcome) is Payload:
                yield outcome
        unseen += 1
        if unseen == every and progress is not None and task is not None:
            progress.advance(task, unseen)
            unseen = 0
    if progress is not None and task is not None:
        progress.advance(task, unseen)


def dry_run(settings: Settings, stream: Iterator[Payload], out: IO[bytes], tally: Tally) -> None:
    """Write the request bodies that would be sent, one per line."""
    from leadrelay.mapping.parallel import write_bodies  # shared with dry_run_parallel

    dumps = orjson.dumps
    write_bodies(
        (dumps(payload.data) for payload in stream),
        out,
        batch_size=settings.delivery.batch_size,
        test_event_code=settings.test_event_code,
    )


def _report_file(path: Path) -> IO[bytes]:
    """The --report file, opened to write; ``InputError`` naming it when it cannot be."""
    try:
        return path.open("wb")
    except OSError as exc:
        raise InputError(
            f"--report {str(path)!r} cannot be written ({exc.strerror or exc})"
        ) from None


def _to_resume(files: Sequence[str]) -> str:
    """What to run after a send stopped early: reading may have stopped too, and ``deliver``
    sends only what was stored, so for files it is the same send (which skips what is stored).
    ``deliver`` (no files) read nothing: it is run again."""
    if not files:
        return "run leadrelay deliver again to send what is queued"
    if _rereadable(files):
        return (
            "run the same send again: it sends what is queued and reads the files again, "
            "skipping the events already stored"
        )
    return (
        "run leadrelay deliver to send what is queued; what the input had not given yet was "
        "not read"
    )


def _rereadable(files: Sequence[str]) -> bool:
    """Whether every input can be read again by the next run (regular files, not pipes)."""
    return all(name != "-" and Path(name).is_file() for name in files)


def _streamed(files: Sequence[str]) -> bool:
    """Whether an input is standard input or a pipe (a directory or a missing file is an input
    error, said when it is opened)."""
    return any(name == "-" or is_stream(name) for name in files)


def run_send(settings: Settings, options: SendOptions, *, err: Console) -> int:
    """Run a send; returns the exit code (0 clean, 2 some rejected, expired or dead, 1 stopped by
    Meta's refusal, 143 stopped by SIGTERM, 130 by Ctrl-C)."""
    check_inputs(options.files)  # each said before any is read or sent
    if options.dry_run:
        return _run_send(settings, options, err, None)
    from leadrelay.interrupts import CtrlC

    # Entered before the store opens and left after the summary: a Ctrl-C once delivery has
    # stopped does not cut the storing of what was read, nor the summary, short.
    with CtrlC(lambda text: err.print(text, highlight=False)) as ctrl_c:
        return _run_send(settings, options, err, ctrl_c)


def _run_send(settings: Settings, options: SendOptions, err: Console, ctrl_c: CtrlC | None) -> int:
    stopped: tuple[str, int] | None = None  # what stopped delivery early, and the exit code
    failed: Exception | None = None
    with ExitStack() as stack:
        report = stack.enter_context(_report_file(options.report)) if options.report else None
        tally = Tally(report=report, dry_run=options.dry_run)
        progress = None
        if err.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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
        if options.jobs > 1 and _streamed(options.files):
            # The mapping processes take whole units of input: from a producer that goes quiet
            # they would hold what it wrote, unsent (unprinted), and a Ctrl-C would lose it.
            err.print(
                "[yellow]Note:[/yellow] reading standard input or a pipe: every input is read "
                f"and mapped in this process (jobs = {options.jobs} is for files only)",
                highlight=False,
            )
            options = replace(options, jobs=1)
        if options.dry_run:
            paused = None
            try:
                if options.jobs > 1 or progress is None:
                    # Without a progress bar to feed, the bulk path, also on one job.
                    dry_run_parallel(
                        options.files, settings, sys.stdout.buffer, tally, workers=options.jobs
                    )
                else:
                    stream = payloads(options.files, Mapper(settings), tally, progress)
                    dry_run(settings, stream, sys.stdout.buffer, tally)
            except Exception as exc:  # the input failed: said after what was done, as below
                failed = exc
        else:
            from leadrelay.delivery.retention import apply_retention
            from leadrelay.delivery.store import StoreError
            from leadrelay.send_delivery import Stopped, deliver
            from leadrelay.send_store import delivering_store

            # Asked once: the store and the handling of SIGTERM both depend on it.
            rereadable = _rereadable(options.files)

            def closing_failed(kind: object, exc: BaseException | None, tb: object) -> bool:
                # The store could not keep what it held as it closed (a full disk): said after
                # the summary, as a failure during the send is (the first one, if both).
                nonlocal failed
                if not isinstance(exc, StoreError):
                    return False
                if failed is None:
                    failed = exc
                else:
                    import structlog

                    structlog.get_logger("leadrelay.send").error(
                        "the event store failed as it closed too", error=str(exc)
                    )
                return True

            stack.push(closing_failed)
            store = stack.enter_context(delivering_store(settings, rereadable))
            stack.enter_context(collecting_less())
            assert ctrl_c is not None  # run_send makes one for a real send
            sending = deliver(
                settings, options, tally, store, progress, rereadable=rereadable, ctrl_c=ctrl_c
            )
            try:
                paused = ctrl_c.run(sending)
            except Stopped:
                stopped, paused = ("SIGTERM", _TERMINATED), None
            except KeyboardInterrupt:  # Ctrl-C cancelled delivery; the store closes below
                stopped, paused = ("Ctrl-C", _INTERRUPTED), None
            except Exception as exc:  # the input failed (a file gone, a mapping process killed)
                failed, paused = exc, None
            else:
                apply_retention(store, settings.store, time.time())
    if failed is not None and not (tally.read or tally.requests):
        raise failed  # nothing done: the caller says why, alone
    if failed is not None and not options.dry_run:
        from leadrelay.delivery.store import StoreError

        if isinstance(failed, StoreError):
            tally.store_failed = True
            said = str(failed).rstrip(".")
            failed = StoreError(f"{said}. Once it answers again, {_to_resume(options.files)}.")
    tally.render(err, dry_run=options.dry_run, stopped=stopped is not None or paused is not None)
    if failed is not None:  # said by the caller, after what was done before it
        raise failed
    if stopped is not None:
        by, code = stopped
        kept = "every event read is stored, delivered or queued"
        if tally.store_failed:  # it could not say what became of every event (delivery.own)
            kept = "the event store did not answer at the end: what it took is stored"
        resume = _to_resume(options.files)
        if not options.files:  # deliver
            kept = "what it did not deliver stays queued in the store"
            if settings.queue is not None:
                kept, resume = "what it did not deliver stays queued", "the fleet's workers send it"
        err.print(f"[bold yellow]Stopped[/bold yellow] ({by}): {kept}; {resume}.", highlight=False)
        return code
    if paused is not None:
        from leadrelay.meta.errors import settings_to_check

        err.print(
            f"[bold red]Delivery stopped:[/bold red] Meta refused the request ({paused.label()}): "
            f"{paused.message}. Check {settings_to_check(paused)} in your config; events not "
            f"delivered stay queued in the store. Once it is fixed, {_to_resume(options.files)}.",
            highlight=False,
        )
        return 1
    return 2 if tally.any_failed else 0
