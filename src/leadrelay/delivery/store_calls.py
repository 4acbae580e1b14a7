"""Blocking store calls made from the delivery worker's event loop.

Split out of ``worker`` (house rule: modules under ~300 lines). Each call runs in a thread
(``asyncio.to_thread``). A failed write is retried with backoff until it works or the worker
stops, so a full disk does not lose results; after a stop the rows stay IN_FLIGHT and the next
start takes them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import structlog

log = structlog.get_logger("leadrelay.worker")

_T = TypeVar("_T")
_STORE_RETRY_MAX_S: Final = 30.0


class StoreCalls:
    """Runs store calls in a thread, retrying failed ones while ``stopping()`` is false.

    ``error`` is the last failure, cleared by the next successful call.
    """

    def __init__(
        self,
        stopping: Callable[[], bool],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.error: str | None = None
        self._stopping = stopping
        self._sleep = sleep

    async def __call__(self, call: Callable[[], _T], *, retry: bool = True) -> _T:
        """``call()`` in a thread; with ``retry``, again after a failure until it works or the
        worker stops (then the failure is raised)."""
        attempt = 0
        while True:
            try:
                result = await asyncio.to_thread(call)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("event store call failed", error=self.error)
                if not retry or self._stopping():
                    raise
                attempt += 1
                await self._sleep(min(_STORE_RETRY_MAX_S, 0.5 * 2.0 ** min(attempt, 10)))
                continue
            self.error = None
            return result
