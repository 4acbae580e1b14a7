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
from operator import attrgetter
from typing import Final

import orjson

from leadrelay.delivery.encoded import request_body
from leadrelay.delivery.group_results import (
    Group,
    behind,
    dead,
    delivered,
    failed,
    paused,
    rejected,
)
from leadrelay.meta.client import GraphClient, GraphResult
from leadrelay.meta.errors import ErrorKind, GraphError
from leadrelay.meta.rules import SEND_MARGIN_S
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State

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
        expiry_margin_s: int = SEND_MARGIN_S,
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

    async def deliver(
        self, batch: Sequence[Payload], answered: list[Delivery | None] | None = None
    ) -> Sequence[Delivery]:
        """Deliver ``batch``; returns one ``Delivery`` per payload, in the same order: a
        ``DeliveredWhole`` when Meta took the whole batch at the first request. ``answered``
        (``None`` per payload) is filled as Meta answers for each: what a delivery cut short
        (cancelled) knows of its payloads, in the middle of a split batch."""
        results: list[Delivery | None] = [None] * len(batch) if answered is None else answered
        try:  # the bytes stored, most of the time: no encoding, nothing to fail
            group = Group(list(range(len(batch))), [request_body(p) for p in batch])
        except orjson.JSONEncodeError:
            group = Group([], [])
            for i, payload in enumerate(batch):
                try:
                    group.bodies.append(request_body(payload))
                    group.places.append(i)
                except orjson.JSONEncodeError as exc:
                    results[i] = Delivery(
                        payload,
                        State.REJECTED,
                        attempts=0,
                        reason="unencodable",
                        message=f"payload cannot be encoded as JSON: {exc}",
                    )
        if group:
            whole = await self._deliver(
                batch, group, results, deadline=self._clock() + self.policy.max_total
            )
            if whole is not None:
                return DeliveredWhole(batch, *whole)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # a bug here must not lose events silently
            raise RuntimeError(f"no delivery result for batch positions {missing[:10]}")
        return results  # type: ignore[return-value]

    async def _deliver(
        self,
        batch: Sequence[Payload],
        group: Group,
        results: list[Delivery | None],
        deadline: float,
    ) -> tuple[str | None, str | None] | None:
        """Fills ``results`` for ``group`` (of ``batch``); or, when it is the whole batch and Meta
        took it at the first request, returns that request's message and fbtrace_id instead."""
        attempt = 0
        while True:
            if self.paused is not None:
                failed(batch, group, results, self.paused, *paused(self.paused))
                return None
            group = self._drop_expired(batch, group, results)
            if not group:
                return None
            attempt += 1
            result = await self._request(group)
            error = result.error
            if result.ok or error is None:
                message = "; ".join(result.messages) if result.messages else None
                if attempt == 1 and len(group) == len(results):
                    return message, result.fbtrace_id
                delivered(batch, group, results, message, result.fbtrace_id)
                return None
            if error.kind is ErrorKind.AUTH:
                self.paused = error
                failed(batch, group, results, error, *paused(error))
                return None
            if error.kind is ErrorKind.INVALID:
                if len(group) == 1:
                    failed(batch, group, results, error, *rejected(error))
                    return None
                # Meta refuses the whole batch for one bad event and does not say which one:
                # halve until the refused events are alone, sending everything else.
                mid = len(group) // 2
                first = group.part(0, mid)
                await self._deliver(batch, first, results, deadline)
                rest = behind(batch, first, group.part(mid), results)
                await self._deliver(batch, rest, results, deadline)
                return None
            wait = self.policy.delay(attempt, error, self._rng)
            if attempt >= self.policy.max_attempts:
                failed(batch, group, results, error, *dead(error, attempt))
                return None
            if self._clock() + wait > deadline:  # the next try would be past max_retry_s
                failed(batch, group, results, error, *dead(error, attempt, wait))
                return None
            self.retries += 1
            group.retried = True
            await self._sleep(wait)

    async def _request(self, group: Group) -> GraphResult:
        group.sends += 1
        self.requests += 1
        result = await self.client.send(group.bodies)
        if self._on_request is not None:
            self._on_request(result, len(group))
        return result

    def _drop_expired(
        self, batch: Sequence[Payload], group: Group, results: list[Delivery | None]
    ) -> Group:
        now = self._clock()
        oldest_ok = now - self._max_age_s + self._margin_s
        if min(map(_event_time, map(batch.__getitem__, group.places)), default=0) >= oldest_ok:
            return group
        days = f"{self._max_age_s / _DAY:g}"

        def expired(payload: Payload) -> Delivery | None:
            if payload.event_time >= oldest_ok:
                return None
            if payload.event_time > now - self._max_age_s:  # in the margin: not past it yet
                left = payload.event_time - (now - self._max_age_s)
                message = (
                    f"event_time {payload.event_time} was {left:.0f} s from the end of Meta's "
                    f"{days}-day window, less than the {self._margin_s} s a request may take: "
                    "Meta would refuse it as too old, so it was not sent"
                )
            else:
                message = (
                    f"event_time {payload.event_time} passed Meta's {days}-day window before "
                    "the event could be sent"
                )
            return Delivery(
                payload, State.EXPIRED, attempts=group.sends, reason="expired", message=message
            )

        return group.sift(batch, results, expired)


_event_time: Final = attrgetter("event_time")
