"""What the delivery worker makes of a batch's results, and how it records them in the store.

Split out of ``worker`` (house rule: modules under ~300 lines): the worker claims and delivers,
this module sorts each ``Delivery`` into what the store must do with it:

- DELIVERED / REJECTED / EXPIRED are final: ``store.complete``.
- QUEUED (Meta refused the token: the dispatcher paused) goes back to the queue without counting
  an attempt (``retry_later`` with reason ``paused_auth``).
- DEAD with reason ``retries_exhausted``: final only without a ``RequeuePolicy``. With one, the
  events go back to the queue at a growing delay (``retry_later``, ``retries_exhausted``), and
  ``on_results`` is told they are QUEUED with that reason.

A batch delivered whole (the common case: one request, one answer) takes a shorter path with
the same result. ``Recorder`` does the recording from the worker's event loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Final, Protocol

import structlog

from leadrelay.delivery.store import Claimed, Store
from leadrelay.delivery.store_calls import StoreCalls
from leadrelay.outcome import INTERRUPTED, DeliveredWhole, Delivery, State

log = structlog.get_logger("leadrelay.worker")

_MAX_EXPONENT: Final = 64  # keeps factor ** n finite; the delay is capped long before
_DELIVERED: Final = State.DELIVERED


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


@dataclass(slots=True)
class Sorted:
    """A batch's results sorted by what the store must do with them.

    ``finals`` go to ``complete``; ``paused`` (ids) back to the queue as ``paused_auth`` with
    ``paused_message``; ``later`` maps (due at, requests made this round) to the ids due then and
    the message they keep meanwhile. ``held`` are those back in the queue (paused or later) as
    ``on_results`` is told: QUEUED. ``counts`` are the events by (outcome, reason), for metrics.
    """

    finals: list[tuple[int, Delivery]] = field(default_factory=list)
    held: list[tuple[int, Delivery]] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)
    paused_message: str | None = None
    later: dict[tuple[float, int], tuple[list[int], str]] = field(default_factory=dict)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)


def sort_results(
    claimed: Sequence[Claimed],
    results: Sequence[Delivery],
    requeue: RequeuePolicy | None,
    now: float,
) -> Sorted:
    """Sort one batch's results (aligned with ``claimed``) as the module docstring says."""
    out = Sorted()
    if all(d.state is _DELIVERED and d.reason is None for d in results):
        # Delivered whole: every result is final, with the same (state, reason).
        out.finals = [
            (c.id, _again(d) if c.attempts else d) for c, d in zip(claimed, results, strict=True)
        ]
        if results:
            out.counts[_DELIVERED.value, ""] = len(results)
        return out
    counts = out.counts
    by_state: Counter[tuple[State, str]] = Counter()  # .value once per state, not per event
    for c, d in zip(claimed, results, strict=True):
        if d.state is State.QUEUED:
            out.paused.append(c.id)
            out.held.append((c.id, d))
            out.paused_message = out.paused_message or d.message
            counts["requeued", d.reason or "paused_auth"] += 1
        elif d.state is State.DEAD and d.reason == "retries_exhausted" and requeue:
            # Full rounds of retries the event went through before this one.
            delay = requeue.delay(c.attempts // max(1, d.attempts))
            delay = max(delay, d.extra.get("retry_after", 0.0))  # not before Meta said
            message = f"{d.message}; trying again in {delay:g} s"
            out.later.setdefault((now + delay, d.attempts), ([], message))[0].append(c.id)
            out.held.append((c.id, replace(d, state=State.QUEUED, message=message)))
            counts["requeued", "retries_exhausted"] += 1
        else:
            out.finals.append((c.id, _again(d) if c.attempts and d.state is _DELIVERED else d))
            by_state[d.state, d.reason or ""] += 1
    for (state, reason), n in by_state.items():
        counts[state.value, reason] += n
    return out


def _again(d: Delivery) -> Delivery:
    """An event delivered now that an earlier request failed to deliver (put back in the queue
    after its retries ran out, or by a process that stopped): delivered after retry."""
    return replace(d, extra={**d.extra, "retried": True})


def write_results(store: Store, s: Sorted, now: float) -> None:
    """Record sorted results in the store (blocking: run it in a thread)."""
    if s.finals:
        store.complete(s.finals, now)
    if s.paused:
        store.retry_later(s.paused, now, "paused_auth", s.paused_message, attempts=0, now=now)
    for (at, sends), (ids, message) in s.later.items():
        store.retry_later(ids, at, "retries_exhausted", message, attempts=sends, now=now)


_REQUEUED: Final = frozenset({"retries_exhausted", INTERRUPTED})


def requeued(result: Delivery) -> bool:
    """The result ``on_results`` is told for an event put back in the queue because its retries
    ran out (there is a ``RequeuePolicy``) or delivery stopped before Meta answered: it is
    neither settled nor lost."""
    return result.state is State.QUEUED and result.reason in _REQUEUED


OnResults = Callable[[Sequence[int], Sequence[Delivery]], None]
"""Told what became of a batch's events (``Recorder.record``): their ids, and a ``Delivery``
each."""


class Recorder:
    """Records batches' results (``record``) and puts undelivered batches back (``put_back``)
    through the worker's ``StoreCalls``; tells ``on_results`` (the events' ids and what became
    of them) and the observer."""

    def __init__(
        self,
        store: Store,
        calls: StoreCalls,
        *,
        requeue: RequeuePolicy | None,
        clock: Callable[[], float],
        observer: WorkerObserver | None,
        on_results: OnResults | None,
    ) -> None:
        self.requeue = requeue
        self._store = store
        self._calls = calls
        self._clock = clock
        self._observer = observer
        self._on_results = on_results

    async def record(self, claimed: Sequence[Claimed], results: Sequence[Delivery]) -> None:
        """Record what delivery made of ``claimed`` (``results`` aligned with it); then tell
        ``on_results`` what became of them: final states, and QUEUED for those back in the queue
        (held by a pause: ``paused_auth``; retries ran out: ``retries_exhausted``)."""
        now = self._clock()
        # Most batches: no Delivery made per event (unless tried before: delivered after retry).
        if type(results) is DeliveredWhole and not any(c.attempts for c in claimed):
            ids = [c.id for c in claimed]
            await self._calls(partial(self._store.complete_delivered, ids, results, now))
            if self._on_results is not None:
                self._on_results(ids, results)
            if self._observer is not None:
                self._observer.outcomes({(_DELIVERED.value, ""): len(results)})
            return
        s = sort_results(claimed, results, self.requeue, now)
        await self._calls(partial(write_results, self._store, s, now))
        if self._on_results is not None:
            told = [*s.finals, *s.held]
            self._on_results([i for i, _ in told], [d for _, d in told])
        if s.later:
            log.warning(
                "retries ran out; the events go back to the queue",
                events=sum(len(ids) for ids, _ in s.later.values()),
                next_attempt_in_s=round(min(at for at, _ in s.later) - now, 1),
            )
        if self._observer is not None:
            self._observer.outcomes(s.counts)

    async def put_back(
        self, claimed: Sequence[Claimed], reason: str, message: str, delay: float = 0.0
    ) -> None:
        """Put a batch back in the queue without counting an attempt, due ``delay`` s from now.
        One cut short as delivery stops (``INTERRUPTED``) is told to ``on_results``, QUEUED: it
        is not sent again before the next run, and events a send held in memory are stored
        under new ids (``write_behind``), so this is the only word of them. Another (a failure
        of ours) comes again."""
        now = self._clock()
        ids = [c.id for c in claimed]
        put_back = partial(
            self._store.retry_later, ids, now + delay, reason, message, attempts=0, now=now
        )
        await self._calls(put_back)
        if reason == INTERRUPTED and self._on_results is not None:
            self._on_results(
                ids, [Delivery(c.payload, State.QUEUED, 0, reason, message) for c in claimed]
            )
        if self._observer is not None:
            self._observer.outcomes({("requeued", reason): len(ids)})
