"""Blocking store calls made from the delivery worker's event loop.

Split out of ``worker`` (house rule: modules under ~300 lines). Each call runs in a thread
(``asyncio.to_thread``). A failed write is retried with backoff until it works or the worker
stops, so a full disk does not lose results; after a stop the rows stay IN_FLIGHT and the next
start takes them back. With a ``patience_s`` (a send: ``delivery.store_patience_s``), a store that
has failed every call for that long is given up on: ``gave_up`` says why, and every call that
fails from then on raises at once (``serve`` and ``worker`` have none: they wait for it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, TypeVar

import structlog

from leadrelay.delivery.store import StoreError

log = structlog.get_logger("leadrelay.worker")

_T = TypeVar("_T")
_STORE_RETRY_MAX_S: Final = 30.0


def retry_delay_s(attempt: int) -> float:
    """How long to wait before trying a failed store call again, the ``attempt``-th time from 0:
    0.5 s, doubling, 30 s at most."""
    return min(_STORE_RETRY_MAX_S, 0.5 * 2.0 ** min(attempt, 10))


def described(exc: BaseException) -> str:
    """A store's failure in words: a ``StoreError`` says it itself, anything else with its type."""
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


def given_up(patience_s: float, exc: BaseException) -> str:
    """Why a send gave up on its store (``delivery.store_patience_s`` ran out)."""
    return f"the event store has not answered for {patience_s:g} s: {described(exc)}"


class StoreCalls:
    """Runs store calls in a thread, retrying failed ones while ``stopping()`` is false and
    the store has not been given up on (see the module).

    ``error`` is the last failure, cleared by the next successful call; ``gave_up`` the
    message of the ``StoreError`` raised once the store failed for ``patience_s``.
    """

    def __init__(
        self,
        stopping: Callable[[], bool],
        sleep: Callable[[float], Awaitable[None]],
        *,
        patience_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.error: str | None = None
        self.gave_up: str | None = None
        self._stopping = stopping
        self._sleep = sleep
        self._patience_s = patience_s
        self._clock = clock
        self._failing_since: float | None = None  # the first failure since the last success

    async def __call__(self, call: Callable[[], _T], *, retry: bool = True) -> _T:
        """``call()`` in a thread; with ``retry``, again after a failure until it works or the
        worker stops (then the failure is raised)."""
        attempt = 0
        while True:
            try:
                result = await asyncio.to_thread(call)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                if self._given_up(exc):
                    raise StoreError(self.gave_up) from exc
                log.error("event store call failed", error=self.error)
                if not retry or self._stopping():
                    if isinstance(exc, StoreError):
                        raise
                    raise StoreError(self.error) from exc  # said as a store's, not a bug
                attempt += 1
                delay = retry_delay_s(attempt)
                if self._patience_s is not None and self._failing_since is not None:
                    left = self._failing_since + self._patience_s - self._clock()
                    delay = max(0.0, min(delay, left))  # the last try when patience runs out
                await self._sleep(delay)
                continue
            self.error = None
            self._failing_since = None
            return result

    def _given_up(self, exc: Exception) -> bool:
        """Whether the store has failed every call for ``patience_s`` (now or before)."""
        if self.gave_up is not None:
            return True
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        if self._patience_s is None or now - self._failing_since < self._patience_s:
            return False
        self.gave_up = given_up(self._patience_s, exc)
        log.error("gave up on the event store", error=self.gave_up)
        return True


async def finished(
    step: Coroutine[Any, Any, None],
    ids: Sequence[int],
    refused: Callable[[int], None] | None = None,
) -> bool:
    """Run ``step`` (recording or putting back the batch of ``ids``) to its end, however often
    the task is cancelled meanwhile, then raise the cancellation: a batch ends once its events
    are recorded or put back, and told once (a batch ended at the second cancel was put back
    after the send had counted its events, and told again). False when the store refused it
    (given up on, or failing as the run stops): said in one line, no traceback, and told to
    ``refused`` (the number of events; for results Meta gave). The events stay IN_FLIGHT in the
    store, taken back by the next run (or, on a fleet, by another process after
    claim_idle_s), or (held in memory: write-behind) are read again by the next send of the
    same files: sent again either way, with the same event_id."""
    future = asyncio.ensure_future(step)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break  # the step failed: see below
    try:
        future.result()
        done = True
    except StoreError as exc:
        done = False
        if refused is not None:
            refused(len(ids))
        log.error(
            "the event store did not take what became of a batch; the next run sends its "
            "events again (same event_id)",
            events=len(ids),
            meta_answered=refused is not None,
            error=str(exc),
        )
    if cancelled:
        raise asyncio.CancelledError
    return done
