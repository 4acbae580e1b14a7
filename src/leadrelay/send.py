"""``leadrelay send``: read files, map every event, deliver (or print with --dry-run), account.

This is the file intake of the pipeline: the same Mapper and Dispatcher serve the HTTP service.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from leadrelay.collecting import collecting_less
from leadrelay.events import InputError
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.parallel import dry_run_parallel, map_records
from leadrelay.outcome import Payload
from leadrelay.summary import Tally

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console
    from rich.progress import Progress

    from leadrelay.config import Settings
    from leadrelay.delivery.store import Store
    from leadrelay.interrupts import CtrlC
    from leadrelay.meta.client import GraphResult
    from leadrelay.meta.errors import GraphError

# The delivery stack (asyncio, httpx, the dispatcher, the SQLite store, structlog) and the
# progress bar are imported by the functions that use them: a dry run, usually written to a pipe,
# needs none of them, and they were most of its start-up time.

_REMEMBERED = 20_000
_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended
_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C
_WAITING = 10_000  # payloads read and not sent yet, kept in memory (write-behind) at most


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


async def deliver(
    settings: Settings,
    options: SendOptions,
    tally: Tally,
    store: Store,
    progress: Progress | None = None,
    *,
    rereadable: bool,
    ctrl_c: CtrlC | None = None,
) -> GraphError | None:
    """Store every event of the files and deliver the payloads; returns why delivery paused.
    ``rereadable``: every input can be read again by the next run (``_rereadable``).
    ``ctrl_c``: what runs the loop, told of the worker (a second Ctrl-C cuts its drain short).

    Reading and delivery overlap: a reader thread stores chunks (full, or after
    ``batch_max_age_s``) while the worker delivers what is stored. Events already stored by an
    earlier run of the same files (same event ids) are not stored or sent again, so an
    interrupted send resumes where it left off.
    """
    import asyncio
    import threading

    from leadrelay.delivery.intake import ChunkedIntake, Spans
    from leadrelay.delivery.store import FleetControl
    from leadrelay.delivery.wiring import log_request, make_client, make_dispatcher
    from leadrelay.delivery.worker import DeliveryWorker
    from leadrelay.send_input import read_into_store

    d = settings.delivery
    loop = asyncio.get_running_loop()

    def on_request(result: GraphResult, events: int) -> None:
        log_request(result, events)
        tally.request(result, events)
        worker.observe_request(result, events)  # on a fleet's queue, a throttle pauses the fleet

    worker = DeliveryWorker(
        store,
        lambda: make_dispatcher(settings, make_client(settings), on_request=on_request),
        batch_size=d.batch_size,
        concurrency=d.concurrency,
        requeue=None,
        on_results=tally.deliveries,
    )
    if ctrl_c is not None:
        ctrl_c.worker = worker

    def stored() -> None:
        # The reader may store its last events after the send ended and closed the loop (a
        # Ctrl-C does not wait for it): nothing is left to wake then, and its flush must go on.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(worker.notify)

    # A fleet's send waits for its events other processes hold (delivery.elsewhere).
    spans = Spans() if isinstance(store, FleetControl) else None
    tally.fleet = spans is not None
    intake = ChunkedIntake(
        store, size=d.batch_size, max_age_s=d.batch_max_age_s, on_stored=stored, spans=spans
    )
    stop_reading = threading.Event()
    stop = asyncio.Event()
    halt = asyncio.Event()  # SIGTERM: stop reading, finish what is in flight, store the rest

    def terminate() -> None:
        halt.set()
        stop_reading.set()
        stop.set()  # no new batch: the ones in flight finish, what waits is stored queued

    # Not with --jobs N: a SIGTERM sent to the whole process group (systemd, timeout) ends the
    # mapping processes too, and the reader then waited on them for good (seen once in three).
    graceful = options.jobs <= 1 and rereadable
    with _graceful_sigterm(loop, terminate, graceful):
        runner = asyncio.create_task(worker.run(stop))
        reader = _in_daemon_thread(
            read_into_store,
            options.files,
            settings,
            options.jobs,
            tally,
            intake,
            stop_reading,
            progress,
        )
        try:
            while not reader.done():
                await asyncio.wait({reader}, timeout=min(0.25, d.batch_max_age_s))
                if worker.paused is not None:
                    stop_reading.set()
                await asyncio.to_thread(intake.flush_if_old)
            await reader
        finally:
            stop_reading.set()
            stop.set()
            # Stopped early (Ctrl-C), how the reader ends is no news (the mapping processes a
            # Ctrl-C hit while they started: EOFError): retrieved, not logged by asyncio.
            reader.add_done_callback(_retrieved)
            if not reader.done():
                # Stopped while reading: what the intake holds is stored now, queued, not when
                # the reader gets to it; one blocked on a quiet pipe never would.
                await asyncio.shield(asyncio.to_thread(intake.flush))
            try:  # a Ctrl-C now must not cut the drain of the batches in flight short
                await asyncio.shield(runner)
            except asyncio.CancelledError:
                await runner
                raise
        paused = worker.paused
        if paused is None and not halt.is_set():
            paused = await worker.run_until_idle(halt)
        if paused is None and not halt.is_set() and settings.queue:
            from leadrelay.delivery.elsewhere import say_held_elsewhere, settle_elsewhere

            claim_idle_s = settings.queue.claim_idle_s
            if spans and isinstance(store, FleetControl):
                paused = await settle_elsewhere(store, worker, spans, claim_idle_s, tally, halt)
            elif not options.files:  # deliver: what the fleet holds is said, not waited for
                await say_held_elsewhere(store, claim_idle_s)
    if halt.is_set():
        raise Stopped()
    return paused


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
    sends only what was stored, so for files it is the same send (which skips what is stored)."""
    if _rereadable(files):
        return (
            "run the same send again: it sends what is queued and reads the files again, "
            "skipping the events already stored"
        )
    return (
        "run leadrelay deliver to send what is queued; what the input had not given yet was "
        "not read"
    )


def _in_daemon_thread(fn: Callable[..., None], *args: Any) -> asyncio.Future[None]:
    """``asyncio.to_thread(fn, *args)`` on a thread of its own that the interpreter does not
    wait for when it exits. The reader of a pipe whose producer went quiet stays blocked in
    read() after a Ctrl-C has stored what it read: on an executor thread, which the interpreter
    joins at exit, the send could not end (a third Ctrl-C aborted it)."""
    import asyncio
    import contextvars
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    context = contextvars.copy_context()

    def settle(error: BaseException | None) -> None:
        if not future.done():  # cancelled meanwhile: nobody waits for it
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            context.run(fn, *args)
        except BaseException as exc:
            error = exc
        with suppress(RuntimeError):  # the loop is closed: the send ended without it
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="leadrelay-reader", daemon=True).start()
    return future


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Stopped(Exception):
    """SIGTERM stopped a send cleanly: every event it read is stored, delivered or queued."""


@contextmanager
def _graceful_sigterm(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], None], enabled: bool
) -> Iterator[None]:
    """SIGTERM calls ``stop`` instead of ending the process on the spot, while this lasts.

    Only for input the reader never waits on (files, one job: ``enabled``): a pipe's reader may
    be blocked on a producer that writes nothing, and a stop would wait for it. A pipe's events
    are stored as they are read, so the default (ending the process) loses at most the chunk
    being filled.
    Outside the main thread (a send run by a host program) signals are the host's business.
    """
    import signal

    try:
        if enabled:
            loop.add_signal_handler(signal.SIGTERM, stop)
    except (ValueError, RuntimeError, NotImplementedError):
        enabled = False
    try:
        yield
    finally:
        if enabled:
            loop.remove_signal_handler(signal.SIGTERM)


def _rereadable(files: Sequence[str]) -> bool:
    """Whether every input can be read again by the next run (regular files, not pipes)."""
    return all(name != "-" and Path(name).is_file() for name in files)


def _streamed(files: Sequence[str]) -> bool:
    """Whether an input is standard input or a pipe (a directory or a missing file is an input
    error, said when it is opened)."""
    return any(name == "-" or _special(Path(name)) for name in files)


def _special(path: Path) -> bool:
    """A FIFO, a character device, a socket: read as a stream, not as a file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False  # missing: an input error, said when it is opened
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


@contextmanager
def _delivering_store(settings: Settings, rereadable: bool) -> Iterator[Store]:
    """The config's store, held with the one-deliverer lock of its data_dir. For input that a
    later run can read again, what is read waits in memory and is stored once, settled
    (``write_behind``); a pipe's events are stored as they are read."""
    from leadrelay.delivery.sqlite_store import SQLiteStore
    from leadrelay.delivery.wiring import delivery_lock, open_store
    from leadrelay.delivery.write_behind import WriteBehindStore

    data_dir = settings.server.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"server.data_dir {str(data_dir)!r} cannot be created ({exc.strerror or exc}); "
            "set it to a folder this user may write to"
        ) from None
    try:
        lock = delivery_lock(data_dir)
    except BlockingIOError:
        raise InputError(
            f"another leadrelay process (a running serve or send) delivers from {data_dir}; "
            "wait for it, or give this config its own server.data_dir"
        ) from None
    try:
        # What retention at the end would drop, dropped as events are delivered instead; and
        # the payloads this process stores kept for its own delivery (some 20 MB at most).
        drop = settings.store.drop_originals_after_delivery
        store = open_store(settings, drop_delivered_bodies=drop, remember_unclaimed=_REMEMBERED)
        if isinstance(store, SQLiteStore) and rereadable:
            store = WriteBehindStore(store, limit=_WAITING)
        try:
            yield store
        finally:
            store.close()
    finally:
        os.close(lock)


def run_send(settings: Settings, options: SendOptions, *, err: Console) -> int:
    """Run a send; returns the exit code (0 clean, 2 some rejected, expired or dead, 1 stopped by
    Meta's refusal, 143 stopped by SIGTERM, 130 by Ctrl-C)."""
    if options.dry_run:
        return _run_send(settings, options, err, None)
    from leadrelay.interrupts import CtrlC

    # Entered before the store opens and left after the summary: a Ctrl-C once delivery has
    # stopped does not cut the storing of what was read, nor the summary, short.
    with CtrlC(lambda text: err.print(text, highlight=False)) as ctrl_c:
        return _run_send(settings, options, err, ctrl_c)


def _run_send(settings: Settings, options: SendOptions, err: Console, ctrl_c: CtrlC | None) -> int:
    stopped: tuple[str, int] | None = None  # what stopped delivery early, and the exit code
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
        if options.dry_run and (options.jobs > 1 or progress is None):
            # Without a progress bar to feed, the dry run takes the bulk path, also on one job.
            dry_run_parallel(
                options.files, settings, sys.stdout.buffer, tally, workers=options.jobs
            )
            paused = None
        elif options.dry_run:
            stream = payloads(options.files, Mapper(settings), tally, progress)
            dry_run(settings, stream, sys.stdout.buffer, tally)
            paused = None
        else:
            from leadrelay.delivery.retention import apply_retention

            # Asked once: the store and the handling of SIGTERM both depend on it.
            rereadable = _rereadable(options.files)
            store = stack.enter_context(_delivering_store(settings, rereadable))
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
            else:
                apply_retention(store, settings.store, time.time())
    tally.render(err, dry_run=options.dry_run, stopped=stopped is not None or paused is not None)
    if stopped is not None:
        by, code = stopped
        err.print(
            f"[bold yellow]Stopped[/bold yellow] ({by}): every event read is stored, "
            f"delivered or queued; {_to_resume(options.files)}.",
            highlight=False,
        )
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
