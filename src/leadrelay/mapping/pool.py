"""Worker processes for ``parallel``: units of input out to them, results back, in order.

The parent splits the input into units of about ``unit_events`` events (NDJSON as blocks of raw
lines, so splitting and parsing happen in the workers; other formats as records read in the
parent). At most two units per worker are in flight, and results come back in submission
order, so output is identical whatever the number of workers and memory is bounded whatever
the input size.

Workers are started with ``forkserver`` (``spawn`` where that does not exist): each builds its
own ``Mapper`` from the settings once, and exits when the parent does, however it ends (``kill``
of the parent alone, SIGKILL): else it would wait on its queue for good, and keep the fork server
and the resource tracker alive with it. Workers ignore SIGINT: Ctrl-C reaches the whole process
group, and a worker interrupted while writing its result left the parent waiting for the rest of
it for good (one Ctrl-C in eight on a dry run); the parent shuts the pool down instead, letting
the units being mapped finish. However the send ends, ``in_workers`` returns only once the
pool's manager thread and workers have ended, without hanging (``pool_watch``).

Results travel back pickled as plain tuples and bytes (much faster than the outcome objects)
and are unpickled one unit at a time as they are consumed, with the cyclic garbage collector
paused meanwhile: tens of thousands of new containers that are alive anyway would otherwise
trigger collections that scan everything alive, again and again (it made unpickling five times
slower). Mapping creates no reference cycles, so workers collect once per unit instead of on
allocation counts.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Final, TypeVar

from leadrelay.config import Settings
from leadrelay.events import InputError, SourceRecord, read_pieces
from leadrelay.mapping.encode import Row, Unit, encode_unit
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.pool_watch import Watch
from leadrelay.mapping.store_unit import store_unit

if TYPE_CHECKING:
    from concurrent.futures import Future
    from multiprocessing.context import BaseContext

_Result = TypeVar("_Result")
Joined = tuple[bytes, "array[int]", list[Row], int]

UNIT_EVENTS: Final = 2000
"""Events per unit of work: large enough that handing a unit over costs little per event."""


def in_workers(
    files: Sequence[str],
    settings: Settings,
    workers: int,
    unit_events: int,
    task: Callable[[Unit, bool], _Result],
    flag: bool,
) -> Generator[_Result, None, None]:
    """``task(unit, flag)`` for every unit of the input, in worker processes; results in order.

    Close the generator when done with it (``contextlib.closing``): the workers end then, and
    raises ``BrokenProcessPool`` naming the worker when one of them died."""
    # Imported here: one job (the usual dry run) needs neither, and they cost ~6 ms to import.
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_context(),
        initializer=_start_worker,
        initargs=(settings, os.getpid()),
    )
    watch = Watch(pool)
    pending: deque[Future[_Result]] = deque()
    try:
        try:
            for unit in units(files, unit_events):
                pending.append(pool.submit(task, unit, flag))
                # Two units per worker keep every worker busy while this process consumes one.
                while len(pending) > 2 * workers:
                    yield watch.result(pending.popleft())
        except InputError:
            # As on one core: what was read before the file that cannot be opened comes first.
            while pending:
                yield watch.result(pending.popleft())
            raise
        while pending:
            yield watch.result(pending.popleft())
    except BaseException as exc:
        pending.clear()
        interrupted = watch.shut_down()
        if interrupted and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        if isinstance(exc, BrokenProcessPool):
            raise BrokenProcessPool(watch.why()) from None
        raise
    if watch.shut_down(clean=True):
        raise KeyboardInterrupt


def units(files: Sequence[str], size: int) -> Iterator[Unit]:
    """The input in units of about ``size`` events, in order.

    Raises ``InputError`` (after the unit read before it) when a file cannot be opened."""
    unit: Unit = []
    count = 0
    for name in files:
        try:
            pieces = read_pieces(name)
        except InputError:
            if unit:  # what was read before goes first, as on one core
                yield unit
            raise
        for piece in pieces:
            if isinstance(piece, SourceRecord):
                unit.append((piece.where, piece.event, piece.error))
                count += 1
            else:
                unit.append(piece)
                count += piece.size
            if count >= size:
                yield unit
                unit, count = [], 0
    if unit:
        yield unit


def unpickled(blob: bytes) -> Any:
    """``pickle.loads(blob)`` with the cyclic garbage collector paused (see the docstring)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return pickle.loads(blob)
    finally:
        if collecting:
            gc.enable()


def _context() -> BaseContext:
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # Workers forked from a server that has imported the mapping start in milliseconds;
        # server_start first, so that the server ignores Ctrl-C while it imports.
        context.set_forkserver_preload(["leadrelay.mapping.server_start", __name__])
        _start_server()
        return context
    return multiprocessing.get_context("spawn")


def _start_server() -> None:
    """Start the fork server with Ctrl-C blocked, as multiprocessing's resource tracker starts
    itself: the server inherits the mask, so a terminal's Ctrl-C (it reaches the whole process
    group) waits while Python starts in the server, until server_start ignores it. It ended the
    server with a traceback from its imports in 2 of 40 Ctrl-Cs 0.3-0.6 s into a send -j 2.
    This thread's mask is restored; a Ctrl-C meanwhile arrives then."""
    from multiprocessing import forkserver, resource_tracker

    # The tracker first: starting it unblocks SIGINT in this thread (it blocks it around its own
    # start), which would let the server start with it unblocked. Running, it changes nothing.
    resource_tracker.ensure_running()
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not on Linux or macOS
        forkserver.ensure_running()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# ---------------------------------------------------------------------------- worker side

_mapper: Mapper | None = None


def _start_worker(settings: Settings, parent: int) -> None:
    global _mapper
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's (see the docstring)
    _exit_with(parent)
    _mapper = Mapper(settings)
    gc.freeze()  # what is alive now (modules, the mapper) lives as long as the worker
    gc.disable()  # collected after each unit instead (see the module docstring)


def _exit_with(parent: int) -> None:
    """End this process when process ``parent`` ends: what it maps is only ever for the parent.
    Watched through a pidfd (Linux: at once), else by looking every second (where the parent's
    pid could be given to another process of the same user meanwhile: then it stays). Not on
    Windows, where ``os.kill(pid, 0)`` would send the parent a Ctrl-C."""
    if os.name != "posix":
        return
    try:
        watched = os.pidfd_open(parent)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd here

        def watch() -> None:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(parent, 0)
                except OSError:  # gone, or the pid is another user's now
                    os._exit(1)

    else:

        def watch() -> None:
            select.select([watched], [], [])  # readable once the process has ended
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_mapper() -> Mapper:
    if _mapper is None:  # pragma: no cover - the pool always runs the initializer first
        raise RuntimeError("worker started without settings")
    return _mapper


def encode_unit_task(unit: Unit, every_payload: bool) -> Joined:
    """``encode_unit`` in a worker, in the shape that travels back cheaply: the payloads' JSON
    joined by commas (one object, not thousands: the data is copied a few times between here
    and the output, and each copy costs per object) with where each ends (payload ``n`` is
    ``joined[bounds[n] + 1 : bounds[n + 1]]``), and the rows and count as ``Encoded``."""
    try:
        bodies, rows, plain = encode_unit(_worker_mapper(), unit, every_payload)
        bounds = array("q", accumulate((len(body) + 1 for body in bodies), initial=-1))
        return b",".join(bodies), bounds, rows, plain
    finally:
        gc.collect()


def store_unit_task(unit: Unit, wheres: bool) -> bytes:
    """``store_unit`` in a worker (``send --jobs N``), pickled: plain tuples, no objects."""
    try:
        done = store_unit(_worker_mapper(), unit, wheres)
        return pickle.dumps(tuple(done), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        gc.collect()
