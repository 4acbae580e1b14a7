"""Delivering a batch of payloads to Meta, and accounting for every one of them.

``Dispatcher.deliver`` returns exactly one ``Delivery`` per payload. Transient failures and
throttling are retried with backoff and jitter; a batch Meta refuses as invalid is split in halves
until the refused events are found, so the rest still gets through; an auth or permission failure
pauses the dispatcher and keeps everything not yet delivered queued. Events that fall out of Meta's
7-day window while waiting are taken out as expired instead of making the whole batch fail.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from leadrelay.delivery.encoded import request_body
from leadrelay.meta.client import GraphClient, GraphResult
from leadrelay.meta.errors import ErrorKind, GraphError
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State

_TOO_OLD_SUBCODE: Final = 2804003  # 100/2804003: "Event Timestamp Too Old"
_DAY: Final = 86400


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to keep retrying a batch that failed for a reason that may pass.

    Delays grow exponentially from ``base_delay`` up to ``max_delay``; ``jitter`` (0..1) takes up to
    that fraction off each delay at random so that concurrent batches do not retry in lockstep.
    Throttling waits at least ``throttle_floor`` and at least what Meta asked for; code 368
    (temporarily blocked) at least ``blocked_floor``. A batch gets ``max_attempts`` requests and
    gives up once retrying would take it past ``max_total`` seconds from the start of delivery.
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0
    max_total: float = 600.0
    jitter: float = 0.5
    throttle_floor: float = 5.0
    blocked_floor: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("base_delay must be >= 0 and max_delay >= base_delay")
        if self.max_total < 0:
            raise ValueError(f"max_total must be >= 0, got {self.max_total}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def delay(self, attempt: int, error: GraphError, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        wait = ceiling * (1.0 - self.jitter * rng.random())
        if error.kind is ErrorKind.THROTTLED:
            wait = max(wait, self.throttle_floor)
        if error.code == 368:
            wait = max(wait, self.blocked_floor)
        if error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


class _Item:
    """One payload on its way: encoded once, so every resend carries the very same bytes."""

    __slots__ = ("body", "index", "payload", "retried", "sends")

    def __init__(self, index: int, payload: Payload, body: bytes) -> None:
        self.index = index
        self.payload = payload
        self.body = body
        self.sends = 0
        self.retried = False


class Dispatcher:
    """Sends batches through a ``GraphClient`` and turns Meta's answers into ``Delivery`` results.

    ``paused`` is set on the first auth/permission failure; from then on nothing is sent and every
    payload comes back QUEUED with reason ``paused_auth``. ``requests`` and ``retries`` count the
    requests made and the transient retries among them, for the summary.
    """

    def __init__(
        self,
        client: GraphClient,
        *,
        policy: RetryPolicy = RetryPolicy(),  # frozen, so sharing the default is safe
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_age_s: int = 7 * _DAY,
        expiry_margin_s: int = 60,
        rng: random.Random | None = None,
        on_request: Callable[[GraphResult, int], None] | None = None,
    ) -> None:
        self.client = client
        self.policy = policy
        self.paused: GraphError | None = None
        self.requests = 0
        self.retries = 0
        self._clock = clock
        self._sleep = sleep
        self._max_age_s = max_age_s
        self._margin_s = expiry_margin_s
        self._rng = rng if rng is not None else random.Random()
        self._on_request = on_request

    async def deliver(self, batch: Sequence[Payload]) -> Sequence[Delivery]:
        """Deliver ``batch``; returns one ``Delivery`` per payload, in the same order: a
        ``DeliveredWhole`` when Meta took the whole batch at the first request."""
        results: list[Delivery | None] = [None] * len(batch)
        items: list[_Item] = []
        for i, payload in enumerate(batch):
            try:
                items.append(_Item(i, payload, request_body(payload)))
            except orjson.JSONEncodeError as exc:
                results[i] = Delivery(
                    payload,
                    State.REJECTED,
                    attempts=0,
                    reason="unencodable",
                    message=f"payload cannot be encoded as JSON: {exc}",
                )
        if items:
            whole = await self._deliver(
                items, results, deadline=self._clock() + self.policy.max_total
            )
            if whole is not None:
                return DeliveredWhole(batch, *whole)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # a bug here must not lose events silently
            raise RuntimeError(f"no delivery result for batch positions {missing[:10]}")
        return results  # type: ignore[return-value]

    async def _deliver(
        self, items: list[_Item], results: list[Delivery | None], deadline: float
    ) -> tuple[str | None, str | None] | None:
        """Fills ``results`` for ``items``; or, when they are the whole batch and Meta took them
        at the first request, returns that request's message and fbtrace_id instead."""
        attempt = 0
        while True:
            if self.paused is not None:
                self._queue(items, results, self.paused)
                return None
            items = self._drop_expired(items, results)
            if not items:
                return None
            attempt += 1
            result = await self._request(items)
            error = result.error
            if result.ok or error is None:
                message = "; ".join(result.messages) if result.messages else None
                if attempt == 1 and len(items) == len(results):
                    return message, result.fbtrace_id
                self._delivered(items, results, message, result.fbtrace_id)
                return None
            if error.kind is ErrorKind.AUTH:
                self.paused = error
                self._queue(items, results, error)
                return None
            if error.kind is ErrorKind.INVALID:
                if len(items) == 1:
                    self._rejected(items[0], results, error)
                    return None
                # Meta refuses the whole batch for one bad event and does not say which one:
                # halve until the refused events are alone, sending everything else.
                mid = len(items) // 2
                await self._deliver(items[:mid], results, deadline)
                await self._deliver(items[mid:], results, deadline)
                return None
            wait = self.policy.delay(attempt, error, self._rng)
            if attempt >= self.policy.max_attempts or self._clock() + wait > deadline:
                self._dead(items, results, error, attempt)
                return None
            self.retries += 1
            for item in items:
                item.retried = True
            await self._sleep(wait)

    async def _request(self, items: list[_Item]) -> GraphResult:
        for item in items:
            item.sends += 1
        self.requests += 1
        result = await self.client.send([item.body for item in items])
        if self._on_request is not None:
            self._on_request(result, len(items))
        return result

    def _drop_expired(self, items: list[_Item], results: list[Delivery | None]) -> list[_Item]:
        oldest_ok = self._clock() - self._max_age_s + self._margin_s
        if all(item.payload.event_time >= oldest_ok for item in items):
            return items
        days = f"{self._max_age_s / _DAY:g}"
        kept = []
        for item in items:
            if item.payload.event_time >= oldest_ok:
                kept.append(item)
                continue
            results[item.index] = Delivery(
                item.payload,
                State.EXPIRED,
                attempts=item.sends,
                reason="expired",
                message=f"event_time {item.payload.event_time} passed Meta's {days}-day window "
                "before the event could be sent",
            )
        return kept

    def _delivered(
        self,
        items: list[_Item],
        results: list[Delivery | None],
        message: str | None,
        trace: str | None,
    ) -> None:
        delivered = State.DELIVERED
        for item in items:  # one per event: positional arguments, the fastest call
            extra = {"retried": True} if item.retried else {}
            results[item.index] = Delivery(
                item.payload, delivered, item.sends, None, message, None, None, trace, extra
            )

    def _rejected(self, item: _Item, results: list[Delivery | None], error: GraphError) -> None:
        message = f"{error.user_title}: {error.message}" if error.user_title else error.message
        state = State.REJECTED
        reason = error.reason()
        if error.code == 100 and error.subcode == _TOO_OLD_SUBCODE:
            state, reason = State.EXPIRED, "expired"  # Meta's clock says so, even if ours did not
        _failed([item], results, error, state, reason, message)

    def _dead(
        self, items: list[_Item], results: list[Delivery | None], error: GraphError, attempts: int
    ) -> None:
        message = (
            f"gave up after {attempts} attempt{'s' if attempts > 1 else ''} "
            f"({error.label()}): {error.message}"
        )
        _failed(items, results, error, State.DEAD, "retries_exhausted", message)

    def _queue(self, items: list[_Item], results: list[Delivery | None], error: GraphError) -> None:
        message = (
            f"not sent: delivery paused because Meta refused the access token or "
            f"permission ({error.label()}): {error.message}"
        )
        _failed(items, results, error, State.QUEUED, "paused_auth", message)


def _failed(
    items: list[_Item],
    results: list[Delivery | None],
    error: GraphError,
    state: State,
    reason: str,
    message: str,
) -> None:
    """Record ``items`` as not delivered, with Meta's code, subcode and fbtrace_id."""
    for item in items:
        results[item.index] = Delivery(
            item.payload,
            state,
            attempts=item.sends,
            reason=reason,
            message=message,
            code=error.code,
            subcode=error.subcode,
            fbtrace_id=error.fbtrace_id,
        )
