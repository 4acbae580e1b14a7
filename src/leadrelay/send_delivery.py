"""The delivering half of ``leadrelay send`` (and ``deliver``): a reader thread stores what it
maps while the delivery worker sends what is stored, SIGTERM and Ctrl-C stop it cleanly, and a
send on a fleet's queue waits for its events other processes hold (``delivery.elsewhere``).

Split out of ``send`` (house rule: modules under ~300 lines), which reads the options, runs a dry
run or this, and prints the summary. The delivery stack (asyncio, httpx, the dispatcher, the
stores, structlog) is imported by the functions that use it: a dry run needs none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any

from leadrelay.outcome import DeliveredWhole, Delivery, State
from leadrelay.send_store import waiting
from leadrelay.summary import Tally

if TYPE_CHECKING:
    import asyncio

    from rich.progress import Progress

    from leadrelay.config import Settings
    from leadrelay.delivery.store import Store
    from leadrelay.interrupts import CtrlC
    from leadrelay.meta.client import GraphResult
    from leadrelay.meta.errors import GraphError
    from leadrelay.send import SendOptions


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
    import time

    import structlog

    from leadrelay.delivery.dispatchers import stop_advice
    from leadrelay.delivery.elsewhere import PutBack
    from leadrelay.delivery.intake import ChunkedIntake
    from leadrelay.delivery.own import OwnResults
    from leadrelay.delivery.store import FleetControl, Outcomes, StoreError
    from leadrelay.delivery.wiring import log_request, make_client, make_dispatcher
    from leadrelay.delivery.worker import DeliveryWorker, RequeuePolicy
    from leadrelay.send_input import read_into_store

    d = settings.delivery
    log = structlog.get_logger("leadrelay.send")
    loop = asyncio.get_running_loop()
    # A send knows its files' events by their ids: at its end it counts those it did not settle
    # (found stored, left queued: delivery.own); on a fleet's queue (Redis) it waits for those
    # other processes hold, and counts only its own (delivery.elsewhere). deliver has no events
    # of its own: it counts what it delivers, and what it put back in the queue.
    fleet = store if isinstance(store, FleetControl) else None
    tally.fleet = fleet is not None
    own = None
    if options.files and isinstance(store, Outcomes):
        own = OwnResults(store, tally, fleet=fleet, started=time.time())
    put_back = PutBack(tally) if fleet is not None and not options.files else None

    def on_request(result: GraphResult, events: int) -> None:
        log_request(result, events)
        tally.request(result, events)
        worker.observe_request(result, events)  # on a fleet's queue, a throttle pauses the fleet

    worker = DeliveryWorker(
        store,
        lambda: make_dispatcher(settings, make_client(settings), on_request=on_request),
        batch_size=d.batch_size,
        concurrency=d.concurrency,
        # On a fleet's queue the send delivers the fleet's events too: its policy applies (an
        # outage dead-letters nothing; the events go back to the queue for its workers).
        requeue=RequeuePolicy() if settings.queue else None,
        on_results=own or put_back or partial(_delivered, tally),
        advice=stop_advice,  # not a service's: the summary then says what to fix
        # A store that stopped answering ends the send (StoreError) after this long, where
        # serve and worker wait for it.
        store_patience_s=d.store_patience_s,
    )
    if ctrl_c is not None:
        ctrl_c.worker = worker

    def stored() -> None:
        # The reader may store its last events after the send ended and closed the loop (a
        # Ctrl-C does not wait for it): nothing is left to wake then, and its flush must go on.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(worker.notify)

    intake = ChunkedIntake(
        store,
        size=d.batch_size,
        max_age_s=d.batch_max_age_s,
        on_stored=stored,
        on_added=None if own is None else own.added,
        patience_s=d.store_patience_s,
    )
    stop_reading = threading.Event()
    stop = asyncio.Event()
    # Everything read is stored: the worker delivers what is left and ends (a batch still in
    # flight then is not cut short: one retrying through a Meta outage was put back, sent again
    # and counted as another run's).
    read_all = asyncio.Event()
    halt = asyncio.Event()  # SIGTERM: stop reading, finish what is in flight, store the rest

    def terminate() -> None:
        halt.set()
        stop_reading.set()
        stop.set()  # no new batch: the ones in flight finish, what waits is stored queued

    # Not with --jobs N: a SIGTERM sent to the whole process group (systemd, timeout) ends the
    # mapping processes too, and the reader then waited on them for good (seen once in three).
    graceful = options.jobs <= 1 and rereadable
    try:
        with _graceful_sigterm(loop, terminate, graceful):
            runner = asyncio.create_task(worker.run_until_idle(stop, more=read_all))
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
                    if worker.paused is not None or runner.done():  # or gave up on the store
                        stop_reading.set()
                    if worker.store_gave_up is not None:
                        break  # not waiting for a reader a quiet pipe may hold for good
                    await asyncio.to_thread(intake.flush_if_old)
                else:
                    await reader
                    read_all.set()
                    worker.notify()
            finally:
                stop_reading.set()
                # Stopped early (Ctrl-C), how the reader ends is no news (the mapping processes a
                # Ctrl-C hit while they started: EOFError): retrieved, not logged by asyncio.
                reader.add_done_callback(_retrieved)
                if not read_all.is_set():
                    # Stopped while reading (or the reader failed): the batches in flight drain,
                    # and what the intake holds is stored now, queued, not when the reader gets
                    # to it; one blocked on a quiet pipe never would. Not in a store given up on.
                    stop.set()
                    try:
                        if worker.store_gave_up is not None:
                            raise StoreError(worker.store_gave_up)
                        # Tried once: a stop must not wait out the patience for it.
                        await asyncio.shield(asyncio.to_thread(intake.flush, patient=False))
                    except Exception as exc:  # a store's failure; what failed first is raised
                        tally.store_failed = True  # what it held is not accounted for
                        log.error(
                            "the event store did not take the last events read",
                            error=f"{type(exc).__name__}: {exc}",
                        )
                try:  # a Ctrl-C now must not cut the drain of the batches in flight short
                    await asyncio.shield(runner)
                except asyncio.CancelledError:
                    stop.set()  # delivering what was left after reading: stopped now
                    await runner
                    raise
            paused = worker.paused
            if paused is None and not halt.is_set() and settings.queue:
                from leadrelay.delivery.elsewhere import say_held_elsewhere, settle_elsewhere

                claim_idle_s = settings.queue.claim_idle_s
                if own is not None and fleet is not None:  # a send with files
                    paused = await settle_elsewhere(fleet, worker, own.spans, claim_idle_s, halt)
                elif put_back is not None:  # deliver
                    # What the fleet holds is said, not waited for; what it put back is counted.
                    await say_held_elsewhere(store, claim_idle_s, put_back, tally)
        if own is not None:
            # Once, at the end or on SIGTERM (also during a fleet's wait): what became of what it
            # read and did not settle itself (delivery.own; on a fleet, delivery.elsewhere).
            await own.account(waiting=waiting(store))
    except (asyncio.CancelledError, Exception) as exc:  # Ctrl-C, the input failed (a file
        # gone, a mapping process killed), the store stopped answering: what it read is
        # accounted for, as on SIGTERM (as far as the store can still say)
        # A store given up on is not asked again: one that hangs would hold the send as long
        # again for each question (what the store cannot say is "not accounted for").
        if worker.store_gave_up is not None or intake.gave_up is not None:
            tally.store_failed = True
        elif own is not None:
            await own.account(stopped=True, waiting=waiting(store))
        if isinstance(exc, StoreError) and worker.unrecorded:
            again = "the next run sends them again"
            if settings.queue is not None:  # held under this process's name: taken back after
                idle = settings.queue.claim_idle_s
                again = f"they are sent again once queue.claim_idle_s ({idle:g} s) has passed"
            raise StoreError(
                f"{str(exc).rstrip('.')}; Meta's answers for {worker.unrecorded} events sent in "
                f"this run could not be recorded: {again}, with the same event_id, which Meta "
                "deduplicates"
            ) from exc
        raise
    if halt.is_set():
        raise Stopped()
    return paused


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


def _delivered(tally: Tally, _: Sequence[int], results: Sequence[Delivery]) -> None:
    """``on_results`` for ``deliver`` (SQLite): what it settles is counted. Not the batches a
    stop cuts short or a pause holds: they stay queued, as do those it had not taken yet, which
    it does not count either (a summary with the cut ones alone said 200 queued of 2,970)."""
    if type(results) is not DeliveredWhole:
        results = [r for r in results if r.state is not State.QUEUED]
    tally.deliveries(results)


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
