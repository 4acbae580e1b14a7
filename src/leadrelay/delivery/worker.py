"""The store-driven delivery loop shared by ``leadrelay serve`` and ``leadrelay send``.

``DeliveryWorker`` claims due payloads from a ``Store`` in batches, hands them to a ``Dispatcher``
and records what became of each one. Up to ``concurrency`` batches are in flight; when nothing is
due it waits for ``notify()`` (intake stored something) or the poll interval (retries falling due).

What it does with the dispatcher's results:

- DELIVERED / REJECTED / EXPIRED are final: ``store.complete``.
- QUEUED (Meta refused the token: the dispatcher paused) goes back to the queue without counting
  an attempt. The worker then claims nothing until ``resume()`` swaps in a fresh dispatcher
  (after the config was fixed and reloaded). ``paused`` says why meanwhile.
- DEAD with reason ``retries_exhausted``: final only without a ``RequeuePolicy``. With one (the
  service), the events go back to the queue at a growing delay, so an outage of hours does not
  dead-letter anything; an event still not delivered after Meta's 7-day window ends EXPIRED by the
  dispatcher's own check.

On a store shared by a fleet of processes (``FleetControl``, i.e. Redis), two more things:

- Fleet pause: before each claim the worker asks the store whether the fleet is paused and, if
  so, claims nothing until the pause ends (or the worker stops). A throttled Graph answer seen
  through ``observe_request`` sets that pause for every worker, for the retry policy's
  ``throttle_floor`` or what Meta asked, whichever is longer. Each batch's dispatcher still
  retries with its own backoff; the pause only keeps new batches from starting anywhere.
- Renewal: while a batch is in flight (long retries included), its events are renewed every
  ``renew_every_s`` so other workers do not take them over as if this one had died.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Protocol, TypeVar

import structlog

from leadrelay.delivery.dispatcher import Dispatcher, RetryPolicy
from leadrelay.delivery.store import Claimed, FleetControl, Store
from leadrelay.meta.client import GraphResult
from leadrelay.meta.errors import ErrorKind, GraphError
from leadrelay.outcome import Delivery, State

log = structlog.get_logger("leadrelay.worker")

_T = TypeVar("_T")
_MAX_EXPONENT: Final = 64  # keeps factor ** n finite; the delay is capped long before
_STORE_RETRY_MAX_S: Final = 30.0
_PAUSE_RECHECK_S: Final = 5.0  # a pause an operator deleted in Redis ends this soon at the latest
_DEFAULT_CLAIM_IDLE_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class RequeuePolicy:
    """When a batch whose transient retries ran out is tried again (instead of going DEAD).

    The delay is ``base_delay_s * factor ** n`` capped at ``max_delay_s``, where ``n`` counts the
    earlier rounds of retries that ran out for the event (estimated from its recorded requests),
    so the first requeue waits ``base_delay_s`` and later ones back off further. Events keep
    coming back until Meta takes or refuses them, or they pass the 7-day window (EXPIRED).
    """

    base_delay_s: float = 30.0
    max_delay_s: float = 1800.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("base_delay_s must be >= 0 and max_delay_s >= base_delay_s")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")

    def delay(self, rounds: int) -> float:
        """Seconds to wait before the next try of an event that already went through ``rounds``
        full rounds of retries before the one that just ran out."""
        grown = self.base_delay_s * self.factor ** min(max(0, rounds), _MAX_EXPONENT)
        return min(self.max_delay_s, grown)


class WorkerObserver(Protocol):
    """Receives what the worker did, for metrics (``service.metrics.Metrics`` implements it)."""

    def outcomes(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Events by (outcome, reason): final states, or ``requeued`` when put back."""

    def batch_finished(self, seconds: float, size: int) -> None:
        """One batch delivered and recorded, ``seconds`` after it was claimed."""


def pause_advice(error: GraphError) -> str:
    """What a paused delivery means and what to do about it, for logs and ``/readyz``."""
    return (
        f"Meta refused the access token or its permissions ({error.label()}): {error.message}. "
        "Events are still accepted and kept queued. Fix access_token (or pixel_id) in the "
        "config, then reload it (SIGHUP: kill -HUP <pid>) or restart leadrelay."
    )


class DeliveryWorker:
    """Delivers what the store holds, batch by batch, until stopped.

    ``dispatcher_factory`` builds the dispatcher (and its ``GraphClient``); it is called here (so
    a bad config fails early), by ``resume()`` and when a run starts after another one ended.
    The worker owns what it returns and closes each client once no batch uses it any more.
    ``requeue=None`` makes DEAD final (``send``); a ``RequeuePolicy`` keeps retrying
    (``serve``). Store calls run in threads (``asyncio.to_thread``). On stop, batches in flight
    get ``drain_timeout_s`` to finish; the rest are cancelled and put back in the queue.
    ``batch_size`` and ``concurrency`` may be changed between batches.

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
        requeue: RequeuePolicy | None = RequeuePolicy(),  # frozen, so sharing it is safe
        poll_interval_s: float = 0.5,
        drain_timeout_s: float = 20.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: WorkerObserver | None = None,
        on_result: Callable[[Delivery], None] | None = None,
        renew_every_s: float | None = None,
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
        self.requeue = requeue
        self.poll_interval_s = poll_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.renew_every_s = renew_every_s
        self.store_error: str | None = None
        """The last store failure, cleared by the next successful store call."""
        self._store = store
        self._factory = dispatcher_factory
        self._clock = clock
        self._sleep = sleep
        self._observer = observer
        self._on_result = on_result
        self._dispatcher: Dispatcher | None = dispatcher_factory()
        self._users: Counter[Dispatcher] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._stop: asyncio.Event | None = None
        self._reported: Dispatcher | None = None
        self._fleet = store if isinstance(store, FleetControl) else None
        self._own_pause: tuple[float, str] = (0.0, "")  # set here before the store knows it
        self._pause_shown: str | None = None  # the reason logged for the pause going on
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def paused(self) -> GraphError | None:
        """Why delivery is paused (Meta refused the token or permission), or None."""
        return None if self._dispatcher is None else self._dispatcher.paused

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
        error = result.error
        if self._fleet is None or error is None or error.kind is not ErrorKind.THROTTLED:
            return
        dispatcher = self._dispatcher
        policy = dispatcher.policy if dispatcher is not None else RetryPolicy()
        now = self._clock()
        until = now + max(policy.throttle_floor, error.retry_after or 0.0)
        if until <= self._own_pause[0]:
            return  # already paused at least that long: no need to tell the store again
        reason = f"throttled: {error.label()}"
        self._own_pause = (until, reason)
        write = partial(self._fleet.pause_until, until, reason, now=now)
        self._in_background(self._store_call(write, retry=False))

    def resume(self) -> None:
        """Swap in a fresh dispatcher from the factory (reloaded config) and resume delivery.

        Call it from the event loop the worker runs in, or between runs. Raises what the factory
        raises, leaving the current dispatcher in place.
        """
        fresh = self._factory()
        old, self._dispatcher = self._dispatcher, fresh
        self._reported = None
        if old is not None and not self._users[old]:
            self._retire(old)
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

    async def run_until_idle(self) -> GraphError | None:
        """Deliver until no queued event remains (due or not), or delivery pauses.

        Returns why it paused, or None. Rows IN_FLIGHT at start are taken back first.
        """
        self._stop = asyncio.Event()
        try:
            await self._start()
            await self._loop(self._stop, until_idle=True)
            paused = self.paused
        finally:
            await self._drain()
            await self._close()
        return paused

    async def _start(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        if self._dispatcher is None:
            self._dispatcher = self._factory()
        released = await self._store_call(self._store.release_in_flight)
        if released:
            log.warning("took back events left in flight by a previous run", events=released)

    async def _loop(self, stop: asyncio.Event, *, until_idle: bool) -> None:
        while not stop.is_set():
            self._reap()
            if self.paused is not None:
                if until_idle:
                    return
                await self._wait(stop, None)
                continue
            if len(self._tasks) >= self.concurrency:
                await self._wait(stop, None)
                continue
            try:
                if self._fleet is not None and (pause := await self._fleet_pause()):
                    await self._wait(stop, pause, woken=False)
                    continue
                claimed = await self._store_call(
                    partial(self._store.claim, self.batch_size, self._clock()), retry=False
                )
            except Exception:
                await self._wait(stop, self.poll_interval_s * 4)
                continue
            if claimed:
                self._spawn(claimed)
                continue
            if until_idle and not self._tasks:
                counts = await self._store_call(partial(self._store.counts, self._clock()))
                if counts.queued == 0:
                    return
            await self._wait(stop, self.poll_interval_s)

    async def _fleet_pause(self) -> float:
        """Seconds to wait before claiming because the fleet is paused (0: claim now); logs
        each pause once, with its reason, and its end."""
        assert self._fleet is not None
        now = self._clock()
        shared = await self._store_call(partial(self._fleet.paused_until, now=now), retry=False)
        until, reason = self._own_pause
        if shared is not None and shared[0] > until:
            until, reason = shared
        if until <= now:
            if self._pause_shown is not None:
                log.info("fleet-wide pause over; claiming again", reason=self._pause_shown)
                self._pause_shown = None
            return 0.0
        if self._pause_shown is None:
            self._pause_shown = reason
            log.warning(
                "delivery paused fleet-wide; no new batches until it ends",
                reason=reason,
                until=until,
                resumes_in_s=round(until - now, 1),
            )
        return min(until - now, _PAUSE_RECHECK_S)

    def _in_background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # _store_call logged it; retrieved so asyncio does not log it again

    async def _renew(self, ids: list[int]) -> None:
        """Renew the events of a batch in flight until cancelled (the batch was recorded)."""
        assert self._fleet is not None
        warned = False
        while True:
            await self._sleep(self.renew_every_s)
            try:
                held = await asyncio.to_thread(self._fleet.renew, ids)
            except Exception as exc:  # the next renewal may work; the batch goes on meanwhile
                log.warning(
                    "could not renew a batch in flight", error=f"{type(exc).__name__}: {exc}"
                )
                continue
            if held < len(ids) and not warned:
                warned = True
                log.warning(
                    "another worker took over events of a batch in flight (this one was too "
                    "slow to renew them); they may be delivered twice",
                    events=len(ids) - held,
                )

    def _spawn(self, claimed: list[Claimed]) -> None:
        dispatcher = self._dispatcher
        assert dispatcher is not None
        self._users[dispatcher] += 1
        self._tasks.add(asyncio.create_task(self._batch(dispatcher, claimed)))

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

    async def _batch(self, dispatcher: Dispatcher, claimed: list[Claimed]) -> None:
        started = time.perf_counter()
        ids = [c.id for c in claimed]
        renewal = None if self._fleet is None else asyncio.ensure_future(self._renew(ids))
        try:
            try:
                results = await dispatcher.deliver([c.payload for c in claimed])
            except asyncio.CancelledError:
                message = "delivery stopped before Meta answered; the events will be sent again"
                await asyncio.shield(self._put_back(ids, "interrupted", message))
                raise
            except Exception as exc:
                log.exception("delivery failed unexpectedly; the batch goes back to the queue")
                await self._put_back(ids, "internal_error", f"{type(exc).__name__}: {exc}", 60.0)
                return
            write = asyncio.ensure_future(self._record(claimed, results))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await write  # the results are known: record them before giving up
                raise
            if self._observer is not None:
                self._observer.batch_finished(time.perf_counter() - started, len(claimed))
            if dispatcher.paused is not None and dispatcher is self._dispatcher:
                self._report_pause(dispatcher)
        finally:
            if renewal is not None:
                renewal.cancel()
            self._users[dispatcher] -= 1
            if not self._users[dispatcher]:
                del self._users[dispatcher]
                if dispatcher is not self._dispatcher:
                    self._retire(dispatcher)

    async def _record(self, claimed: list[Claimed], results: Sequence[Delivery]) -> None:
        now = self._clock()
        finals: list[tuple[int, Delivery]] = []
        paused: list[int] = []
        paused_message: str | None = None
        # (due at, requests made this round) -> ids and the message they keep meanwhile
        later: dict[tuple[float, int], tuple[list[int], str]] = {}
        counts: Counter[tuple[str, str]] = Counter()
        by_state: Counter[tuple[State, str]] = Counter()  # .value once per state, not per event
        for c, d in zip(claimed, results, strict=True):
            if d.state is State.QUEUED:
                paused.append(c.id)
                paused_message = paused_message or d.message
                counts["requeued", d.reason or "paused_auth"] += 1
            elif d.state is State.DEAD and d.reason == "retries_exhausted" and self.requeue:
                # Full rounds of retries the event went through before this one.
                delay = self.requeue.delay(c.attempts // max(1, d.attempts))
                message = f"{d.message}; trying again in {delay:g} s"
                later.setdefault((now + delay, d.attempts), ([], message))[0].append(c.id)
                counts["requeued", "retries_exhausted"] += 1
            else:
                finals.append((c.id, d))
                by_state[d.state, d.reason or ""] += 1

        for (state, reason), n in by_state.items():
            counts[state.value, reason] += n

        def write() -> None:
            if finals:
                self._store.complete(finals, now)
            if paused:
                self._store.retry_later(
                    paused, now, "paused_auth", paused_message, attempts=0, now=now
                )
            for (at, sends), (ids, message) in later.items():
                self._store.retry_later(
                    ids, at, "retries_exhausted", message, attempts=sends, now=now
                )

        await self._store_call(write)
        if self._on_result is not None:
            # Only what is settled for this run: final states, and events held by a pause.
            for _, d in finals:
                self._on_result(d)
            for d in results:
                if d.state is State.QUEUED:
                    self._on_result(d)
        if later:
            log.warning(
                "retries ran out; the events go back to the queue",
                events=sum(len(ids) for ids, _ in later.values()),
                next_attempt_in_s=round(min(at for at, _ in later) - now, 1),
            )
        if self._observer is not None:
            self._observer.outcomes(counts)

    async def _put_back(
        self, ids: list[int], reason: str, message: str, delay: float = 0.0
    ) -> None:
        now = self._clock()
        put_back = partial(
            self._store.retry_later, ids, now + delay, reason, message, attempts=0, now=now
        )
        await self._store_call(put_back)
        if self._observer is not None:
            self._observer.outcomes({("requeued", reason): len(ids)})

    async def _store_call(self, call: Callable[[], _T], *, retry: bool = True) -> _T:
        """Run a blocking store call in a thread. A failed write is retried with backoff until it
        works or the worker stops, so a full disk does not lose results; after a stop the rows
        stay IN_FLIGHT and the next start takes them back."""
        attempt = 0
        while True:
            try:
                result = await asyncio.to_thread(call)
            except Exception as exc:
                self.store_error = f"{type(exc).__name__}: {exc}"
                log.error("event store call failed", error=self.store_error)
                if not retry or self._stopping or (self._stop is not None and self._stop.is_set()):
                    raise
                attempt += 1
                await self._sleep(min(_STORE_RETRY_MAX_S, 0.5 * 2.0 ** min(attempt, 10)))
                continue
            self.store_error = None
            return result

    def _report_pause(self, dispatcher: Dispatcher) -> None:
        if self._reported is dispatcher or dispatcher.paused is None:
            return
        self._reported = dispatcher
        error = dispatcher.paused
        log.error(
            "delivery paused",
            code=error.code,
            subcode=error.subcode,
            fbtrace_id=error.fbtrace_id,
            advice=pause_advice(error),
        )

    def _retire(self, dispatcher: Dispatcher) -> None:
        task = asyncio.ensure_future(dispatcher.client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _drain(self) -> None:
        self._stopping = True
        if self._tasks:
            log.info("draining batches in flight", batches=len(self._tasks))
            _, pending = await asyncio.wait(list(self._tasks), timeout=self.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "cut short batches still in flight after the drain timeout",
                    batches=len(pending),
                )
                await asyncio.wait(pending)
        self._reap()

    async def _close(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background))
        if self._dispatcher is not None:
            self._retire(self._dispatcher)
            self._dispatcher = None
        if self._closing:
            await asyncio.wait(list(self._closing))
