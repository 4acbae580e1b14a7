"""An event store that stops answering in the middle of a send (Redis shut down, a disk gone).

``serve`` and ``worker`` wait for it. A send is a job that must end: it tries again for
``delivery.store_patience_s``, then stops with a "Store error" that says how long it waited and
what to run next, its summary counting what it cannot know as "not accounted for" (not as
"stored by an earlier run"), and no traceback. A store that answers again within the patience
costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from leadrelay.bench.events import generate_events
from leadrelay.config import load_config
from leadrelay.delivery.intake import ChunkedIntake
from leadrelay.delivery.redis import RedisStore
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Added, Incoming, StoreError
from leadrelay.delivery.store_calls import StoreCalls
from leadrelay.delivery.write_behind import WriteBehindStore
from leadrelay.mapping.engine import Mapper
from leadrelay.sandbox import SandboxOptions, SandboxServer
from redis_server import running_redis
from service_process import wait_until, write_config

EVENTS = 3000
CLI = [sys.executable, "-m", "leadrelay"]


def _send_config(root: Path, graph_url: str, redis_url: str, patience_s: float) -> Path:
    path = write_config(
        root / "leadrelay.toml",
        graph_url=graph_url,
        data_dir=root / "data",
        delivery={"batch_size": 250, "concurrency": 2, "store_patience_s": patience_s},
    )
    with path.open("a", encoding="utf-8") as f:
        f.write(f'\n[queue]\nurl = "{redis_url}"\nkey_prefix = "lr:outage"\n')
    return path


@contextlib.contextmanager
def _outage_setup(
    tmp_path: Path, events: Path, *, patience_s: float
) -> Iterator[tuple[str, SandboxServer, Path, int]]:
    """A Redis of the test's own (it is shut down), the sandbox answering in 1.5 s, a config
    with ``patience_s`` and ``EVENTS`` events in ``events``: the URL, the sandbox, the config
    and the number of events."""
    (tmp_path / "redis").mkdir()
    with (
        running_redis(tmp_path / "redis") as redis_url,
        SandboxServer(SandboxOptions(slow_ms=1500)) as sandbox,
    ):
        config = _send_config(tmp_path, sandbox.url, redis_url, patience_s=patience_s)
        yield redis_url, sandbox, config, _events(events, EVENTS)


def _shut_down(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with contextlib.suppress(redis.ConnectionError):  # closed as the server goes
        client.shutdown(nosave=True)


def _events(path: Path, count: int) -> int:
    """``count`` lead_qualified events (the test config's one mapped name); returns how many."""
    events = []
    for n, event in enumerate(generate_events(count, now=time.time(), seed=7)):
        event.update(event_name="lead_qualified", facebook_lead_id=130000000000000 + n)
        event["context"] = {"event_id": f"outage-{n}", "event_timestamp": int(time.time() * 1000)}
        events.append(event)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return len(events)


@pytest.mark.parametrize("source", ["file", "open pipe", "deliver"])
def test_a_send_whose_redis_goes_away_stops_after_its_patience_and_says_so(
    tmp_path: Path, source: str
) -> None:
    """Redis shut down while batches are with Meta (the sandbox answers in 1.5 s): the send
    waited for it for good, logging a failed store call every few seconds (and, once stopped,
    tracebacks; its summary then counted every event as "stored by an earlier run"). A send
    reading a pipe its producer keeps open waited for the producer after giving up; deliver,
    which reads nothing, printed no summary of what it had delivered."""
    events = tmp_path / "events.ndjson"
    with _outage_setup(tmp_path, events, patience_s=2) as (redis_url, sandbox, config, sent):
        if source == "deliver":  # queued by an intake before: deliver sends them
            store = RedisStore(redis_url, prefix="lr:outage", consumer="intake", claim_idle_s=60)
            mapper = Mapper(load_config(config))
            lines = events.read_bytes().splitlines()
            store.add([Incoming(mapper.map(orjson.loads(x)), x, time.time()) for x in lines])
            store.close()
        command = {"file": ["send", str(events)], "open pipe": ["send", "-"]}.get(
            source, ["deliver"]
        )
        with (tmp_path / "stderr.txt").open("w+", encoding="utf-8") as err:
            proc = subprocess.Popen(
                [*CLI, *command, "--config", str(config)],
                stdin=subprocess.PIPE if source == "open pipe" else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
            )
            try:
                if proc.stdin is not None:  # the producer writes everything, then goes quiet
                    proc.stdin.write(events.read_bytes())
                    proc.stdin.flush()
                wait_until(lambda: sandbox.state.requests >= 2, 30, "the first requests to Meta")
                # What was read is stored: a reader of the pipe has nothing left to store, only
                # the producer to wait for (which a send that gave up on the store must not).
                if source == "open pipe":
                    wait_until(lambda: _settled_count(redis_url) >= 500, 30, "the events stored")
                _shut_down(redis_url)
                proc.wait(timeout=60)
            finally:
                proc.kill()
                if proc.stdin is not None:
                    proc.stdin.close()
            err.seek(0)
            stderr = err.read()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert "stored by an earlier run" not in stderr, stderr
    said = " ".join(stderr.split())  # the console wraps long lines
    error = "Cannot deliver" if source == "deliver" else "Store error"
    assert re.search(error + r": the event store has not answered for 2 s: .*127\.0\.0\.1", said)
    assert "Connection refused; Meta's answers for" in said, said
    assert "Once it answers again, run " in said, said
    # The batches Meta answered while the store was gone: said, with what becomes of them.
    assert re.search(
        r"Meta's answers for \d+ events sent in this run could not be recorded: they are sent "
        r"again once queue.claim_idle_s \(60 s\) has passed",
        said,
    )
    delivered = re.search(r"│ delivered +│ immediately +│ +(\d+) │", stderr)
    assert delivered, stderr
    if source == "deliver":
        assert int(delivered[1]) < sent
        return
    read = re.search(r"│ read +│ +│ +(\d+) │", stderr)
    unknown = re.search(
        r"│ not accounted for +│ not known: the event store stopped answering.*│ +(\d+) │", stderr
    )
    assert read and unknown, stderr
    assert 0 < int(read[1]) <= sent
    assert int(unknown[1]) > 0
    assert int(unknown[1]) + int(delivered[1]) == int(read[1])  # every event read, once


def _settled_count(redis_url: str) -> int:
    """How many events the store holds, once that number held still for a second."""
    store = RedisStore(redis_url, prefix="lr:outage", consumer="test", claim_idle_s=60)
    try:
        before = -1
        while (now := sum(store.counts().by_state.values())) != before:
            before = now
            time.sleep(1.0)
        return now
    finally:
        store.close()


class _Flaky:
    """A real SQLite store whose ``add_new`` fails ``failures`` times first (a disk that is
    briefly full, a Redis failover): what the intake tries again."""

    def __init__(self, store: SQLiteStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.calls = 0

    def add_new(self, items: list[Incoming]) -> Added:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise StoreError("the event store is not answering (test)")
        return self.store.add_new(items)


def _incoming(tmp_path: Path, count: int) -> list[Incoming]:
    path = tmp_path / "c.toml"
    path.write_text(
        'pixel_id = "123456789012345"\naccess_token = "t"\nlead_id = "{{facebook_lead_id}}"\n'
        'lead_event_source = "CRM"\n[mapping]\nlead_qualified = "Marketing Qualified Lead"\n',
        encoding="utf-8",
    )
    mapper = Mapper(load_config(path))
    now = time.time()
    out = []
    for n in range(count):
        event: dict[str, Any] = {
            "event_name": "lead_qualified",
            "facebook_lead_id": 130000000000000 + n,
            "context": {"event_id": f"e-{n}", "event_timestamp": int(now * 1000)},
        }
        out.append(Incoming(mapper.map(event), None, now))
    return out


def test_the_sends_intake_stores_a_chunk_the_store_refused_once_it_answers(
    tmp_path: Path,
) -> None:
    """A chunk the store refused was lost from the send at once (the reader failed with the
    first error); within the patience it is stored, in order, and nothing is stored twice."""
    store = SQLiteStore(tmp_path / "events.db")
    try:
        flaky = _Flaky(store, failures=2)
        intake = ChunkedIntake(flaky, size=10, patience_s=30)  # type: ignore[arg-type]
        items = _incoming(tmp_path, 25)
        intake.put_many(items[:20])
        intake.put_many(items[20:])
        intake.flush()
        counts = store.counts(time.time())
        keys = [r.key for r in store.outcomes(list(range(1, 26)))]
    finally:
        store.close()
    assert flaky.calls == 5  # two refusals of the first chunk, then its three chunks
    assert counts.queued == 25
    assert keys == [f"e-{n}" for n in range(25)]


def test_the_sends_intake_gives_up_on_a_store_that_stays_away(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "events.db")
    try:
        flaky = _Flaky(store, failures=1000)
        intake = ChunkedIntake(flaky, size=10, patience_s=0.6)  # type: ignore[arg-type]
        items = _incoming(tmp_path, 20)
        with pytest.raises(StoreError, match=r"has not answered for 0\.6 s: the event store is"):
            intake.put_many(items[:10])
        tried = flaky.calls
        # Given up on: the next chunk is not tried again for another 0.6 s.
        with pytest.raises(StoreError, match=r"has not answered for 0\.6 s"):
            intake.put_many(items[10:])
        assert flaky.calls == tried
        assert store.counts(time.time()).queued == 0
    finally:
        store.close()
    assert 2 <= tried <= 4  # tried again with backoff (0.5 s), not in a busy loop


def test_store_calls_wait_for_a_store_within_patience_and_give_up_after_it() -> None:
    """The worker's store calls: a store back within the patience answers as if nothing
    happened; one away for longer is given up on, and every later failure raises at once."""
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    calls = StoreCalls(lambda: False, sleep, patience_s=10, clock=lambda: now[0])
    failures = [3]

    def call() -> str:
        if failures[0]:
            failures[0] -= 1
            raise StoreError("Redis: connection refused")
        return "stored"

    assert asyncio.run(calls(call)) == "stored"
    assert calls.gave_up is None and calls.error is None
    assert slept == [1.0, 2.0, 4.0]

    def down() -> str:
        raise StoreError("Redis: connection refused")

    slept.clear()
    with pytest.raises(StoreError, match=r"has not answered for 10 s: Redis: connection refused"):
        asyncio.run(calls(down))
    assert sum(slept) == pytest.approx(10.0)  # the last try right as the patience runs out
    assert calls.gave_up is not None
    slept.clear()
    with pytest.raises(StoreError, match="has not answered for 10 s"):
        asyncio.run(calls(down, retry=True))
    assert slept == []


class _FullDisk(SQLiteStore):
    """A real SQLite store whose ``add_new`` fails ``failures`` times (a disk briefly full)."""

    failures = 0

    def add_new(self, items: Sequence[Incoming], *, durable: bool = True) -> Added:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return super().add_new(items, durable=durable)


def test_a_chunk_write_behind_could_not_store_in_part_is_added_again_whole(
    tmp_path: Path,
) -> None:
    """A chunk whose first events fit in memory and the rest go to the store: when the store
    failed, the first ones stayed in memory, and the chunk added again (what the send's intake
    does within its patience) found them there, counted as repeats of themselves ("the event_id
    of an event before it in this run": 258 of 60,000 on a disk that filled up)."""
    disk = _FullDisk(tmp_path / "events.db")
    store = WriteBehindStore(disk, limit=6)
    try:
        items = _incoming(tmp_path, 10)  # 6 fit in memory, 4 go to the store
        disk.failures = 1
        with pytest.raises(sqlite3.OperationalError):
            store.add_new(items)
        assert list(store.waiting()) == []  # memory as it was
        added = store.add_new(items)
        assert added.stored == [True] * 10
        assert len(set(added.ids)) == 10
        assert [p.key for _, p in store.waiting()] == [f"e-{n}" for n in range(6)]
    finally:
        store.close()
    reopened = SQLiteStore(tmp_path / "events.db")
    try:
        assert reopened.counts(time.time()).queued == 10  # the 4, and the 6 stored as it closed
    finally:
        reopened.close()


def test_a_ctrl_c_while_the_store_fails_does_not_say_every_event_is_stored(
    tmp_path: Path,
) -> None:
    """Ctrl-C within the patience, Redis gone: the send said "every event read is stored,
    delivered or queued" and counted what it could not ask the store about as queued."""
    events = tmp_path / "events.ndjson"
    with _outage_setup(tmp_path, events, patience_s=60) as (redis_url, sandbox, config, _):
        proc = subprocess.Popen(
            [*CLI, "send", str(events), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        )
        try:
            wait_until(lambda: sandbox.state.requests >= 2, 30, "the first requests to Meta")
            _shut_down(redis_url)
            time.sleep(2.5)  # the batches Meta answered find the store gone
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    said = " ".join(stderr.split())
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "every event read is stored" not in said, said
    assert "the event store did not answer at the end: what it took is stored" in said, said
    assert re.search(r"│ not accounted for +│ not known: the event store stopped answering", stderr)
