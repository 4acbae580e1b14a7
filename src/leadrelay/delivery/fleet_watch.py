"""What the delivery worker does on a store shared by a fleet of processes (``FleetControl``).

Split out of ``worker`` (house rule: modules under ~300 lines). Two things:

- Fleet pause: before each claim the worker asks ``pause`` how long to wait. A throttled Graph
  answer seen through ``observe`` pauses every worker, for the retry policy's ``throttle_floor``
  or what Meta asked, whichever is longer: this worker stops claiming at once, the store is told
  in the background. Each pause is logged once, with its reason, and so is its end.
- Renewal: while a batch is in flight (long retries included), ``renew`` renews its events every
  ``renew_every_s`` so other workers do not take them over as if this one had died.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import structlog

from leadrelay.delivery.store import FleetControl
from leadrelay.meta.client import GraphResult
from leadrelay.meta.errors import ErrorKind

log = structlog.get_logger("leadrelay.worker")

_PAUSE_RECHECK_S: Final = 5.0  # a pause an operator deleted in Redis ends this soon at the latest

StoreCall = Callable[..., Awaitable[Any]]
"""The worker's ``_store_call``: runs a blocking store call in a thread (``retry`` keyword)."""


class FleetWatch:
    """The fleet-wide pause and the renewal of batches in flight, for one worker.

    ``store_call`` runs store calls as the worker does (in a thread, failures logged);
    ``clock`` and ``sleep`` are the worker's.
    """

    def __init__(
        self,
        fleet: FleetControl,
        store_call: StoreCall,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        renew_every_s: float,
    ) -> None:
        self.renew_every_s = renew_every_s
        self._fleet = fleet
        self._store_call = store_call
        self._clock = clock
        self._sleep = sleep
        self._own_pause: tuple[float, str] = (0.0, "")  # set here before the store knows it
        self._pause_shown: str | None = None  # the reason logged for the pause going on
        self._background: set[asyncio.Future[Any]] = set()

    def observe(self, result: GraphResult, throttle_floor: float) -> None:
        """A throttled answer pauses the fleet for ``throttle_floor`` (or longer if Meta said
        so). Call it from the event loop the worker runs in."""
        error = result.error
        if error is None or error.kind is not ErrorKind.THROTTLED:
            return
        now = self._clock()
        until = now + max(throttle_floor, error.retry_after or 0.0)
        if until <= self._own_pause[0]:
            return  # already paused at least that long: no need to tell the store again
        reason = f"throttled: {error.label()}"
        self._own_pause = (until, reason)
        write = partial(self._fleet.pause_until, until, reason, now=now)
        task = asyncio.ensure_future(self._store_call(write, retry=False))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    async def pause(self) -> float:
        """Seconds to wait before claiming because the fleet is paused (0: claim now)."""
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

    async def renew(self, ids: list[int]) -> None:
        """Renew the events of a batch in flight until cancelled (the batch was recorded)."""
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

    async def settle(self) -> None:
        """Wait for the pause writes still on their way to the store."""
        if self._background:
            await asyncio.wait(list(self._background))

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # _store_call logged it; retrieved so asyncio does not log it again
