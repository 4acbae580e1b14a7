"""Crash safety of ``leadrelay serve``: SIGKILL mid-backlog loses nothing answered 202, and
SIGTERM finishes the batches in flight before exiting 0. Real processes, real SQLite, real HTTP;
the sandbox answers slowly so that a backlog builds up."""

from __future__ import annotations

import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.outcome import State
from leadrelay.sandbox import SandboxOptions, SandboxServer
from service_process import ServiceProcess, event, wait_until, write_config


@pytest.fixture
def slow_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxOptions(slow_ms=150)) as sb:
        yield sb


def post_backlog(proc: ServiceProcess, prefix: str, requests: int, per_request: int) -> set[str]:
    accepted: set[str] = set()
    for r in range(requests):
        events = [event(r * per_request + i, prefix=prefix) for i in range(per_request)]
        answer = proc.post(events)
        assert answer.status_code == 202, answer.text
        accepted.update(answer.json()["ids"])
    return accepted


def test_sigkill_mid_backlog_loses_nothing_that_was_accepted(
    slow_sandbox: SandboxServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "leadrelay.toml",
        graph_url=slow_sandbox.url,
        data_dir=data,
        delivery={"batch_size": 10, "concurrency": 2},
    )
    proc = ServiceProcess(config).start()
    accepted = post_backlog(proc, "crash", requests=15, per_request=20)
    assert len(accepted) == 300
    # Kill it twice mid-backlog, each time with batches in flight, and start it again.
    for kills in (1, 2):
        goal = 40 * kills

        def progressed() -> bool:
            return slow_sandbox.state.events_received >= goal  # noqa: B023 (called right here)

        wait_until(progressed, what="deliveries")
        proc.kill()
        assert slow_sandbox.state.events_received < len(accepted), "the backlog ran dry"
        proc = ServiceProcess(config).start()
    try:
        wait_until(
            lambda: accepted <= {e["event_id"] for e in slow_sandbox.state.received()},
            timeout=30,
            what="every accepted event at Meta",
        )
    finally:
        assert proc.stop() == 0
        proc.close()
    copies: dict[str, set[bytes]] = defaultdict(set)
    for sent in slow_sandbox.state.received():
        copies[sent["event_id"]].add(orjson.dumps(sent, option=orjson.OPT_SORT_KEYS))
    assert set(copies) == accepted  # nothing lost, nothing invented
    assert [k for k, bodies in copies.items() if len(bodies) > 1] == []  # a resend is identical
    with SQLiteStore(data / "leadrelay.db") as store:
        counts = store.counts()
    assert counts.by_state[State.DELIVERED] == 300
    assert counts.queued == counts.in_flight == 0


def test_sigterm_finishes_batches_in_flight_and_exits_0(tmp_path: Path) -> None:
    with SandboxServer(SandboxOptions(slow_ms=400)) as sandbox:
        data = tmp_path / "data"
        config = write_config(
            tmp_path / "leadrelay.toml",
            graph_url=sandbox.url,
            data_dir=data,
            delivery={"batch_size": 10, "concurrency": 2},
        )
        proc = ServiceProcess(config).start()
        try:
            accepted = post_backlog(proc, "term", requests=5, per_request=20)
            wait_until(lambda: sandbox.state.requests >= 1, what="a request in flight")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            proc.close()
        at_meta = {e["event_id"] for e in sandbox.state.received()}
    assert at_meta, "the batch in flight at SIGTERM was not finished"
    with SQLiteStore(data / "leadrelay.db") as store:
        records: dict[str, Any] = {k: store.get(k) for k in accepted}
        counts = store.counts()
    assert counts.in_flight == 0
    delivered = {k for k, r in records.items() if r.state is State.DELIVERED}
    queued = {k for k, r in records.items() if r.state is State.QUEUED}
    # What Meta got is recorded as delivered (not left to be sent again), the rest waits.
    assert delivered == at_meta
    assert delivered | queued == accepted and queued
    logs = [e.get("event") for e in proc.logs()]
    assert "draining batches in flight" in logs and logs[-1] == "stopped"
