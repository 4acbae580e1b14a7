"""Dispatcher over real HTTP against the local sandbox: isolation, retry and auth stop end to end.

Backoff sleeps are recorded, not slept; everything else (sockets, HTTP, the sandbox's Meta-like
validation and all-or-nothing batches) is real.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from leadrelay.delivery.dispatcher import Dispatcher
from leadrelay.meta.client import GraphClient
from leadrelay.outcome import Delivery, Payload, State
from leadrelay.sandbox import SandboxOptions, SandboxServer

PIXEL_ID = "123456789012345"
FIRST_LEAD = 120_000_000_000_000
DELETED = FIRST_LEAD + 421


def payload(n: int, now: int) -> Payload:
    lead = FIRST_LEAD + n
    event_time = now - 3600
    email = hashlib.sha256(f"lead{n}@example.com".encode()).hexdigest()
    data = {
        "event_name": "Marketing Qualified Lead",
        "event_time": event_time,
        "event_id": f"evt-{n}",
        "action_source": "system_generated",
        "user_data": {"lead_id": lead, "em": [email]},
        "custom_data": {"event_source": "crm", "lead_event_source": "Test CRM"},
    }
    return Payload(
        key=f"evt-{n}",
        source_event="lead_qualified",
        event_name="Marketing Qualified Lead",
        lead_id=lead,
        event_time=event_time,
        data=data,
    )


def batch(n: int) -> list[Payload]:
    now = int(time.time())
    return [payload(i, now) for i in range(n)]


def run(
    sandbox: SandboxServer,
    body: Callable[[Dispatcher], Awaitable[Any]],
    token: str = "sandbox-token",
) -> tuple[Any, Dispatcher, list[float]]:
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def go() -> tuple[Any, Dispatcher]:
        async with GraphClient(
            graph_url=sandbox.url,
            api_version="v25.0",
            pixel_id=PIXEL_ID,
            access_token=token,
            timeout=10.0,
        ) as client:
            dispatcher = Dispatcher(client, sleep=no_sleep)
            return await body(dispatcher), dispatcher

    result, dispatcher = asyncio.run(go())
    return result, dispatcher, sleeps


def deliver(sandbox: SandboxServer, payloads: list[Payload]) -> tuple[list[Delivery], Dispatcher]:
    async def body(d: Dispatcher) -> list[Delivery]:
        return await d.deliver(payloads)

    results, dispatcher, _ = run(sandbox, body)
    return results, dispatcher


def test_one_deleted_lead_in_1000() -> None:
    payloads = batch(1000)
    with SandboxServer(SandboxOptions(deleted_lead_ids=frozenset({DELETED}))) as sandbox:
        results, d = deliver(sandbox, payloads)
        received = sandbox.state.received()
        requests = sandbox.state.requests
    assert sorted(e["user_data"]["lead_id"] for e in received) == sorted(
        p.lead_id for p in payloads if p.lead_id != DELETED
    )
    rejected = [r for r in results if r.state is State.REJECTED]
    assert [r.payload.lead_id for r in rejected] == [DELETED]
    assert (rejected[0].code, rejected[0].subcode, rejected[0].reason) == (
        100,
        2804036,
        "meta_100_2804036",
    )
    assert rejected[0].fbtrace_id
    assert sum(r.state is State.DELIVERED for r in results) == 999
    assert d.requests == requests <= 2 * math.ceil(math.log2(1000)) + 1


@pytest.mark.parametrize("fault", ["http_500", "http_503", "drop", "throttle"])
def test_a_failure_then_ok_is_delivered_after_retry(fault: str) -> None:
    payloads = batch(50)
    with SandboxServer() as sandbox:
        sandbox.state.script(fault, "ok")
        results, d = deliver(sandbox, payloads)
        received = sandbox.state.received()
        requests = sandbox.state.requests
    assert {r.state for r in results} == {State.DELIVERED}
    assert all(r.extra.get("retried") and r.attempts == 2 for r in results)
    assert len(received) == 50
    assert (d.requests, d.retries, requests) == (2, 1, 2)


def test_auth_failure_stops_delivery() -> None:
    with SandboxServer() as sandbox:
        sandbox.state.script("auth")

        async def body(d: Dispatcher) -> tuple[list[Delivery], list[Delivery]]:
            return await d.deliver(batch(20)), await d.deliver(batch(20))

        (first, second), d, sleeps = run(sandbox, body)
        requests = sandbox.state.requests
        received = sandbox.state.received()
    assert d.paused is not None and d.paused.code == 190
    assert {(r.state, r.reason) for r in first + second} == {(State.QUEUED, "paused_auth")}
    assert (requests, received, sleeps) == (1, [], [])


def test_a_wrong_token_pauses_and_is_not_echoed() -> None:
    token = "EAAB-wrong-token-do-not-print"
    with SandboxServer() as sandbox:

        async def body(d: Dispatcher) -> list[Delivery]:
            return await d.deliver(batch(3))

        results, d, _ = run(sandbox, body, token=token)
    assert d.paused is not None and d.paused.code == 190
    assert all(r.state is State.QUEUED for r in results)
    assert token not in repr(results) and token not in repr(d.paused)
