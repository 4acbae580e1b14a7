"""``leadrelay serve`` over real HTTP: a real server process, a real SQLite file, the sandbox as
Meta. Plus the delivery worker in-process on virtual time (requeue after an outage, auth pause)."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from leadrelay.config import Settings, parse_config
from leadrelay.delivery.dispatcher import Dispatcher, RetryPolicy
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Incoming
from leadrelay.delivery.wiring import make_client
from leadrelay.delivery.worker import DeliveryWorker, RequeuePolicy
from leadrelay.logs import configure_logging
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Payload, State
from leadrelay.sandbox import SandboxOptions, SandboxServer
from service_process import (
    INTAKE_TOKEN,
    ServiceProcess,
    event,
    run_cli,
    wait_until,
    write_config,
)

DELETED_LEAD = 120000000099999
MAX_BODY = 4096


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxOptions(deleted_lead_ids=frozenset({DELETED_LEAD}))) as sb:
        yield sb


@pytest.fixture(scope="module")
def service(sandbox: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("service")
    config = write_config(
        root / "leadrelay.toml",
        graph_url=sandbox.url,
        data_dir=root / "data",
        server={"max_body_bytes": MAX_BODY},
        delivery={"batch_size": 50},
    )
    proc = ServiceProcess(config).start()
    yield proc
    assert proc.stop() == 0
    proc.close()


def received_ids(sandbox: SandboxServer) -> list[str]:
    return [e["event_id"] for e in sandbox.state.received()]


def wait_delivered(sandbox: SandboxServer, ids: set[str], timeout: float = 20.0) -> None:
    wait_until(lambda: ids <= set(received_ids(sandbox)), timeout, f"{len(ids)} deliveries")


def stored(db: Path, keys: list[str]) -> dict[str, State]:
    with SQLiteStore(db) as store:
        return {k: r.state for k in keys if (r := store.get(k)) is not None}


def test_accepted_events_are_stored_before_the_answer_and_delivered(
    service: ServiceProcess, sandbox: SandboxServer
) -> None:
    events = [event(n, prefix="basic") for n in range(3)]
    answer = service.post(events)
    assert answer.status_code == 202
    body = answer.json()
    assert body == {
        "accepted": 3,
        "queued": 3,
        "already_stored": 0,
        "filtered": {},
        "rejected": [],
        "ids": ["basic-0", "basic-1", "basic-2"],
    }
    # Already in the SQLite file when the answer arrives (queued, in flight or delivered).
    db = Path(service.config).parent / "data" / "leadrelay.db"
    assert set(stored(db, body["ids"])) == set(body["ids"])
    wait_delivered(sandbox, set(body["ids"]))
    sent = next(e for e in sandbox.state.received() if e["event_id"] == "basic-1")
    assert sent["user_data"]["lead_id"] == 120000000000001
    assert sent["event_name"] == "Marketing Qualified Lead"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {INTAKE_TOKEN}"},
        {"Authorization": f"Bearer {INTAKE_TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "not-bearer", "longer", "empty"],
)
def test_missing_or_wrong_token_is_401_and_nothing_is_stored(
    service: ServiceProcess, headers: dict[str, str]
) -> None:
    answer = service.post([event(1, prefix="unauth")], token=None, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "token" in answer.json()["message"]
    db = Path(service.config).parent / "data" / "leadrelay.db"
    assert stored(db, ["unauth-1"]) == {}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"event_name": "lead_qualified",', "truncated"),
        (b"", "empty"),
        (b"not json at all", "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"lead_qualified"', "not a JSON object"),
    ],
)
def test_malformed_body_is_400_with_a_clear_message(
    service: ServiceProcess, body: bytes, says: str
) -> None:
    answer = service.post(body)
    assert answer.status_code == 400
    problem = answer.json()
    assert problem["error"] == "malformed_body"
    assert says in problem["message"]
    assert problem["message"].startswith("request")  # names where in the body


def test_oversized_body_is_413_with_or_without_content_length(service: ServiceProcess) -> None:
    big = orjson.dumps([event(n, prefix="big") for n in range(60)])
    assert len(big) > MAX_BODY
    answer = service.post(big)
    assert answer.status_code == 413
    assert str(MAX_BODY) in answer.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is checked
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = httpx.post(
        f"{service.url}/v1/events",
        content=chunks(),
        headers={"Authorization": f"Bearer {INTAKE_TOKEN}"},
    )
    assert streamed.status_code == 413
    db = Path(service.config).parent / "data" / "leadrelay.db"
    assert stored(db, ["big-0", "big-59"]) == {}


def test_bad_items_are_listed_and_the_good_ones_stored(
    service: ServiceProcess, sandbox: SandboxServer
) -> None:
    no_lead = {"event_name": "lead_qualified", "context": {"event_id": "partial-nolead"}}
    unmapped = {"event_name": "page_view", "context": {"event_id": "partial-pv"}}
    lines = [
        orjson.dumps(event(1, prefix="partial")),
        b'{"event_name": "lead_qualified", oops}',
        orjson.dumps(no_lead),
        orjson.dumps(unmapped),
        orjson.dumps(event(2, prefix="partial")),
    ]
    answer = service.post(b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code == 202
    body = answer.json()
    assert body["accepted"] == 4 and body["queued"] == 2
    assert body["filtered"] == {"unmapped": 1}
    assert body["ids"] == ["partial-1", "partial-2"]
    bad = {r["item"]: r for r in body["rejected"]}
    assert set(bad) == {"request line 2", "request line 3"}
    assert bad["request line 2"]["reason"] == "unreadable"
    assert bad["request line 3"]["reason"] == "missing_lead_id"
    assert bad["request line 3"]["field"] == "user_data.lead_id"
    assert bad["request line 3"]["event_id"] == "partial-nolead"
    wait_delivered(sandbox, {"partial-1", "partial-2"})
    db = Path(service.config).parent / "data" / "leadrelay.db"
    states = stored(db, ["partial-nolead", "partial-pv"])
    assert states == {"partial-nolead": State.REJECTED, "partial-pv": State.FILTERED}


def test_concurrent_posters_every_event_delivered_exactly_once(
    service: ServiceProcess, sandbox: SandboxServer
) -> None:
    accepted: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def poster(t: int) -> None:
        with httpx.Client(timeout=30) as http:
            for r in range(50):
                events = [event(t * 1000 + r * 2 + i, prefix="conc") for i in range(2)]
                answer = http.post(
                    f"{service.url}/v1/events",
                    content=orjson.dumps(events),
                    headers={"Authorization": f"Bearer {INTAKE_TOKEN}"},
                )
                with lock:
                    if answer.status_code == 202:
                        accepted.extend(answer.json()["ids"])
                    else:
                        failures.append(f"{answer.status_code} {answer.text}")

    threads = [threading.Thread(target=poster, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(accepted) == 8 * 50 * 2
    wait_delivered(sandbox, set(accepted), timeout=30)
    seen = Counter(i for i in received_ids(sandbox) if i.startswith("conc-"))
    assert set(seen) == set(accepted)
    assert [i for i, n in seen.items() if n > 1] == []


def metric_samples(service: ServiceProcess) -> dict[tuple[str, frozenset[Any]], float]:
    answer = service.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_metrics_show_outcomes_queue_batches_and_graph_errors(
    service: ServiceProcess, sandbox: SandboxServer
) -> None:
    refused = event(99999, prefix="metrics")  # lead 120000000099999: deleted at Meta
    answer = service.post([refused, event(1, prefix="metrics"), {"event_name": "page_view"}])
    assert answer.status_code == 202
    wait_delivered(sandbox, {"metrics-1"})
    db = Path(service.config).parent / "data" / "leadrelay.db"
    wait_until(lambda: stored(db, ["metrics-99999"]) == {"metrics-99999": State.REJECTED})
    samples = metric_samples(service)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("leadrelay_events_total", outcome="delivered", reason="") >= 1
    assert value("leadrelay_events_total", outcome="filtered", reason="unmapped") >= 1
    assert value("leadrelay_events_total", outcome="rejected", reason="meta_100_2804036") == 1
    assert value("leadrelay_graph_errors_total", code="100/2804036", kind="invalid") >= 1
    assert value("leadrelay_batch_duration_seconds_count") >= 1
    assert ("leadrelay_queue_depth", frozenset()) in samples
    assert ("leadrelay_oldest_queued_age_seconds", frozenset()) in samples
    assert value("leadrelay_delivery_paused") == 0
    assert value("leadrelay_intake_requests_total", status="202") >= 1


def test_health_readiness_and_openapi(service: ServiceProcess) -> None:
    assert service.get("/healthz").json() == {"status": "ok"}
    ready = service.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    doc = service.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    post = doc["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "413", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["503"]["headers"]
    assert "Partial success" in post["description"]
    assert str(MAX_BODY) in post["responses"]["413"]["description"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_backpressure_answers_503_with_retry_after(sandbox: SandboxServer, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "leadrelay.toml",
        graph_url=sandbox.url,
        data_dir=tmp_path / "data",
        server={"max_backlog": 5},
    )
    proc = ServiceProcess(config, no_worker=True).start()
    try:
        assert proc.post([event(n, prefix="bp") for n in range(3)]).status_code == 202
        assert proc.post([event(n, prefix="bp") for n in range(3, 6)]).status_code == 202
        refused = proc.post([event(6, prefix="bp")])
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert "max_backlog" in refused.json()["message"]
        # Still ready (the 503s are the backpressure), but it says so, as the log does: the
        # refusals showed only in /metrics, and the pause advice said events were accepted.
        ready = proc.get("/readyz")
        assert ready.status_code == 200  # intake-only: nothing to pause
        assert [w["reason"] for w in ready.json()["warnings"]] == ["backlog_full"]
        assert "over server.max_backlog (5)" in ready.json()["warnings"][0]["message"]
        assert proc.wait_for_log(lambda e: "backlog full" in str(e.get("event")), 5)
        status = run_cli("status", "--config", str(config))
        said = " ".join(status.stdout.split())
        assert "Backlog full: over server.max_backlog (5): serve refuses new events" in said
    finally:
        assert proc.stop() == 0
        proc.close()
    states = stored(tmp_path / "data" / "leadrelay.db", [f"bp-{n}" for n in range(7)])
    assert len(states) == 6 and "bp-6" not in states
    assert set(states.values()) == {State.QUEUED}


def test_a_reload_without_intake_token_keeps_the_old_config(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """serve does not start without an intake token; reloaded, a config without one would
    refuse every event while /readyz said ready. It is refused, and intake goes on."""
    config = write_config(
        tmp_path / "leadrelay.toml", graph_url=sandbox.url, data_dir=tmp_path / "data"
    )
    proc = ServiceProcess(config).start()
    try:
        text = config.read_text()
        config.write_text(
            "\n".join(line for line in text.splitlines() if "intake_token" not in line)
        )
        proc.send_signal(signal.SIGHUP)
        failed = proc.wait_for_log(lambda e: "reload failed" in str(e.get("event")))
        assert "intake_token is not set" in str(failed.get("error"))
        assert proc.post([event(1, prefix="kept")]).status_code == 202
    finally:
        assert proc.stop() == 0
        proc.close()


def test_refused_token_pauses_delivery_until_a_fixed_config_is_reloaded(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    bad_token = "EAAB-revoked-token-value"
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "leadrelay.toml", graph_url=sandbox.url, data_dir=data, access_token=bad_token
    )
    proc = ServiceProcess(config).start()
    try:
        assert proc.post([event(n, prefix="auth") for n in range(5)]).status_code == 202

        def paused() -> bool:
            answer = proc.get("/readyz")
            return answer.status_code == 503

        wait_until(paused, what="/readyz to report the pause")
        readiness = proc.get("/readyz").json()
        assert readiness["reason"] == "delivery_paused"
        problem = readiness["problems"][0]
        assert problem["code"] == 190
        assert "access_token" in problem["message"] and "SIGHUP" in problem["message"]
        # status says the cause and the fix, as /readyz does, not only the reason code.
        port = proc.url.rpartition(":")[2]
        asked = tmp_path / "status.toml"  # the service's config, with the port it listens on
        asked.write_text(config.read_text().replace("port = 0", f"port = {port}"))
        shown = subprocess.run(
            [sys.executable, "-m", "leadrelay", "status", "--config", str(asked)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "300"},
        )
        assert "Delivery paused:" in shown.stdout and "SIGHUP" in shown.stdout, shown.stdout
        assert bad_token not in shown.stdout + shown.stderr
        # Intake keeps accepting while paused.
        assert proc.post([event(n, prefix="auth") for n in range(5, 7)]).status_code == 202
        proc.wait_for_log(lambda e: e.get("event") == "delivery paused")

        config.write_text(config.read_text().replace('pixel_id = "', 'pixel_id = "x'))
        proc.send_signal(signal.SIGHUP)
        proc.wait_for_log(lambda e: "reload failed" in str(e.get("event")))
        assert proc.get("/readyz").status_code == 503  # still the old config, still paused

        write_config(config, graph_url=sandbox.url, data_dir=data)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: proc.get("/readyz").status_code == 200, what="resume")
        wait_delivered(sandbox, {f"auth-{n}" for n in range(7)})
    finally:
        assert proc.stop() == 0
        proc.close()
    logs = "".join(proc.lines)
    assert bad_token not in logs and "sandbox-token" not in logs and INTAKE_TOKEN not in logs


# The delivery worker in-process, on virtual time: the sleep advances the clock.

NOW = time.time()


class VirtualTime:
    def __init__(self) -> None:
        self.now = NOW

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def worker_settings(graph_url: str) -> Settings:
    return parse_config(
        {
            "pixel_id": "123456789012345",
            "access_token": "sandbox-token",
            "lead_id": "{{facebook_lead_id}}",
            "lead_event_source": "Test CRM",
            "graph_url": graph_url,
            "mapping": {"lead_qualified": "Marketing Qualified Lead"},
        },
        source="test",
        env={},
    )


def make_worker(
    settings: Settings, store: SQLiteStore, vt: VirtualTime, requeue: RequeuePolicy | None
) -> DeliveryWorker:
    def dispatcher() -> Dispatcher:
        policy = RetryPolicy(max_attempts=2, base_delay=0.0, jitter=0.0)
        return Dispatcher(make_client(settings), policy=policy, clock=vt.clock, sleep=vt.sleep)

    return DeliveryWorker(
        store, dispatcher, batch_size=10, requeue=requeue, clock=vt.clock, sleep=vt.sleep
    )


def add_events(store: SQLiteStore, settings: Settings, keys: range, prefix: str) -> None:
    mapper = Mapper(settings)
    outcomes = [mapper.map(event(n, prefix=prefix)) for n in keys]
    assert all(isinstance(o, Payload) for o in outcomes)
    store.add([Incoming(o, None, NOW) for o in outcomes])


def test_worker_requeues_with_growing_backoff_when_retries_run_out(tmp_path: Path) -> None:
    vt = VirtualTime()
    with SandboxServer() as sb, SQLiteStore(tmp_path / "w.db") as store:
        settings = worker_settings(sb.url)
        add_events(store, settings, range(3), "outage")
        sb.state.script("http_500", "http_503", "http_500", "http_500")  # two rounds of 2
        waits: list[tuple[str | None, float | None]] = []
        original_sleep = vt.sleep

        async def watching_sleep(seconds: float) -> None:
            record = store.get("outage-0")
            assert record is not None
            if (
                record.state is State.QUEUED
                and (record.reason, record.next_attempt_at) not in waits
            ):
                waits.append((record.reason, record.next_attempt_at))
            await original_sleep(seconds)

        vt.sleep = watching_sleep  # type: ignore[method-assign]
        worker = make_worker(settings, store, vt, RequeuePolicy(base_delay_s=30, factor=2))
        assert asyncio.run(worker.run_until_idle()) is None
        record = store.get("outage-0")
        assert record is not None and record.state is State.DELIVERED
        assert record.attempts == 5  # 2 + 2 failed requests, then the one that worked
        assert [reason for reason, _ in waits] == ["retries_exhausted", "retries_exhausted"]
        first, second = (at for _, at in waits)
        assert first == pytest.approx(NOW + 30)
        assert second is not None and first is not None
        assert second - first >= 60  # the second round waits twice as long
        assert sorted(received_ids(sb)) == ["outage-0", "outage-1", "outage-2"]


def test_worker_without_requeue_records_dead_letters(tmp_path: Path) -> None:
    vt = VirtualTime()
    with SandboxServer() as sb, SQLiteStore(tmp_path / "w.db") as store:
        settings = worker_settings(sb.url)
        add_events(store, settings, range(2), "dead")
        sb.state.script("http_500", "http_500")
        worker = make_worker(settings, store, vt, requeue=None)
        assert asyncio.run(worker.run_until_idle()) is None
        records = [store.get(f"dead-{n}") for n in range(2)]
        assert [(r.state, r.reason) for r in records if r] == [
            (State.DEAD, "retries_exhausted")
        ] * 2
        assert received_ids(sb) == []


def test_worker_pauses_on_a_refused_token_and_resumes_with_a_new_dispatcher(
    tmp_path: Path,
) -> None:
    vt = VirtualTime()
    with SandboxServer() as sb, SQLiteStore(tmp_path / "w.db") as store:
        settings = worker_settings(sb.url)
        add_events(store, settings, range(4), "pause")
        sb.state.script("auth")
        worker = make_worker(settings, store, vt, RequeuePolicy())
        paused = asyncio.run(worker.run_until_idle())
        assert paused is not None and paused.code == 190
        record = store.get("pause-0")
        assert record is not None
        assert (record.state, record.reason, record.attempts) == (State.QUEUED, "paused_auth", 0)
        assert received_ids(sb) == []
        worker.resume()
        assert worker.paused is None
        assert asyncio.run(worker.run_until_idle()) is None
        assert sorted(received_ids(sb)) == [f"pause-{n}" for n in range(4)]


def test_a_batch_cut_short_twice_is_put_back_and_told_once_before_the_worker_ends(
    tmp_path: Path,
) -> None:
    """A second Ctrl-C as the drain timeout ran out cancelled the batches in flight twice: the
    second cancel ended a batch while it was being put back, the worker ended before it was,
    and its events were told twice (counted "queued" twice: 21,980 report rows for 20,000
    events in a review). Each batch is put back, and told once, before the worker ends."""
    putting_back = threading.Event()

    class SlowToPutBack(SQLiteStore):  # a disk that takes its time: the second cancel comes
        def retry_later(self, *args: Any, **kwargs: Any) -> None:
            putting_back.set()
            time.sleep(0.3)
            super().retry_later(*args, **kwargs)

    told: list[tuple[str, str | None]] = []
    slow = SandboxOptions(slow_ms=30_000)
    with SandboxServer(slow) as sb, SlowToPutBack(tmp_path / "w.db") as store:
        settings = worker_settings(sb.url)
        add_events(store, settings, range(20), "cut")
        worker = DeliveryWorker(
            store,
            lambda: Dispatcher(make_client(settings)),
            batch_size=10,
            requeue=None,
            on_results=lambda _, results: told.extend((r.payload.key, r.reason) for r in results),
        )

        async def stopped_twice() -> list[tuple[str, str | None]]:
            stop = asyncio.Event()
            runner = asyncio.create_task(worker.run(stop))
            while sb.state.requests < 2:
                await asyncio.sleep(0.01)
            stop.set()  # the first Ctrl-C: the batches drain
            await asyncio.sleep(0.05)
            batches = list(worker._tasks)
            assert worker.cut_short() == 2  # the second
            await asyncio.to_thread(putting_back.wait, 10)
            for task in batches:  # and the drain timeout, at the same moment
                task.cancel()
            await asyncio.wait(batches)
            ended = list(told)  # what was told by the time the batches ended
            await runner
            return ended

        ended = asyncio.run(stopped_twice())
        assert sorted(ended) == sorted((f"cut-{n}", "interrupted") for n in range(20))
        assert store.counts().queued == 20
    assert told == ended  # nothing told after the batches ended


def test_a_split_batch_cut_short_keeps_what_meta_answered_for(tmp_path: Path) -> None:
    """A stop in the middle of a batch split for a refused event put the whole batch back in
    the queue, those Meta had taken already among them: the next run sent them again (75 of
    200 twice in a review, with Meta 300 ms slow). Those Meta answered for are recorded; only
    the rest goes back, and the next run sends each event once."""
    refused = 120000000000000 + 7  # cut-7: Meta refuses the batch for it, the split begins
    slow = SandboxOptions(slow_ms=40, deleted_lead_ids=frozenset({refused}))
    with SandboxServer(slow) as sb, SQLiteStore(tmp_path / "w.db") as store:
        settings = worker_settings(sb.url)
        add_events(store, settings, range(64), "cut")

        def worker() -> DeliveryWorker:
            dispatcher = lambda: Dispatcher(make_client(settings))  # noqa: E731
            return DeliveryWorker(store, dispatcher, batch_size=64, requeue=None)

        async def stopped_mid_split(first: DeliveryWorker) -> None:
            runner = asyncio.create_task(first.run(asyncio.Event()))
            while len(sb.state.received()) < 20:  # some halves taken, the split goes on
                await asyncio.sleep(0.005)
            assert first.cut_short() == 1
            await runner

        asyncio.run(stopped_mid_split(worker()))
        taken = set(received_ids(sb))
        delivered = {r.key for r in store.events(states=[State.DELIVERED], limit=100)}
        # What Meta answered for is recorded as delivered: at least the 15 before the half
        # that made 20 (a request cut after Meta read it, before its answer, is sent again).
        assert 15 <= len(delivered) < 63 and delivered <= taken
        assert store.counts().queued == 64 - len(delivered) - store.counts().by_state["rejected"]
        assert asyncio.run(worker().run_until_idle()) is None
        sent = Counter(received_ids(sb))
        assert set(sent) == {f"cut-{n}" for n in range(64) if n != 7}
        assert all(sent[key] == 1 for key in delivered)  # never sent again


@pytest.mark.parametrize(
    ("rounds", "delay"), [(0, 30.0), (1, 60.0), (2, 120.0), (10, 1800.0), (10_000, 1800.0)]
)
def test_requeue_delay_grows_and_is_capped(rounds: int, delay: float) -> None:
    assert RequeuePolicy(base_delay_s=30, factor=2, max_delay_s=1800).delay(rounds) == delay


def test_a_second_delivering_process_on_the_same_store_is_refused(
    service: ServiceProcess, sandbox: SandboxServer
) -> None:
    second = ServiceProcess(service.config)
    with pytest.raises(AssertionError, match="another leadrelay process delivers"):
        second.start()
    assert second.wait() == 1
    second.close()
    intake_only = ServiceProcess(service.config, no_worker=True).start()
    try:
        answer = intake_only.post([event(1, prefix="second")])
        assert answer.status_code == 202
        wait_delivered(sandbox, {"second-1"})  # delivered by the first process
    finally:
        assert intake_only.stop() == 0
        intake_only.close()


def test_an_endless_header_is_refused_and_the_service_keeps_answering(
    service: ServiceProcess,
) -> None:
    # A client without a token must not be able to grow serve's memory or stall it by never
    # ending its headers: the HTTP parser refuses them past its limit (16 KB) with a 400.
    host, port = service.url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: leadrelay\r\nX-Junk: ")
        for _ in range(1024):  # up to 1 MB of one header value, 1 KB at a time
            sock.sendall(b"a" * 1024)
            if select.select([sock], [], [], 0.02)[0]:  # answered (and closing)
                answer = sock.recv(4096)
                break
    assert answer.startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200


def test_console_logs_show_no_local_variables_of_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A frame's locals can hold a request's Authorization header or the settings' token.
    configure_logging(0, fmt="console")
    try:
        secret = "Bearer intake-token-that-must-not-show"  # noqa: F841 (a local of this frame)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            structlog.get_logger("leadrelay.test").exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    written = capsys.readouterr().err
    assert "RuntimeError: boom" in written
    assert "intake-token-that-must-not-show" not in written


def test_a_corrected_resend_of_a_refused_event_is_delivered(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A CRM that resends an event we refused (its lead id was wrong), fixed, with the same
    event id: it takes the refused one's place and reaches Meta, where it was answered
    "queued" and dropped. A resend of a delivered event is still not sent again."""
    config = write_config(
        tmp_path / "leadrelay.toml", graph_url=sandbox.url, data_dir=tmp_path / "data"
    )
    proc = ServiceProcess(config).start()
    try:
        wrong = event(1, prefix="fix")
        wrong["facebook_lead_id"] = "123"
        first = proc.post([wrong, event(2, prefix="fix")]).json()
        assert [r["event_id"] for r in first["rejected"]] == ["fix-1"]
        wait_delivered(sandbox, {"fix-2"})
        assert proc.post([event(1, prefix="fix"), event(2, prefix="fix")]).status_code == 202
        wait_delivered(sandbox, {"fix-1", "fix-2"})
        time.sleep(1.0)  # a second fix-2, if it were queued, would be sent by now
    finally:
        assert proc.stop() == 0
        proc.close()
    sent = [i for i in received_ids(sandbox) if i.startswith("fix-")]
    assert sorted(sent) == ["fix-1", "fix-2"]  # each once


def test_a_resend_is_answered_as_already_stored_and_a_fixed_event_meta_refused_is_delivered(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A client's retry of a whole request is not queued or counted again (the answer and the
    metrics said "queued" for each retry); an event Meta refused (lead id unknown to Meta),
    resent fixed at its source under its event id, takes the refused one's place and reaches
    Meta (it was answered "queued" and dropped)."""
    config = write_config(
        tmp_path / "leadrelay.toml", graph_url=sandbox.url, data_dir=tmp_path / "data"
    )
    proc = ServiceProcess(config).start()
    db = tmp_path / "data" / "leadrelay.db"
    try:
        body = [event(99999, prefix="mref"), event(2, prefix="mref")]  # 99999: deleted at Meta
        first = proc.post(body).json()
        assert (first["queued"], first["already_stored"]) == (2, 0)
        wait_delivered(sandbox, {"mref-2"})
        wait_until(lambda: stored(db, ["mref-99999"]) == {"mref-99999": State.REJECTED})
        again = proc.post(body).json()
        assert (again["queued"], again["already_stored"]) == (0, 2)
        assert again["ids"] == ["mref-99999", "mref-2"]
        fixed = event(99999, prefix="mref")
        fixed["facebook_lead_id"] = "120000000000555"
        answer = proc.post([fixed]).json()
        assert (answer["queued"], answer["already_stored"]) == (1, 0)
        wait_delivered(sandbox, {"mref-99999"})
        bad = event(99999, prefix="mref")
        bad["facebook_lead_id"] = "1234"  # refused by our rules, for an event id delivered
        resent = proc.post([bad]).json()
        # said once, already stored: it was in "rejected" too, and a client could not tell
        assert (resent["already_stored"], resent["queued"], resent["rejected"]) == (1, 0, [])
        samples = metric_samples(proc)
    finally:
        assert proc.stop() == 0
        proc.close()
    got = [e for e in sandbox.state.received() if e["event_id"].startswith("mref-")]
    assert sorted(e["event_id"] for e in got) == ["mref-2", "mref-99999"]  # each once
    assert [e["user_data"]["lead_id"] for e in got if e["event_id"] == "mref-99999"] == [
        120000000000555
    ]
    queued = samples[("leadrelay_events_total", frozenset({("outcome", "queued"), ("reason", "")}))]
    assert queued == 3  # two, then the fixed one: not the retry's two


def test_a_retried_request_is_told_its_refused_and_filtered_events_again(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A client that retries a request whose answer it lost must learn what the first answer
    said: an event we refused (and stored refused) was answered "already_stored" with no entry
    in ``rejected``, so the client took it for stored and sent on its way, and a filtered one
    likewise. They are said again as the first time; the metrics count them once."""
    config = write_config(
        tmp_path / "leadrelay.toml", graph_url=sandbox.url, data_dir=tmp_path / "data"
    )
    proc = ServiceProcess(config).start()
    try:
        bad = {**event(1, prefix="retry"), "facebook_lead_id": "12ab"}
        unmapped = {**event(2, prefix="retry"), "event_name": "deal_updated"}
        body = [bad, unmapped, event(3, prefix="retry")]
        first = proc.post(body).json()
        again = proc.post(body).json()
        samples = metric_samples(proc)
    finally:
        assert proc.stop() == 0
        proc.close()
    assert [(r["event_id"], r["reason"]) for r in first["rejected"]] == [
        ("retry-1", "invalid_lead_id")
    ]
    assert (first["queued"], first["already_stored"], first["filtered"]) == (1, 0, {"unmapped": 1})
    assert again["rejected"] == first["rejected"]
    assert again["filtered"] == {"unmapped": 1}
    assert (again["accepted"], again["queued"], again["already_stored"]) == (3, 0, 1)
    assert again["ids"] == ["retry-3"]

    def counted(outcome: str, reason: str) -> float:
        key = ("leadrelay_events_total", frozenset({("outcome", outcome), ("reason", reason)}))
        return samples.get(key, 0.0)

    assert (counted("rejected", "invalid_lead_id"), counted("filtered", "unmapped")) == (1, 1)


def test_an_event_id_stored_for_another_stage_is_answered_rejected_not_already_stored(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A CRM that sends one event_id for each stage of a deal: the second stage was answered
    "already_stored" (a client's resend, the answer said) and never reached Meta. It is
    rejected, ``event_id_reused``, with what to do; a real resend is still already_stored."""
    config = write_config(
        tmp_path / "leadrelay.toml", graph_url=sandbox.url, data_dir=tmp_path / "data"
    )
    text = config.read_text()
    mapped = 'lead_qualified = "Marketing Qualified Lead"\n'
    config.write_text(text.replace(mapped, f'{mapped}deal_won = "Converted"\n'))
    proc = ServiceProcess(config).start()
    try:
        qualified = event(1, prefix="deal")
        won = {**event(1, prefix="deal"), "event_name": "deal_won"}
        assert proc.post([qualified]).json()["queued"] == 1
        wait_delivered(sandbox, {"deal-1"})
        later = proc.post([won]).json()
        together = proc.post(
            [event(2, prefix="deal"), {**event(2, prefix="deal"), "event_name": "deal_won"}]
        ).json()
        resend = proc.post([qualified]).json()
        won_bad = {**won, "facebook_lead_id": "12ab"}  # a refusal, of another stage
        same_bad = {**event(2, prefix="deal"), "facebook_lead_id": "1234"}  # of the same stage
        ordered = proc.post(["not an event", won_bad, won, same_bad]).json()
        unmapped = proc.post([{**qualified, "event_name": "deal_updated"}]).json()
        samples = metric_samples(proc)
    finally:
        assert proc.stop() == 0
        proc.close()
    assert (later["queued"], later["already_stored"], later["ids"]) == (0, 0, [])
    (problem,) = later["rejected"]
    assert problem["item"] == "request item 1"
    assert (problem["event_id"], problem["reason"], problem["field"]) == (
        "deal-1",
        "event_id_reused",
        "event_id",
    )
    assert problem["message"].startswith(
        "Converted has the event_id of a Marketing Qualified Lead event received before"
    )
    assert (together["queued"], together["already_stored"], together["ids"]) == (1, 0, ["deal-2"])
    assert [r["item"] for r in together["rejected"]] == ["request item 2"]
    assert (resend["queued"], resend["already_stored"], resend["rejected"]) == (0, 1, [])
    # A refusal of another stage is said (it was "already_stored"); entries in the body's order,
    # and "accepted" counts none of those not stored.
    assert [(r["item"], r["reason"]) for r in ordered["rejected"]] == [
        ("request item 1", "unreadable"),
        ("request item 2", "invalid_lead_id"),
        ("request item 3", "event_id_reused"),
    ]
    assert (ordered["accepted"], ordered["already_stored"], ordered["queued"]) == (1, 1, 0)
    # Another event of the CRM, filtered, is said filtered (it was "already_stored").
    assert (unmapped["filtered"], unmapped["already_stored"]) == ({"unmapped": 1}, 0)
    reused = (
        "leadrelay_events_total",
        frozenset({("outcome", "rejected"), ("reason", "event_id_reused")}),
    )
    assert samples[reused] == 3


def test_serve_names_the_unset_variable_of_its_token_and_the_rest_runs_without_it(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """With the README's [server] block and its variables not set, serve said nothing of them
    (the config error named them, for every command). Now serve names the variable to set, and
    validate and status run, validate saying what serve will need."""
    config = write_config(
        tmp_path / "leadrelay.toml", graph_url=sandbox.url, data_dir=tmp_path / "data"
    )
    unset = '"${LR_TEST_UNSET_INTAKE}"\ndashboard_token = "${LR_TEST_UNSET_DASHBOARD}"'
    config.write_text(config.read_text().replace(f'"{INTAKE_TOKEN}"', unset))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LR_TEST_UNSET_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "leadrelay", *args, "--config", str(config)]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    served = run("serve")
    assert served.returncode == 1
    assert "environment variable LR_TEST_UNSET_INTAKE is not set" in served.stderr
    checked = run("validate")
    assert checked.returncode == 0, checked.stderr
    said = " ".join(checked.stderr.split())
    assert "LR_TEST_UNSET_INTAKE is not set; serve cannot start without it" in said
    assert "LR_TEST_UNSET_DASHBOARD is not set; serve's dashboard takes the intake token" in said
    events = tmp_path / "events.ndjson"
    events.write_bytes(orjson.dumps(event(1, prefix="offline")) + b"\n")
    dry = run("send", str(events), "--dry-run")
    assert dry.returncode == 0 and b'"offline-1"' in dry.stdout.encode(), dry.stderr


def test_serve_logs_metas_errors_as_send_does(sandbox: SandboxServer, tmp_path: Path) -> None:
    """serve's worker counted Meta's errors in /metrics only: an operator reading its log saw
    no 500, no throttle, no refused event. It logs each as send and worker do."""
    config = write_config(
        tmp_path / "leadrelay.toml", graph_url=sandbox.url, data_dir=tmp_path / "data"
    )
    sandbox.state.script("http_500", "throttle:613")
    proc = ServiceProcess(config).start()
    try:
        assert proc.post([event(1, prefix="logged")]).status_code == 202
        for label in ("2", "613/1487742"):
            entry = proc.wait_for_log(
                lambda e, label=label: e.get("event") == "graph error" and e.get("error") == label,
                timeout=30,
            )
            assert entry["level"] == "warning"
    finally:
        assert proc.stop() == 0
        proc.close()
