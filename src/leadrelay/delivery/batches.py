"""One batch of the delivery worker, from the dispatcher's answer to the store.

``Batches.deliver`` runs one claimed batch: it hands the payloads to the dispatcher, renews them on
a fleet's store while Meta answers, and records the results (``Recorder``). A batch cancelled by
a stop (the drain timeout, a second Ctrl-C) records what Meta answered for, parts of a split
batch, and puts the rest back in the queue; one that fails unexpectedly goes back whole, due in
a minute. Results the store refuses after Meta answered are counted (``unrecorded``): the next
run sends those events again.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from leadrelay.delivery.dispatcher import Dispatcher
from leadrelay.delivery.dispatchers import Dispatchers
from leadrelay.delivery.fleet_watch import FleetWatch
from leadrelay.delivery.results import Recorder, WorkerObserver
from leadrelay.delivery.store import Claimed
from leadrelay.delivery.store_calls import finished
from leadrelay.outcome import INTERRUPTED, Delivery

__all__ = ["Batches"]

log = structlog.get_logger("leadrelay.worker")


class Batches:
    """Delivers the worker's batches (see the module)."""

    def __init__(
        self,
        recorder: Recorder,
        dispatchers: Dispatchers,
        fleet: FleetWatch | None,
        observer: WorkerObserver | None,
    ) -> None:
        self._recorder = recorder
        self._dispatchers = dispatchers
        self._fleet = fleet
        self._observer = observer
        self.unrecorded = 0  # events of batches Meta answered whose results the store refused

    async def deliver(self, dispatcher: Dispatcher, claimed: list[Claimed]) -> None:
        """Deliver one claimed batch with ``dispatcher`` and record what became of it (see the
        module); ``dispatcher`` is released when it ends, however it ends."""
        started = time.perf_counter()
        ids = [c.id for c in claimed]
        renewal = None if self._fleet is None else asyncio.ensure_future(self._fleet.renew(ids))
        answered: list[Delivery | None] = [None] * len(claimed)
        try:
            try:
                results = await dispatcher.deliver([c.payload for c in claimed], answered)
            except asyncio.CancelledError:
                await finished(self._cut_short(claimed, answered), ids)
                raise
            except Exception as exc:
                log.exception("delivery failed unexpectedly; the batch goes back to the queue")
                message = f"{type(exc).__name__}: {exc}"
                await finished(
                    self._recorder.put_back(claimed, "internal_error", message, 60.0), ids
                )
                return
            # The results are known: recorded before a stop ends the batch.
            if not await finished(self._recorder.record(claimed, results), ids, self._refused):
                return
            if self._observer is not None:
                self._observer.batch_finished(time.perf_counter() - started, len(claimed))
            if dispatcher.paused is not None:
                self._dispatchers.report_pause(dispatcher)
        finally:
            if renewal is not None:
                renewal.cancel()
            self._dispatchers.release(dispatcher)

    async def _cut_short(self, claimed: list[Claimed], answered: list[Delivery | None]) -> None:
        """A batch stopped before Meta answered for all of it: those Meta answered for (parts
        of a batch split for a refused event) are recorded, the rest goes back to the queue. All
        went back: a stop in the middle of a long split sent again what Meta had taken."""
        known = [(c, r) for c, r in zip(claimed, answered, strict=True) if r is not None]
        if known:
            await self._recorder.record([c for c, _ in known], [r for _, r in known])
        rest = [c for c, r in zip(claimed, answered, strict=True) if r is None]
        if rest:
            message = "delivery stopped before Meta answered; the events will be sent again"
            await self._recorder.put_back(rest, INTERRUPTED, message)

    def _refused(self, events: int) -> None:
        """The store refused the results of a batch Meta answered (see ``finished``)."""
        self.unrecorded += events
