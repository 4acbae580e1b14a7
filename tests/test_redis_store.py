"""What only the Redis store does, against a real redis-server: the dead-letter stream, counts
kept in time buckets, connection and eviction checks, and the fleet: several consumers, one
killed mid-batch, poison events, a shared pause, per-lead order, one cluster slot. The Store
protocol both backends keep is tested in test_store_contract.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from leadrelay.delivery.redis import RedisStore
from leadrelay.delivery.redis import store as redis_store
from leadrelay.delivery.store import StoreError
from leadrelay.outcome import Delivery, State
from redis_server import running_redis
from test_store_contract import LEAD_17, NOW, deliver, incoming, payload, queued, states

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    r.flushall()
    yield r
    r.close()


@pytest.fixture
def open_store(client: redis.Redis, redis_url: str) -> Iterator[Any]:
    opened: list[RedisStore] = []

    def make(consumer: str = "a", **options: Any) -> RedisStore:
        opened.append(RedisStore(redis_url, consumer=consumer, **options))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Any) -> RedisStore:
    s: RedisStore = open_store()
    return s


def test_two_consumers_never_get_the_same_event(open_store: Any) -> None:
    a, b = open_store("a"), open_store("b")
    ids = queued(a, *"abcde")
    first, second = a.claim(3, NOW), b.claim(3, NOW)
    assert [c.id for c in first] == ids[:3]
    assert [c.id for c in second] == ids[3:]
    assert a.claim(3, NOW) == b.claim(3, NOW) == []
    assert states(a, ids) == [State.IN_FLIGHT] * 5
    assert b.counts().in_flight == 5


def test_a_dead_event_is_dead_lettered_and_finished_entries_leave_the_stream(
    store: RedisStore, client: redis.Redis
) -> None:
    ids = queued(store, *"abcde")
    c = {x.id: x.payload for x in store.claim(10, NOW)}
    store.complete(
        [
            (ids[0], Delivery(c[ids[0]], State.DELIVERED)),
            (ids[1], Delivery(c[ids[1]], State.REJECTED, attempts=3, reason="invalid_parameter")),
            (ids[2], Delivery(c[ids[2]], State.EXPIRED, attempts=0, reason="expired")),
            (ids[3], Delivery(c[ids[3]], State.QUEUED, attempts=1, reason="paused_auth")),
            (
                ids[4],
                Delivery(
                    c[ids[4]], State.DEAD, attempts=6, reason="retries_exhausted", message="gave up"
                ),
            ),
        ],
        NOW + 1,
    )
    assert [x.id for x in store.claim(10, NOW + 1)] == [ids[3]]  # back in the stream
    [(_, letter)] = client.xrange(store.dead_letter_key)
    assert letter == {
        b"i": str(ids[4]).encode(),
        b"k": b"e",
        b"r": b"retries_exhausted",
        b"m": b"gave up",
        b"at": repr(NOW + 1).encode(),
    }
    assert client.xlen(store.stream_key) == 1  # acknowledged entries are deleted: only ids[3]


def test_counts_since_further_back_than_two_hours_are_to_the_minute(store: RedisStore) -> None:
    minute = NOW - NOW % 60 - 3 * 3600
    queued(store, "old", at=minute + 5)
    queued(store, "new", at=NOW)
    assert store.counts(since=minute + 10).by_state["queued"] == 2  # second buckets are gone
    assert store.counts(since=minute + 60).by_state["queued"] == 1
    assert store.counts(since=NOW - 30).by_state["queued"] == 1


def test_opening_without_create_needs_an_existing_store(open_store: Any) -> None:
    with pytest.raises(StoreError, match=r"no event store under \{lr\}:"):
        open_store(create=False)
    open_store().close()
    assert open_store(create=False).counts().queued == 0


def test_a_store_whose_redis_lost_its_data_is_found_again_once_events_come(
    open_store: Any, client: redis.Redis
) -> None:
    """After a FLUSHALL (or a restart without persistence), serve kept storing and delivering,
    while status and dead-letters said no store existed: only opening wrote its meta key."""
    store = open_store()
    queued(store, "before-flush")
    client.flushall()
    queued(store, "after-flush")
    found = open_store(create=False)  # what status and dead-letters open
    assert found.counts().queued == 1
    record = found.get("after-flush")
    assert record is not None and record.state is State.QUEUED


def test_refuses_a_redis_that_may_evict_events(open_store: Any, client: redis.Redis) -> None:
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(StoreError, match=r"allkeys-lru.*noeviction"):
            open_store()
    finally:
        client.config_set("maxmemory-policy", "noeviction")


def test_refuses_to_store_events_in_a_redis_without_an_append_only_file(
    open_store: Any, client: redis.Redis
) -> None:
    """Redis's own default (and the Docker image's) is no AOF: what it holds is gone when it
    stops. Events are stored there only when the config says that risk is taken; reading what
    is there (status, dead-letters) is allowed either way."""
    open_store().close()  # a store exists (the test server keeps an AOF)
    client.config_set("appendonly", "no")
    try:
        with pytest.raises(StoreError, match=r"appendonly no.*require_aof = false") as caught:
            open_store()
        assert "127.0.0.1" in str(caught.value)
        assert open_store(create=False).counts().queued == 0
        store = open_store(require_aof=False)
        queued(store, "accepted-knowingly")
        assert store.counts().queued == 1
    finally:
        client.config_set("appendonly", "yes")


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret-pass@127.0.0.1:1/0",
        "redis://user:s3cret-pass@127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?password=s3cret-pass",  # redis-py takes it there too
        "redis://127.0.0.1:1/0?db=0&password=s3cret-pass",
        "redis://s3cret-pass@127.0.0.1:1/0",  # the password alone, where the user goes
        # Passwords from openssl rand -base64 hold / and +: no URL parser reads them as meant,
        # and redis-py's error quotes the piece before the / (the # and the ? alike).
        "redis://:s3cret-pass/k9+Zq=@127.0.0.1:1/0",
        "redis://:s3cret-pass#k9@127.0.0.1:1/0",
        "redis://:s3c?ret-pass@127.0.0.1:1/0",
    ],
)
def test_an_unreachable_redis_is_a_store_error_without_the_password(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        RedisStore(url, socket_timeout_s=1.0)
    said = str(caught.value)
    assert "127.0.0.1" in said and "s3c" not in said and "ret-pass" not in said, said


def test_a_cluster_that_cannot_be_reached_is_a_store_error() -> None:
    """The cluster client connects as it is made: its failure is a StoreError too (send,
    worker and status say it in one line), not a traceback."""
    with pytest.raises(StoreError, match="cannot be connected"):
        RedisStore("redis://:s3cret-pass@127.0.0.1:1/0", cluster=True, socket_timeout_s=1.0)


def test_a_url_that_is_not_redis_is_refused() -> None:
    with pytest.raises(StoreError, match="invalid Redis URL"):
        RedisStore("http://:s3cret-pass@localhost")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"claim_idle_s": 0}, "claim_idle_s"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"prefix": "{x}"}, "prefix"),
    ],
)
def test_bad_options_are_named(redis_url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisStore(redis_url, **options)


# --- the fleet: several consumers on one queue ------------------------------------------------


def test_events_held_by_a_consumer_that_stopped_are_taken_over(open_store: Any) -> None:
    a, b = open_store("a", claim_idle_s=0.5), open_store("b", claim_idle_s=0.5)
    ids = queued(a, "x", "y", "z")
    assert [c.id for c in a.claim(10, NOW)] == ids  # a dies here: never completes
    assert b.claim(10, NOW) == []  # not idle long enough: a may still be working
    time.sleep(0.6)
    taken = b.claim(10, NOW)
    assert [(c.id, c.attempts) for c in taken] == [(i, 0) for i in ids]
    deliver(b, taken)
    a.complete([(ids[0], Delivery(taken[0].payload, State.DEAD, reason="late"))], NOW + 1)
    assert states(b, ids) == [State.DELIVERED] * 3  # a late answer does not undo the outcome
    assert b.counts().by_state["delivered"] == 3


def test_release_in_flight_takes_back_only_what_this_consumer_held(open_store: Any) -> None:
    a, b = open_store("a"), open_store("b")
    mine, theirs = queued(a, "a1", "a2"), queued(b, "b1")
    a.claim(2, NOW)
    b.claim(2, NOW)
    restarted = open_store("a")  # the same consumer name after a restart
    assert restarted.release_in_flight() == 2
    assert states(a, mine + theirs) == [State.QUEUED, State.QUEUED, State.IN_FLIGHT]
    assert [c.id for c in restarted.claim(10, NOW)] == mine
    assert open_store("c").release_in_flight() == 0


def test_consumers_of_processes_gone_for_long_are_forgotten(
    open_store: Any, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    done, holding, restarted = open_store("done"), open_store("holding"), open_store("new")
    queued(done, "a", "b")
    deliver(done, done.claim(1, NOW))
    holding.claim(1, NOW)
    monkeypatch.setattr(redis_store, "_GONE_AFTER_MS", -1)  # as if a day had passed
    restarted.release_in_flight()
    names = {c["name"] for c in client.xinfo_consumers(restarted.stream_key, "delivery")}
    assert names == {b"holding"}  # a consumer that still holds events is kept


def test_renew_keeps_a_long_delivery_from_being_taken_over(open_store: Any) -> None:
    a, b = open_store("a", claim_idle_s=1.0), open_store("b", claim_idle_s=1.0)
    ids = queued(a, "slow")
    a.claim(1, NOW)
    time.sleep(0.6)
    assert a.renew(ids) == 1
    time.sleep(0.6)  # 1.2 s since the claim, 0.6 s since the renewal
    assert b.claim(10, NOW) == []
    assert b.renew(ids) == 0  # b does not hold it


def test_a_poison_event_goes_to_the_dead_letters_after_max_deliveries(
    open_store: Any, client: redis.Redis
) -> None:
    a = open_store("a", claim_idle_s=0.1, max_deliveries=2)
    b = open_store("b", claim_idle_s=0.1, max_deliveries=2)
    [id_] = queued(a, "poison")
    [ok] = queued(a, "fine")
    assert len(a.claim(10, NOW)) == 2  # delivery 1: a dies on the batch
    time.sleep(0.15)
    assert [c.id for c in b.claim(10, NOW)] == [id_, ok]  # delivery 2: b dies too
    time.sleep(0.15)
    assert a.claim(10, NOW) == []  # a third time would be one too many
    for i in (id_, ok):
        record = a.get(i)
        assert record is not None and (record.state, record.reason) == (State.DEAD, "poison")
        assert "handed out 2 times" in (record.message or "")
    letters = [e for _, e in client.xrange(a.dead_letter_key)]
    assert [(e[b"i"], e[b"r"]) for e in letters] == [
        (str(id_).encode(), b"poison"),
        (str(ok).encode(), b"poison"),
    ]
    assert [e.id for e in a.events(states=[State.DEAD])] == [id_, ok]
    assert a.requeue([ok], now=NOW) == 1  # a dead letter can be replayed once fixed
    assert [c.id for c in a.claim(10, NOW)] == [ok]


def test_a_pause_is_seen_by_the_whole_fleet(open_store: Any) -> None:
    a, b = open_store("a"), open_store("b")
    assert b.paused_until(now=NOW) is None
    assert a.pause_until(NOW + 30, "throttled", now=NOW) == NOW + 30
    assert b.paused_until(now=NOW) == (NOW + 30, "throttled")
    assert b.pause_until(NOW + 10, "throttled again", now=NOW) == NOW + 30  # never shortened
    assert a.paused_until(now=NOW + 29) == (NOW + 30, "throttled")
    assert a.paused_until(now=NOW + 30) is None


def test_events_of_one_lead_go_out_in_order_one_holder_at_a_time(open_store: Any) -> None:
    a, b = open_store("a"), open_store("b")
    lead = LEAD_17
    first = queued(a, "l1", "l2", "l3", lead_id=lead)
    [other] = queued(a, "other")
    assert [c.id for c in a.claim(10, NOW)] == [*first, other]  # accepted together: one batch
    [later] = queued(b, "l4", lead_id=lead)
    assert b.claim(10, NOW) == []  # waits while a holds earlier events of its lead
    a.retry_later(first, NOW + 60, "throttled", None, now=NOW)
    assert b.claim(10, NOW + 30) == []  # still behind the retried ones
    retried = b.claim(10, NOW + 60)
    assert [c.id for c in retried] == first
    deliver(b, retried, NOW + 60)
    assert [c.id for c in a.claim(10, NOW + 60)] == [later]


def test_per_lead_order_holds_with_two_consumers_and_retries(open_store: Any) -> None:
    stores = [open_store("a"), open_store("b")]
    intake = open_store("intake")
    leads = [LEAD_17 + n for n in range(20)]
    total = 300
    lock = threading.Lock()
    holder: dict[int, str] = {}
    sent: dict[int, list[int]] = defaultdict(list)
    accepted: dict[int, list[int]] = defaultdict(list)
    errors: list[str] = []
    rng = random.Random(7)
    plan = [rng.choice(leads) for _ in range(total)]

    def add_all() -> None:
        for start in range(0, total, 15):
            chunk = plan[start : start + 15]
            ids = intake.add(
                [incoming(payload(f"e{start + n}", lead_id=lead)) for n, lead in enumerate(chunk)]
            )
            for id_, lead in zip(ids, chunk, strict=True):
                accepted[lead].append(id_)

    def consume(store: RedisStore, seed: int) -> None:
        local = random.Random(seed)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if sum(map(len, sent.values())) >= total:
                    return
            batch = store.claim(local.randint(1, 8), NOW)
            with lock:
                for c in batch:
                    if holder.get(c.payload.lead_id, store.consumer) != store.consumer:
                        errors.append(f"lead {c.payload.lead_id} held by two consumers")
                    holder[c.payload.lead_id] = store.consumer
            if not batch:
                continue
            retry = local.random() < 0.25
            with lock:
                for c in batch:
                    holder.pop(c.payload.lead_id, None)
                    if not retry:
                        sent[c.payload.lead_id].append(c.id)
            if retry:
                store.retry_later([c.id for c in batch], NOW, "transient", None, now=NOW)
            else:
                deliver(store, batch)

    threads = [threading.Thread(target=add_all)]
    threads += [threading.Thread(target=consume, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(map(len, sent.values())) == total
    assert dict(sent) == dict(accepted)  # per lead: delivered in the order accepted, once each


_VICTIM = """
import sys
import redis
from leadrelay.delivery.redis import RedisStore
from leadrelay.delivery.store import StoreError
from leadrelay.outcome import Delivery, State

store = RedisStore(sys.argv[1], consumer="victim", claim_idle_s=2.0)
meta = redis.Redis.from_url(sys.argv[1])
for round_ in range(1000):
    batch = store.claim(20, 1767800000.0)
    print("C", *(c.id for c in batch), flush=True)
    if round_ == 1:
        sys.stdin.readline()  # killed while delivering this batch
    for c in batch:
        meta.rpush("meta-received", f"{c.payload.lead_id}:{c.id}")
    store.complete([(c.id, Delivery(c.payload, State.DELIVERED)) for c in batch], 1767800001.0)
"""


def test_a_worker_killed_mid_backlog_loses_nothing_and_delivers_nothing_twice(
    open_store: Any, client: redis.Redis, redis_url: str
) -> None:
    intake, survivor = open_store("intake"), open_store("survivor", claim_idle_s=2.0)
    leads = [LEAD_17 + n for n in range(60)]
    rng = random.Random(3)
    total = 0

    def add(n: int) -> None:
        nonlocal total
        intake.add(
            [incoming(payload(f"e{total + i}", lead_id=rng.choice(leads))) for i in range(n)]
        )
        total += n

    add(300)
    victim = subprocess.Popen(
        [sys.executable, "-c", _VICTIM, redis_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert victim.stdout is not None
    held: list[int] = []
    try:
        for round_ in range(2):
            line = victim.stdout.readline()
            assert line.startswith("C"), (
                f"victim failed: {victim.stderr.read() if victim.stderr else ''}"
            )
            if round_ == 1:
                held = [int(x) for x in line.split()[1:]]
            else:  # the survivor works alongside from the start, intake goes on
                for _ in range(3):
                    batch = survivor.claim(10, NOW)
                    for c in batch:
                        client.rpush("meta-received", f"{c.payload.lead_id}:{c.id}")
                    deliver(survivor, batch)
                    add(20)
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert held, "the victim should have been holding a batch when it was killed"

    add(100)
    deadline = time.monotonic() + 20
    while survivor.counts().by_state["delivered"] < total and time.monotonic() < deadline:
        batch = survivor.claim(50, NOW)
        for c in batch:
            client.rpush("meta-received", f"{c.payload.lead_id}:{c.id}")
        deliver(survivor, batch)
        if not batch:
            time.sleep(0.05)  # waiting for the victim's entries to be idle long enough

    received = [x.decode().split(":") for x in client.lrange("meta-received", 0, -1)]
    ids = [int(i) for _, i in received]
    assert Counter(ids).most_common(1)[0][1] == 1  # nothing delivered twice
    assert sorted(ids) == list(range(1, total + 1))  # nothing lost
    assert set(held) <= set(ids)
    per_lead: dict[str, list[int]] = defaultdict(list)
    for lead, i in received:
        per_lead[lead].append(int(i))
    assert all(order == sorted(order) for order in per_lead.values())
    counts = survivor.counts()
    assert (counts.by_state["delivered"], counts.queued, counts.in_flight) == (total, 0, 0)


def test_a_deployment_lives_in_one_cluster_slot(tmp_path: Path) -> None:
    with running_redis(tmp_path, cluster=True) as url:
        store = RedisStore(url, cluster=True, prefix="lr:123456789012345", consumer="a")
        try:
            ids = queued(store, "a", "b")
            claimed = store.claim(10, NOW)
            store.complete([(claimed[0].id, Delivery(claimed[0].payload, State.DEAD))], NOW)
            store.retry_later([claimed[1].id], NOW, "throttled", None, now=NOW)
            assert store.requeue(ids[:1], now=NOW) == 1
            assert [c.id for c in store.claim(10, NOW)] == ids
            assert store.counts(since=NOW).in_flight == 2
            record = store.get("a")
            assert record is not None and record.payload == payload("a").data
            assert [e.key for e in store.events(states=[State.IN_FLIGHT])] == ["a", "b"]
            store.pause_until(NOW + 1, "throttled", now=NOW)
            node = redis.Redis.from_url(url)
            slots = {node.cluster("keyslot", k) for k in node.scan_iter(count=1000)}
            node.close()
            assert len(slots) == 1
        finally:
            store.close()


def test_a_worker_restarted_under_the_same_name_still_sets_poison_aside(open_store: Any) -> None:
    """A container restarts under the same consumer name (hostname, pid 1) and takes back what
    it held: the event's hand-outs still count, where the taking back reset them and a
    crash-looping worker repeated the same batch for ever."""
    first = open_store("box-1", max_deliveries=2)
    [id_] = queued(first, "poison")
    assert [c.id for c in first.claim(10, NOW)] == [id_]  # hand-out 1: the worker dies
    second = open_store("box-1", max_deliveries=2)
    assert second.release_in_flight() == 1
    assert [c.id for c in second.claim(10, NOW)] == [id_]  # hand-out 2: dies again
    third = open_store("box-1", max_deliveries=2)
    assert third.release_in_flight() == 1
    assert third.claim(10, NOW) == []  # a third would be one too many
    record = third.get(id_)
    assert record is not None and (record.state, record.reason) == (State.DEAD, "poison")
    assert "handed out 2 times" in (record.message or "")


def test_a_result_recorded_starts_the_count_again(open_store: Any) -> None:
    """Hand-outs count only while no result is recorded: a retry recorded in between (Meta
    was down) is a result."""
    first = open_store("box-2", max_deliveries=2)
    [id_] = queued(first, "flaky")
    assert [c.id for c in first.claim(10, NOW)] == [id_]
    second = open_store("box-2", max_deliveries=2)
    assert second.release_in_flight() == 1
    assert [c.id for c in second.claim(10, NOW)] == [id_]
    second.retry_later([id_], NOW, "http_500", "down", now=NOW)
    for _ in range(2):  # two more hand-outs, each ended by a restart
        assert [c.id for c in second.claim(10, NOW + 5)] == [id_]
        second = open_store("box-2", max_deliveries=2)
        assert second.release_in_flight() == 1
    assert second.claim(10, NOW + 5) == []  # the third since the result: set aside
