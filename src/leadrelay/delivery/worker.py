"""The store-driven delivery loop shared by ``leadrelay serve`` and ``leadrelay send``.

``DeliveryWorker`` claims due payloads from a ``Store`` in batches, hands them to a ``Dispatcher``
and records what became of each one. Up to ``concurrency`` batches are in flight; when nothing is
due it waits for ``notify()`` (intake stored something) or the poll interval (retries falling due).

What it does with the dispatcher's results is told in ``results``: final states are completed,
events held by a paused dispatcher (Meta refused the token) go back to the queue, and so do
events whose retries ran out when there is a ``RequeuePolicy`` (the service: an outage of hours
dead-letters nothing; an event still not delivered after Meta's 7-day window ends EXPIRED by the
dispatcher's own check). Once paused, the worker claims nothing until ``resume()`` swaps in a
fresh dispatcher (after the config was fixed and reloaded); ``paused`` says why meanwhile.

On a store shared by a fleet of processes (``FleetControl``, i.e. Redis) the worker also honours
the fleet-wide pause and renews the events of its batches in flight (``fleet_watch``). Each
batch's dispatcher still retries with its own backoff; the pause only keeps new batches from
starting anywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import structlog

from leadrelay.delivery.batches import Batches
from leadrelay.delivery.dispatcher import Dispatcher, RetryPolicy
from leadrelay.delivery.dispatchers import Dispatchers, pause_advice
from leadrelay.delivery.fleet_watch import FleetWatch
from leadrelay.delivery.results import OnResults, Recorder, RequeuePolicy, WorkerObserver
from leadrelay.delivery.store import Claimed, FleetControl, Store, StoreError
from leadrelay.delivery.store_calls import StoreCalls
from leadrelay.meta.client import GraphResult
from leadrelay.meta.errors import GraphError

__all__ = ["DeliveryWorker", "RequeuePolicy", "WorkerObserver", "pause_advice"]

log = structlog.get_logger("leadrelay.worker")

_DEFAULT_CLAIM_IDLE_S: Final = 60.0
_DEFAULT_REQUEUE: Final = RequeuePolicy()  # frozen, so sharing it is safe


class DeliveryWorker:
    """Delivers what the store holds, batch by batch, until stopped.

    ``dispatcher_factory`` builds the dispatcher (and its ``GraphClient``); it is called here (so
    a bad config fails early), by ``resume()`` and when a run starts after another one ended.
    The worker owns what it returns and closes each client once no batch uses it any more.
    ``requeue=None`` makes DEAD final (``send``); a ``RequeuePolicy`` keeps retrying
    (``serve``). Store calls run in threads (``asyncio.to_thread``). On stop, batches in flight
    get ``drain_timeout_s`` to finish; the rest are cancelled and put back in the queue.
    ``batch_size`` and ``concurrency`` may be changed between batches. With a
    ``store_patience_s`` (a send), a store that fails every call for that long ends the run with
    a ``StoreError``; the batches in flight drain, and those whose results cannot be recorded
    are sent again by the next run (``unrecorded`` counts those Meta answered).

    On a ``FleetControl`` store the worker honours the fleet-wide pause and renews the events of
    its batches in flight every ``renew_every_s`` (default: a third of the store's
    ``claim_idle_s``); chain ``observe_request`` into the dispatcher's ``on_request`` so that a
    throttled answer pauses the fleet.
    """

    def __init__(
        self,
        store: Store,
        dispatcher_factory: Callable[[], Dispatcher],
        *,
        batch_size: int = 1000,
        concurrency: int = 4,
        requeue: RequeuePolicy | None = _DEFAULT_REQUEUE,
        poll_interval_s: float = 0.5,
        drain_timeout_s: float = 20.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: WorkerObserver | None = None,
        on_results: OnResults | None = None,
        renew_every_s: float | None = None,
        advice: Callable[[GraphError], str] = pause_advice,
        store_patience_s: float | None = None,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError(f"batch_size must be between 1 and 1000, got {batch_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if poll_interval_s <= 0 or drain_timeout_s < 0:
            raise ValueError("poll_interval_s must be positive and drain_timeout_s >= 0")
        if renew_every_s is None:
            idle = getattr(store, "claim_idle_s", None)
            renew_every_s = (idle if isinstance(idle, int | float) else _DEFAULT_CLAIM_IDLE_S) / 3
        if renew_every_s <= 0:
            raise ValueError(f"renew_every_s must be positive, got {renew_every_s}")
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.drain_timeout_s = drain_timeout_s
        self._renew_every_s = renew_every_s
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._dispatchers = Dispatchers(dispatcher_factory, advice)
        self._paused_at_close: GraphError | None = None  # see ``paused``
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._stop: asyncio.Event | None = None
        self._store_call = StoreCalls(self._stopped, sleep, patience_s=store_patience_s)
        self._recorder = Recorder(
            store,
            self._store_call,
            requeue=requeue,
            clock=clock,
            observer=observer,
            on_results=on_results,
        )
        self._fleet = (
            FleetWatch(
                store, self._store_call, clock=clock, sleep=sleep, renew_every_s=renew_every_s
            )
            if isinstance(store, FleetControl)
            else None
        )
        self._batches = Batches(self._recorder, self._dispatchers, self._fleet, observer)

    @property
    def renew_every_s(self) -> float:
        """How often held events are renewed (Redis), fixed when the worker is built: the fleet
        watch took it then."""
        return self._renew_every_s

    @property
    def unrecorded(self) -> int:
        """Events of batches Meta answered whose results the store refused (see the class)."""
        return self._batches.unrecorded

    @property
    def requeue(self) -> RequeuePolicy | None:
        """What becomes of events whose retries ran out (None: they are DEAD)."""
        return self._recorder.requeue

    @property
    def store_error(self) -> str | None:
        """The last store failure, cleared by the next successful store call."""
        return self._store_call.error

    @property
    def store_gave_up(self) -> str | None:
        """Why the run ended on the store (``store_patience_s`` ran out), or None."""
        return self._store_call.gave_up

    @property
    def paused(self) -> GraphError | None:
        """Why delivery is paused (Meta refused the token or permission), or None. After a run,
        why that run's delivery was paused, until the next run starts with a fresh dispatcher."""
        dispatcher = self._dispatchers.current
        return self._paused_at_close if dispatcher is None else dispatcher.paused

    @property
    def in_flight(self) -> int:
        """Batches being delivered right now."""
        return len(self._tasks)

    def notify(self) -> None:
        """Something was stored: look for due payloads now. Call from the event loop."""
        if self._wake is not None:
            self._wake.set()

    def observe_request(self, result: GraphResult, events: int) -> None:
        """Chain into the dispatcher's ``on_request``: on a ``FleetControl`` store, a throttled
        answer pauses the whole fleet for ``throttle_floor`` (or longer if Meta said so). This
        worker stops claiming at once; the store is told in the background. Call it from the
        event loop the worker runs in."""
        if self._fleet is None or result.error is None:
            return
        dispatcher = self._dispatchers.current
        policy = dispatcher.policy if dispatcher is not None else RetryPolicy()
        self._fleet.observe(result, policy.throttle_floor)

    def resume(self) -> None:
        """Swap in a fresh dispatcher from the factory (reloaded config) and resume delivery.

        Call it from the event loop the worker runs in, or between runs. Raises what the factory
        raises, leaving the current dispatcher in place.
        """
        old = self._dispatchers.swap()
        log.info(
            "delivery resumed with a new dispatcher",
            was_paused=old is not None and bool(old.paused),
        )
        self.notify()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then drain (see the class) and close the clients."""
        self._stop = stop
        try:
            await self._start()
            await self._loop(stop, until_idle=False)
        finally:
            await self._drain()
            await self._close()

    async def run_until_idle(
        self, stop: asyncio.Event | None = None, *, more: asyncio.Event | None = None
    ) -> GraphError | None:
        """Deliver until no queued event remains (due or not), delivery pauses, or ``stop`` is
        set (then batches in flight drain as in ``run``). On a fleet's store, until there is
        nothing to claim: what is left (other processes' events in flight, retries not due,
        events behind those of their lead) is the fleet's (``delivery.elsewhere``). Until
        ``more`` is set (then ``notify``), more is coming (a send's reader): being idle is no
        end, and the batches in flight when it is set are not cut short by a drain timeout.

        Returns why it paused, or None. Rows IN_FLIGHT at start are taken back first.
        """
        self._stop = asyncio.Event() if stop is None else stop
        try:
            await self._start()
            await self._loop(self._stop, until_idle=True, more=more)
            paused = self.paused
        finally:
            await self._drain()
            await self._close()
        if self.store_gave_up is not None:
            raise StoreError(self.store_gave_up)
        return paused

    async def _start(self) -> None:
        self._paused_at_close = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatchers.ensure()
        released = await self._store_call(self._store.release_in_flight)
        if released:
            log.warning("took back events left in flight by a previous run", events=released)

    @property
    def batches_in_flight(self) -> int:
        """Batches sent and not settled yet."""
        return sum(not task.done() for task in self._tasks)

    def cut_short(self) -> int:
        """Stop at once (a second Ctrl-C): no new batch, and the batches in flight are cancelled
        as the drain timeout would cancel them (their events go back to the queue, for the next
        run). Returns how many were cancelled."""
        self._stopping = True
        # Not those cancelled already (by the drain timeout): cancelled again, they would stop
        # waiting for their events to be put back.
        pending = [task for task in self._tasks if not (task.done() or task.cancelling())]
        for task in pending:
            task.cancel()
        return len(pending)

    async def _loop(
        self, stop: asyncio.Event, *, until_idle: bool, more: asyncio.Event | None = None
    ) -> None:
        while not (stop.is_set() or self._stopping):
            self._reap()
            if self.paused is not None:
                if until_idle:
                    return
                await self._wait(stop, None)
                continue
            if len(self._tasks) >= self.concurrency:
                await self._wait(stop, None)
                continue
            # Whether more was coming before this claim: if it came while the claim ran (a
            # send's reader storing its last events), finding nothing proves nothing, and the
            # worker looked idle with the send's own last events queued (a flaky fleet test).
            all_in = more is None or more.is_set()
            try:
                if self._fleet is not None and (pause := await self._fleet.pause()):
                    await self._wait(stop, pause, woken=False)
                    continue
                claimed = await self._store_call(
                    partial(self._store.claim, self.batch_size, self._clock()), retry=False
                )
            except Exception:
                if self.store_gave_up is not None:
                    return  # the run ends with the store's error (run_until_idle raises it)
                await self._wait(stop, self.poll_interval_s * 4)
                continue
            if claimed:
                self._spawn(claimed)
                continue
            if until_idle and not self._tasks and all_in:
                if self._fleet is not None:
                    return
                counts = await self._store_call(partial(self._store.counts, self._clock()))
                if counts.queued == 0:
                    return
            await self._wait(stop, self.poll_interval_s)

    def _spawn(self, claimed: list[Claimed]) -> None:
        dispatcher = self._dispatchers.hold()
        self._tasks.add(asyncio.create_task(self._batches.deliver(dispatcher, claimed)))

    def _reap(self) -> None:
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("delivery batch failed", exc_info=task.exception())

    async def _wait(
        self, stop: asyncio.Event, timeout: float | None, *, woken: bool = True
    ) -> None:
        """Until woken (intake, resume; unless not ``woken``), stopped, a batch finished, or
        ``timeout`` passed."""
        assert self._wake is not None
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        if woken:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        if timeout is not None:
            waiters.append(asyncio.ensure_future(self._sleep(timeout)))
        try:
            await asyncio.wait([*waiters, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()

    def _stopped(self) -> bool:
        return (
            self._stopping
            or self._store_call.gave_up is not None
            or (self._stop is not None and self._stop.is_set())
        )

    async def _drain(self) -> None:
        self._stopping = True
        if self._tasks:
            log.info("draining batches in flight", batches=len(self._tasks))
            _, pending = await asyncio.wait(list(self._tasks), timeout=self.drain_timeout_s)
            for task in pending:
                if not task.cancelling():  # cut short already (a second Ctrl-C)
                    task.cancel()
            if pending:
                log.warning(
                    "cut short batches still in flight after the drain timeout",
                    batches=len(pending),
                )
                await asyncio.wait(pending)
        self._reap()

    async def _close(self) -> None:
        if self._fleet is not None:
            await self._fleet.settle()
        # Kept: closing drops the dispatcher, and a send asks once the run is over (a send that
        # took it for None would deliver again, with the token Meta had just refused).
        self._paused_at_close = self.paused
        await self._dispatchers.close()
