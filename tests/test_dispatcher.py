"""Dispatcher against a fake Meta (httpx.MockTransport): retries, bisection, expiry, auth stop.

The fake refuses a whole batch when it holds a lead id from its "bad" set (as Meta does with an
invalid or deleted lead id) and can be scripted to fail the next requests in other ways. Time is
fake: ``sleep`` records the delay and moves the clock, nothing really waits.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import orjson
import pytest

from leadrelay.delivery.dispatcher import Dispatcher, RetryPolicy
from leadrelay.meta.client import GraphClient, GraphResult
from leadrelay.meta.errors import ErrorKind, GraphError
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State

NOW = 1_767_800_000
TOKEN = "EAAB-secret-token-do-not-print"
WEEK = 7 * 86400
FIRST_LEAD = 120_000_000_000_000


def graph_error(code: int, subcode: int | None = None, **more: Any) -> dict[str, Any]:
    error = {
        "message": f"error {code}",
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": f"Trace{code}",
        **more,
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


class FakeMeta:
    """Meta as the dispatcher sees it: all-or-nothing batches, plus a script for what comes next."""

    def __init__(self, bad: set[int] | None = None, script: list[str] | None = None) -> None:
        self.bad = bad or set()
        self.script = list(script or [])
        self.batches: list[list[int]] = []
        self.bodies: list[bytes] = []
        self.received: Counter[int] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        self.bodies.append(request.content)
        leads = [e["user_data"]["lead_id"] for e in orjson.loads(request.content)["data"]]
        self.batches.append(leads)
        step = self.script.pop(0) if self.script else "meta"
        if step == "timeout":
            raise httpx.ReadTimeout("simulated timeout", request=request)
        if step == "http_500":
            return httpx.Response(500, text="<html>oops</html>")
        if step == "code_2":
            return httpx.Response(500, json=graph_error(2, is_transient=True))
        if step.startswith("throttle"):
            wait = step.partition(":")[2] or "30"
            return httpx.Response(400, headers={"Retry-After": wait}, json=graph_error(4))
        if step == "auth":
            return httpx.Response(400, json=graph_error(190, 463))
        if step == "too_old":
            return httpx.Response(400, json=graph_error(100, 2804003))
        if any(lead in self.bad for lead in leads):
            return httpx.Response(
                400,
                json=graph_error(
                    100, 2804036, error_user_title="Invalid lead ID", is_transient=False
                ),
            )
        self.received.update(leads)
        return httpx.Response(
            200,
            json={
                "events_received": len(leads),
                "messages": ["a warning", "another"] if step == "warn" else [],
                "fbtrace_id": f"Ok{len(self.batches)}",
            },
        )


class FakeTime:
    """A clock that only moves when the dispatcher sleeps."""

    def __init__(self) -> None:
        self.now = float(NOW)
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def payload(n: int, event_time: int = NOW - 3600) -> Payload:
    lead = FIRST_LEAD + n
    return Payload(
        key=f"evt-{n}",
        source_event="lead_qualified",
        event_name="Marketing Qualified Lead",
        lead_id=lead,
        event_time=event_time,
        data={
            "event_name": "Marketing Qualified Lead",
            "event_time": event_time,
            "event_id": f"evt-{n}",
            "action_source": "system_generated",
            "user_data": {"lead_id": lead},
            "custom_data": {"event_source": "crm", "lead_event_source": "Test CRM"},
        },
    )


def batch(n: int) -> list[Payload]:
    return [payload(i) for i in range(n)]


def run(
    meta: FakeMeta,
    body: Callable[[Dispatcher], Awaitable[Any]],
    fake: FakeTime | None = None,
    **options: Any,
) -> Any:
    fake = fake or FakeTime()

    async def go() -> Any:
        async with GraphClient(
            graph_url="https://graph.example",
            api_version="v25.0",
            pixel_id="987654321012345",
            access_token=TOKEN,
            transport=httpx.MockTransport(meta),
        ) as client:
            dispatcher = Dispatcher(
                client, clock=fake.clock, sleep=fake.sleep, rng=random.Random(1234), **options
            )
            return await body(dispatcher)

    return asyncio.run(go())


def deliver(
    meta: FakeMeta, payloads: list[Payload], fake: FakeTime | None = None, **options: Any
) -> tuple[Sequence[Delivery], Dispatcher]:
    async def body(d: Dispatcher) -> tuple[Sequence[Delivery], Dispatcher]:
        return await d.deliver(payloads), d

    result: tuple[Sequence[Delivery], Dispatcher] = run(meta, body, fake, **options)
    return result


def states(results: Sequence[Delivery]) -> Counter[State]:
    return Counter(r.state for r in results)


def test_a_good_batch_is_one_request() -> None:
    meta = FakeMeta()
    payloads = batch(1000)
    results, d = deliver(meta, payloads)
    assert [r.payload for r in results] == payloads
    assert states(results) == {State.DELIVERED: 1000}
    assert all(r.attempts == 1 and not r.extra.get("retried") for r in results)
    assert results[0].fbtrace_id == "Ok1"
    assert (d.requests, d.retries, len(meta.batches)) == (1, 0, 1)


def test_a_batch_taken_whole_at_once_says_so_and_reads_as_its_deliveries() -> None:
    meta = FakeMeta(script=["warn"])
    payloads = batch(5)
    results, _ = deliver(meta, payloads)
    assert type(results) is DeliveredWhole  # the store and the tally take it in one go
    assert results.payloads == payloads and results.message == "a warning; another"
    expected = [
        Delivery(p, State.DELIVERED, 1, None, results.message, None, None, "Ok1") for p in payloads
    ]
    assert results == expected and list(results) == expected and results[1:3] == expected[1:3]
    assert results[-1] == expected[-1] and len(results) == 5


@pytest.mark.parametrize(
    "case",
    ["retried", "one expired", "one unencodable", "one bad"],
)
def test_a_batch_not_taken_whole_at_the_first_request_gets_a_delivery_each(case: str) -> None:
    payloads = batch(4)
    meta = FakeMeta(script=["http_500"] if case == "retried" else [])
    if case == "one expired":
        payloads[2] = payload(2, event_time=NOW - WEEK - 3600)
    elif case == "one unencodable":
        payloads[2].data["custom_data"]["value"] = {1, 2}
    elif case == "one bad":
        meta.bad = {payloads[2].lead_id}
    results, _ = deliver(meta, payloads)
    assert type(results) is list
    assert [r.state is State.DELIVERED for r in results] == (
        [True] * 4 if case == "retried" else [True, True, False, True]
    )


def test_one_bad_lead_in_1000_is_isolated() -> None:
    payloads = batch(1000)
    bad = payloads[637].lead_id
    meta = FakeMeta(bad={bad})
    results, d = deliver(meta, payloads)
    assert [r.payload for r in results] == payloads
    assert states(results) == {State.DELIVERED: 999, State.REJECTED: 1}
    rejected = results[637]
    assert (rejected.state, rejected.reason, rejected.code, rejected.subcode) == (
        State.REJECTED,
        "meta_100_2804036",
        100,
        2804036,
    )
    assert rejected.fbtrace_id == "Trace100"
    assert rejected.message is not None and rejected.message.startswith("Invalid lead ID")
    # every good event reached Meta exactly once, the bad one never got through
    assert meta.received == Counter(p.lead_id for p in payloads if p.lead_id != bad)
    assert d.requests == len(meta.batches) <= 2 * math.ceil(math.log2(1000)) + 1
    assert d.retries == 0
    assert not any(r.extra.get("retried") for r in results)


def test_three_bad_leads() -> None:
    payloads = batch(1000)
    bad_positions = {3, 500, 998}
    meta = FakeMeta(bad={payloads[i].lead_id for i in bad_positions})
    results, d = deliver(meta, payloads)
    assert states(results) == {State.DELIVERED: 997, State.REJECTED: 3}
    assert {i for i, r in enumerate(results) if r.state is State.REJECTED} == bad_positions
    assert sum(meta.received.values()) == 997 and max(meta.received.values()) == 1
    assert d.requests <= 3 * 2 * math.ceil(math.log2(1000)) + 1


def test_a_batch_of_only_bad_events() -> None:
    payloads = batch(4)
    meta = FakeMeta(bad={p.lead_id for p in payloads})
    results, d = deliver(meta, payloads)
    assert states(results) == {State.REJECTED: 4}
    assert d.requests == 1 + 2 + 4
    assert [r.attempts for r in results] == [3, 3, 3, 3]  # whole, half, alone


def test_transient_failures_then_ok() -> None:
    meta = FakeMeta(script=["http_500", "timeout", "code_2", "http_500"])
    fake = FakeTime()
    policy = RetryPolicy(base_delay=0.5, jitter=0.5)
    results, d = deliver(meta, batch(10), fake, policy=policy)
    assert states(results) == {State.DELIVERED: 10}
    assert all(r.attempts == 5 and r.extra == {"retried": True} for r in results)
    assert (d.requests, d.retries) == (5, 4)
    assert len(fake.sleeps) == 4
    for attempt, delay in enumerate(fake.sleeps, start=1):
        ceiling = 0.5 * 2 ** (attempt - 1)
        assert ceiling * 0.5 <= delay <= ceiling
    assert fake.sleeps == sorted(fake.sleeps)
    # The same bytes each time, so the same event_id: Meta can drop a duplicate after a timeout.
    assert len(set(meta.bodies)) == 1


def test_retries_exhausted() -> None:
    meta = FakeMeta(script=["code_2"] * 10)
    fake = FakeTime()
    results, d = deliver(meta, batch(3), fake, policy=RetryPolicy(max_attempts=4))
    assert states(results) == {State.DEAD: 3}
    dead = results[0]
    assert (dead.reason, dead.code, dead.subcode, dead.fbtrace_id, dead.attempts) == (
        "retries_exhausted",
        2,
        None,
        "Trace2",
        4,
    )
    assert dead.message is not None and "error 2" in dead.message and "4 attempts" in dead.message
    assert (d.requests, d.retries, len(fake.sleeps)) == (4, 3, 3)


def test_retrying_stops_at_max_total() -> None:
    meta = FakeMeta(script=["throttle:700"])
    fake = FakeTime()
    results, d = deliver(meta, batch(2), fake, policy=RetryPolicy(max_total=600))
    assert states(results) == {State.DEAD: 2}
    assert results[0].code == 4
    assert (d.requests, fake.sleeps) == (1, [])
    # It says why (Meta's wait is past the budget), and keeps the wait for a requeue.
    assert results[0].message is not None and "700 s away, past max_retry_s" in results[0].message
    assert results[0].extra == {"retry_after": 700.0}


def test_throttling_honours_retry_after() -> None:
    meta = FakeMeta(script=["throttle:30", "throttle:1"])
    fake = FakeTime()
    results, d = deliver(meta, batch(5), fake)
    assert states(results) == {State.DELIVERED: 5}
    assert results[0].extra == {"retried": True}
    assert fake.sleeps[0] >= 30
    assert fake.sleeps[1] >= RetryPolicy().throttle_floor  # Meta's 1 s is below our floor
    assert d.retries == 2


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def err(kind: ErrorKind, code: int | None = None, retry_after: float | None = None) -> GraphError:
    return GraphError(kind, 400, code, None, "m", None, None, retry_after)


T, THR = ErrorKind.TRANSIENT, ErrorKind.THROTTLED


@pytest.mark.parametrize(
    ("attempt", "error", "rnd", "expected"),
    [
        (1, err(T), 0.0, 0.5),  # no jitter drawn: the full delay
        (1, err(T), 1.0, 0.25),  # full jitter takes off half
        (2, err(T), 0.0, 1.0),
        (3, err(T), 0.5, 1.5),
        (12, err(T), 0.0, 60.0),  # capped at max_delay
        (12, err(T), 1.0, 30.0),
        (1, err(THR, 4), 0.0, 5.0),  # throttled: at least the floor
        (1, err(THR, 4, retry_after=42.0), 1.0, 42.0),  # and at least what Meta asked
        (1, err(T, 368), 0.0, 60.0),  # temporarily blocked: long backoff
        (1, err(T, retry_after=3.0), 0.0, 3.0),  # a 503 with Retry-After
    ],
)
def test_retry_delays(attempt: int, error: GraphError, rnd: float, expected: float) -> None:
    assert RetryPolicy().delay(attempt, error, FixedRandom(rnd)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "options",
    [{"max_attempts": 0}, {"jitter": 1.5}, {"base_delay": -1}, {"base_delay": 10, "max_delay": 1}],
)
def test_retry_policy_rejects_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)


def test_auth_failure_pauses_and_queues_everything() -> None:
    payloads = batch(1000)
    meta = FakeMeta(bad={payloads[10].lead_id}, script=["meta", "auth"])

    async def body(d: Dispatcher) -> tuple[Sequence[Delivery], Sequence[Delivery], Dispatcher]:
        first = await d.deliver(payloads)
        second = await d.deliver(batch(5))
        return first, second, d

    first, second, d = run(meta, body)
    assert states(first) == {State.QUEUED: 1000}
    assert states(second) == {State.QUEUED: 5}
    assert {r.reason for r in first + second} == {"paused_auth"}
    assert d.paused is not None and d.paused.label() == "190/463"
    assert d.requests == len(meta.batches) == 2  # nothing sent after the auth error
    assert all(r.message and "190/463" in r.message and TOKEN not in r.message for r in first)
    assert second[0].attempts == 0


def test_auth_failure_in_the_middle_of_a_bisection() -> None:
    payloads = batch(1000)
    meta = FakeMeta(bad={payloads[999].lead_id}, script=["meta", "meta", "auth"])
    results, d = deliver(meta, payloads)
    # first half went through before the token was refused; the second half stays queued
    assert [r.state for r in results[:500]] == [State.DELIVERED] * 500
    assert [r.state for r in results[500:]] == [State.QUEUED] * 500
    assert d.requests == 3


def test_expired_before_sending_is_not_sent() -> None:
    old = payload(1, event_time=NOW - WEEK + 30)  # inside the 60 s safety margin
    fresh = payload(2)
    meta = FakeMeta()
    results, _ = deliver(meta, [old, fresh])
    assert [r.state for r in results] == [State.EXPIRED, State.DELIVERED]
    assert (results[0].reason, results[0].attempts) == ("expired", 0)
    # It had not passed the window yet (a review read "passed Meta's 7-day window"): said so.
    assert results[0].message is not None
    assert "was 30 s from the end of Meta's 7-day window" in results[0].message
    assert "less than the 60 s a request may take" in results[0].message
    assert meta.batches == [[fresh.lead_id]]


def test_expires_while_waiting_to_retry() -> None:
    soon = payload(1, event_time=NOW - WEEK + 60 + 10)  # 10 s left
    fresh = payload(2)
    meta = FakeMeta(script=["http_500"])
    policy = RetryPolicy(base_delay=20, jitter=0)
    results, _ = deliver(meta, [soon, fresh], policy=policy)
    assert [r.state for r in results] == [State.EXPIRED, State.DELIVERED]
    assert (results[0].attempts, results[1].attempts) == (1, 2)
    assert meta.batches[1] == [fresh.lead_id]


def test_meta_saying_too_old_counts_as_expired() -> None:
    meta = FakeMeta(script=["too_old"])
    results, _ = deliver(meta, [payload(1)])
    assert (results[0].state, results[0].reason, results[0].code, results[0].subcode) == (
        State.EXPIRED,
        "expired",
        100,
        2804003,
    )


def test_on_request_sees_every_request() -> None:
    seen: list[tuple[bool, int]] = []
    payloads = batch(8)
    meta = FakeMeta(bad={payloads[0].lead_id})

    def on_request(result: GraphResult, events: int) -> None:
        seen.append((result.ok, events))

    deliver(meta, payloads, on_request=on_request)
    assert seen == [(False, 8), (False, 4), (False, 2), (False, 1), (True, 1), (True, 2), (True, 4)]


def test_a_payload_that_cannot_be_encoded_does_not_sink_the_batch() -> None:
    broken = payload(1)
    broken.data["custom_data"]["value"] = {1, 2}  # a set: not JSON
    meta = FakeMeta()
    results, _ = deliver(meta, [broken, payload(2)])
    assert [r.state for r in results] == [State.REJECTED, State.DELIVERED]
    assert results[0].reason == "unencodable"


def _of_lead(n: int, lead: int) -> Payload:
    """``payload(n)`` for lead ``lead``."""
    p = payload(n)
    data = {**p.data, "user_data": {"lead_id": lead}}
    return Payload(p.key, p.source_event, p.event_name, lead, p.event_time, data)


def test_a_lead_s_later_event_waits_behind_its_earlier_one_in_a_split_batch() -> None:
    """Meta refuses the batch (a bad lead), so it is halved; the first half then fails for good
    (two 500s, max_attempts 2). A later event of a lead of that half, in the second half, is not
    sent ahead of it: it ends as the earlier one did (to be tried again after it), while the
    other events of the second half go."""
    lead_a, bad = FIRST_LEAD + 1, FIRST_LEAD + 2
    payloads = [_of_lead(0, lead_a), payload(10), _of_lead(2, bad), _of_lead(3, lead_a)]
    meta = FakeMeta(bad={bad}, script=["meta", "http_500", "http_500"])
    results, _ = deliver(meta, payloads, policy=RetryPolicy(max_attempts=2))
    assert [r.state for r in results] == [State.DEAD, State.DEAD, State.REJECTED, State.DEAD]
    assert lead_a not in meta.received  # neither of lead A's events went out of order
    held = results[3]
    assert held.reason == "retries_exhausted" and held.attempts == 1
    assert held.message is not None and "an earlier event of lead" in held.message
