"""deliver_stream: nothing lost or duplicated, batches by size and age, bounded, stops on pause."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from leadrelay.delivery.dispatcher import Dispatcher
from leadrelay.delivery.pipeline import BatchPolicy, deliver_stream
from leadrelay.meta.client import GraphClient
from leadrelay.outcome import Delivery, Payload, State

TOKEN = "EAAB-secret-token-do-not-print"
NOW = 1_767_800_000
FIRST_LEAD = 120_000_000_000_000


def payload(n: int) -> Payload:
    lead = FIRST_LEAD + n
    data = {
        "event_name": "Raw Lead",
        "event_time": NOW,
        "event_id": f"evt-{n}",
        "action_source": "system_generated",
        "user_data": {"lead_id": lead},
    }
    return Payload(
        key=f"evt-{n}",
        source_event="lead_created",
        event_name="Raw Lead",
        lead_id=lead,
        event_time=NOW,
        data=data,
    )


class Meta:
    """An async fake Meta that counts what it got and how many requests were open at once."""

    def __init__(self, script: list[str] | None = None, together: int = 0) -> None:
        self.script = list(script or [])
        self.batches: list[list[int]] = []
        self.open = 0
        self.most_open = 0
        self.together = together
        self._all_in: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        leads = [e["user_data"]["lead_id"] for e in orjson.loads(request.content)["data"]]
        self.batches.append(leads)
        if self.script and self.script.pop(0) == "auth":
            return httpx.Response(400, json={"error": {"message": "token expired", "code": 190}})
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            if self.together:
                # Hold the first requests until `together` of them are open at once: proves the
                # pipeline really overlaps requests (fails by timeout if it does not).
                self._all_in = self._all_in or asyncio.Event()
                if self.open >= self.together:
                    self._all_in.set()
                await asyncio.wait_for(self._all_in.wait(), timeout=10)
            await asyncio.sleep(0)
        finally:
            self.open -= 1
        return httpx.Response(200, json={"events_received": len(leads), "fbtrace_id": "T"})

    def received(self) -> Counter[int]:
        return Counter(lead for batch in self.batches for lead in batch)


def stream(meta: Meta, source: Any, policy: BatchPolicy) -> tuple[list[Delivery], Dispatcher]:
    results: list[Delivery] = []

    async def go() -> Dispatcher:
        async with GraphClient(
            graph_url="https://graph.example",
            api_version="v25.0",
            pixel_id="987654321012345",
            access_token=TOKEN,
            transport=httpx.MockTransport(meta),
        ) as client:
            dispatcher = Dispatcher(client, clock=lambda: float(NOW))
            await deliver_stream(source, dispatcher, policy, results.append)
            return dispatcher

    return results, asyncio.run(go())


def test_many_batches_with_concurrency_nothing_lost_or_duplicated() -> None:
    meta = Meta(together=4)
    payloads = [payload(i) for i in range(10_000)]
    results, d = stream(meta, iter(payloads), BatchPolicy(max_events=100, concurrency=4))
    assert sorted(r.payload.key for r in results) == sorted(p.key for p in payloads)
    assert {r.state for r in results} == {State.DELIVERED}
    assert meta.received() == Counter(p.lead_id for p in payloads)
    assert d.requests == len(meta.batches) == 100
    assert all(len(b) == 100 for b in meta.batches)
    assert meta.most_open == 4  # overlapping, and never more than allowed


def test_an_async_source() -> None:
    async def source() -> AsyncIterator[Payload]:
        for i in range(250):
            if i % 50 == 0:
                await asyncio.sleep(0)
            yield payload(i)

    meta = Meta()
    results, _ = stream(meta, source(), BatchPolicy(max_events=100, concurrency=2))
    assert sorted(r.payload.key for r in results) == sorted(f"evt-{i}" for i in range(250))
    assert sorted(len(b) for b in meta.batches) == [50, 100, 100]


def test_a_partial_batch_is_sent_when_it_gets_old() -> None:
    # The source hands over 3 events and then waits until they are delivered, as a slow stdin
    # would: only the age flush can deliver them.
    three_delivered = threading.Event()
    waited: list[bool] = []
    results: list[Delivery] = []

    def source() -> Iterator[Payload]:
        yield from (payload(i) for i in range(3))
        waited.append(three_delivered.wait(timeout=10))
        yield from (payload(i) for i in range(3, 5))

    def on_result(result: Delivery) -> None:
        results.append(result)
        if len(results) == 3:
            three_delivered.set()

    meta = Meta()

    async def go() -> None:
        async with GraphClient(
            graph_url="https://graph.example",
            api_version="v25.0",
            pixel_id="987654321012345",
            access_token=TOKEN,
            transport=httpx.MockTransport(meta),
        ) as client:
            dispatcher = Dispatcher(client, clock=lambda: float(NOW))
            await deliver_stream(
                source(), dispatcher, BatchPolicy(max_events=1000, max_age_s=0.05), on_result
            )

    asyncio.run(go())
    assert waited == [True]
    assert [len(b) for b in meta.batches] == [3, 2]
    assert len(results) == 5


class Counted:
    """An iterator that counts what was pulled, and checks how far it got ahead of delivery."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0
        self.finished = 0
        self.most_ahead = 0

    def __iter__(self) -> Counted:
        return self

    def __next__(self) -> Payload:
        if self.pulled >= self.n:
            raise StopIteration
        self.most_ahead = max(self.most_ahead, self.pulled - self.finished)
        self.pulled += 1
        return payload(self.pulled - 1)


def test_memory_stays_bounded_when_meta_is_slower_than_the_source() -> None:
    source = Counted(20_000)
    policy = BatchPolicy(max_events=10, concurrency=2)

    async def go() -> None:
        async def slow(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0.001)
            n = len(orjson.loads(request.content)["data"])
            return httpx.Response(200, json={"events_received": n})

        async with GraphClient(
            graph_url="https://graph.example",
            api_version="v25.0",
            pixel_id="1",
            access_token=TOKEN,
            transport=httpx.MockTransport(slow),
        ) as client:

            def on_result(result: Delivery) -> None:
                source.finished += 1

            await deliver_stream(
                source, Dispatcher(client, clock=lambda: float(NOW)), policy, on_result
            )

    asyncio.run(go())
    assert source.finished == 20_000
    # in flight + the batch being filled + one batch waiting in the hand-off
    assert source.most_ahead <= (policy.concurrency + 2) * policy.max_events


def test_auth_failure_stops_pulling_and_reports_what_was_pulled() -> None:
    source = Counted(100_000)
    meta = Meta(script=["auth"])
    policy = BatchPolicy(max_events=10, concurrency=2)
    results, d = stream(meta, source, policy)
    assert d.paused is not None and d.paused.label() == "190"
    assert len(results) == source.pulled
    assert Counter(r.payload.key for r in results) == Counter(
        f"evt-{i}" for i in range(source.pulled)
    )
    assert {(r.state, r.reason) for r in results} == {(State.QUEUED, "paused_auth")}
    assert source.pulled <= (policy.concurrency + 2) * policy.max_events + 1
    assert len(meta.batches) <= policy.concurrency
    # the rest is still there for the caller to count as not sent
    assert next(source).key == f"evt-{source.pulled - 1}"


def test_an_error_from_the_source_comes_after_what_was_read() -> None:
    def source() -> Iterator[Payload]:
        yield from (payload(i) for i in range(5))
        raise OSError("disk on fire")

    meta = Meta()
    results: list[Delivery] = []

    async def go() -> None:
        async with GraphClient(
            graph_url="https://graph.example",
            api_version="v25.0",
            pixel_id="1",
            access_token=TOKEN,
            transport=httpx.MockTransport(meta),
        ) as client:
            await deliver_stream(
                source(),
                Dispatcher(client, clock=lambda: float(NOW)),
                BatchPolicy(),
                results.append,
            )

    with pytest.raises(OSError, match="disk on fire"):
        asyncio.run(go())
    assert len(results) == 5 and {r.state for r in results} == {State.DELIVERED}


def test_an_error_in_on_result_is_raised_not_swallowed() -> None:
    def on_result(result: Delivery) -> None:
        raise RuntimeError("report disk full")

    async def go() -> None:
        async with GraphClient(
            graph_url="https://graph.example",
            api_version="v25.0",
            pixel_id="1",
            access_token=TOKEN,
            transport=httpx.MockTransport(Meta()),
        ) as client:
            await deliver_stream(
                Counted(5000),
                Dispatcher(client, clock=lambda: float(NOW)),
                BatchPolicy(max_events=10),
                on_result,
            )

    with pytest.raises(RuntimeError, match="report disk full"):
        asyncio.run(go())


def test_empty_input_sends_nothing() -> None:
    meta = Meta()
    results, d = stream(meta, iter([]), BatchPolicy())
    assert (results, d.requests) == ([], 0)


@pytest.mark.parametrize(
    "options", [{"max_events": 0}, {"max_events": 1001}, {"max_age_s": 0}, {"concurrency": 0}]
)
def test_batch_policy_rejects_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BatchPolicy(**options)
