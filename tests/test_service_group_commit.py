"""Group commit of intake: requests that queue up while the intake thread is busy share one store
transaction, and each still gets exactly its own answer, or its own error, as if it had been
stored alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from leadrelay.config import load_config
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Added, Incoming, StoreError
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Filtered, Payload, State
from leadrelay.service.app import create_app
from leadrelay.service.group_commit import GroupCommit, Prepare
from leadrelay.service.metrics import Metrics
from service_process import INTAKE_TOKEN, event, write_config

NOW = 1767800000.0


def item(key: str) -> Incoming:
    if key == "-":  # no key (nothing to tell resends by): stored each time
        return Incoming(Filtered("", "lead_created", "unmapped", "not mapped"), b"{}", NOW)
    body = {"event_name": "Qualified", "n": key}
    return Incoming(Payload(key, "lead_qualified", "Qualified", 1, int(NOW) - 60, body), b"{}", NOW)


class FakeStore:
    """Numbers items in call order; refuses a batch holding a ``bad`` key."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.stored: list[str] = []

    def add_new(self, items: Sequence[Incoming]) -> Added:
        """Keys starting with ``old`` are found stored (a resend), the others stored."""
        keys = [i.outcome.key for i in items]
        self.calls.append(keys)
        if any(k.startswith("bad") for k in keys):
            raise OSError("disk I/O error")
        first = len(self.stored) + 1
        self.stored += keys
        return Added(list(range(first, first + len(keys))), [not k.startswith("old") for k in keys])


def request(keys: list[str], answer: str, gate: threading.Event | None = None) -> Prepare[str]:
    def prepare() -> tuple[list[Incoming], str]:
        if gate is not None:
            assert gate.wait(10)
        if "boom" in keys:
            raise ValueError("cannot map")
        return [item(k) for k in keys], answer

    return prepare


async def submit_while_busy(
    commit: GroupCommit,
    batches: dict[str, list[str]],
    stored: dict[str, list[bool]] | None = None,
    added: dict[str, Added] | None = None,
) -> dict[str, Any]:
    """The first request holds the thread until the others have queued up (in the order
    given); each request's answer, or the exception it raised (and in ``stored``, which of
    its events the store stored; in ``added``, all the store said of them)."""
    stored = {} if stored is None else stored
    added = {} if added is None else added
    gate = threading.Event()
    names = list(batches)
    tasks = {
        name: asyncio.create_task(
            commit.submit(request(batches[name], f"answer {name}", gate if n == 0 else None))
        )
        for n, name in enumerate(names)
    }
    await asyncio.sleep(0)  # every task runs up to its await: all are queued
    gate.set()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    commit.close()
    stored.update(
        (n, r[1].stored) for n, r in zip(names, results, strict=True) if isinstance(r, tuple)
    )
    added.update((n, r[1]) for n, r in zip(names, results, strict=True) if isinstance(r, tuple))
    return {n: r[0] if isinstance(r, tuple) else r for n, r in zip(names, results, strict=True)}


def test_requests_that_queue_up_share_a_transaction_and_get_their_own_answers() -> None:
    store = FakeStore()
    batches = {"a": ["a1", "a2"], "b": ["b1"], "c": ["c1", "c2", "c3"]}
    results = asyncio.run(submit_while_busy(GroupCommit(store.add_new), batches))
    assert store.calls == [["a1", "a2", "b1", "c1", "c2", "c3"]]
    assert results == {"a": "answer a", "b": "answer b", "c": "answer c"}


def test_each_request_learns_which_of_its_events_the_store_found_stored() -> None:
    store = FakeStore()
    batches = {"a": ["a1", "old1"], "b": ["old2"], "c": ["c1"]}
    stored: dict[str, list[bool]] = {}
    asyncio.run(submit_while_busy(GroupCommit(store.add_new), batches, stored))
    assert store.calls == [["a1", "old1", "old2", "c1"]]  # one transaction
    assert stored == {"a": [True, False], "b": [False], "c": [True]}


def test_each_request_learns_which_of_its_events_were_found_stored_as_they_are() -> None:
    """Of a group's answer from the store, each request gets its own part of ``alike`` (the
    refusals and filtered events found stored as such), at its own places."""

    def add_new(items: Sequence[Incoming]) -> Added:
        keys = [i.outcome.key for i in items]
        alike = frozenset(n for n, k in enumerate(keys) if k.endswith("alike"))
        found = [not k.startswith("old") for k in keys]
        return Added(list(range(1, len(keys) + 1)), found, {}, alike)

    batches = {"a": ["a1", "old-alike"], "b": ["old2"], "c": ["c1", "old-alike", "old-alike"]}
    added: dict[str, Added] = {}
    asyncio.run(submit_while_busy(GroupCommit(add_new), batches, added=added))
    assert {n: a.alike for n, a in added.items()} == {
        "a": frozenset({1}),
        "b": frozenset(),
        "c": frozenset({1, 2}),
    }


def test_a_group_takes_no_more_requests_once_it_holds_max_items() -> None:
    store = FakeStore()
    batches = {"a": ["a1"], "b": ["b1", "b2"], "c": ["c1", "c2"], "d": ["d1"], "e": ["e1"]}
    results = asyncio.run(submit_while_busy(GroupCommit(store.add_new, max_items=3), batches))
    assert store.calls == [["a1", "b1", "b2"], ["c1", "c2", "d1"], ["e1"]]
    assert results == {name: f"answer {name}" for name in batches}


def test_a_failed_group_fails_only_the_request_whose_events_fail() -> None:
    store = FakeStore()
    batches = {"a": ["a1"], "b": ["b1", "bad1"], "c": ["boom"], "d": ["d1"]}
    results = asyncio.run(submit_while_busy(GroupCommit(store.add_new), batches))
    assert results["a"] == "answer a" and results["d"] == "answer d"
    assert isinstance(results["b"], OSError)
    assert isinstance(results["c"], ValueError)  # its prepare failed: nothing of it stored
    assert store.stored == ["a1", "d1"]  # b's good event was not stored either


def test_a_request_without_events_is_answered_without_a_transaction() -> None:
    store = FakeStore()
    results = asyncio.run(submit_while_busy(GroupCommit(store.add_new), {"a": [], "b": []}))
    assert results == {"a": "answer a", "b": "answer b"}
    assert store.calls == []


def test_a_lone_request_gets_the_store_error_and_the_next_one_works() -> None:
    store = FakeStore()
    commit = GroupCommit(store.add_new)

    async def main() -> str:
        with pytest.raises(OSError, match="disk I/O error"):
            await commit.submit(request(["bad1"], "x"))
        return (await commit.submit(request(["a1"], "answer a1")))[0]

    assert asyncio.run(main()) == "answer a1"
    commit.close()
    assert store.calls == [["bad1"], ["a1"]]


class SyncingStore(FakeStore):
    """Commits without fsync (``add(durable=False)``); ``sync`` waits until ``release`` is set
    and fails while ``failures`` is positive."""

    def __init__(self) -> None:
        super().__init__()
        self.syncing = threading.Event()
        self.release = threading.Event()
        self.added = threading.Semaphore(0)
        self.syncs = 0
        self.failures = 0

    def add_new(self, items: Sequence[Incoming], *, durable: bool = True) -> Added:
        assert not durable  # the group commit leaves the fsync to sync
        added = super().add_new(items)
        for _ in items:
            self.added.release()  # one per event stored
        return added

    def sync(self) -> None:
        self.syncing.set()
        assert self.release.wait(10)
        self.syncs += 1
        if self.failures:
            self.failures -= 1
            raise OSError("fsync: Input/output error")

    def group_commit(self) -> GroupCommit:
        return GroupCommit(partial(self.add_new, durable=False), sync=self.sync)


def test_a_request_is_answered_only_once_the_sync_after_its_commit_returned() -> None:
    store = SyncingStore()
    commit = store.group_commit()

    async def main() -> str:
        task = asyncio.create_task(commit.submit(request(["a1"], "answer a")))
        assert await asyncio.to_thread(store.syncing.wait, 10)
        for _ in range(10):  # room for an answer sent too early to arrive
            await asyncio.sleep(0)
        assert not task.done()
        assert store.stored == ["a1"]  # committed, waiting for the disk
        store.release.set()
        return (await task)[0]

    assert asyncio.run(main()) == "answer a"
    commit.close()
    assert store.syncs == 1


def test_a_failed_sync_fails_exactly_the_requests_whose_events_it_was_to_make_durable() -> None:
    store = SyncingStore()
    store.failures = 1
    store.release.set()
    commit = store.group_commit()
    batches = {"a": ["a1"], "b": ["b1", "b2"], "c": ["boom"], "d": []}

    async def main() -> tuple[dict[str, Any], str]:
        first = await submit_while_busy(commit, batches)  # one group, one failed sync
        after = store.group_commit()
        try:
            return first, (await after.submit(request(["a1", "e1"], "answer e")))[0]
        finally:
            after.close()

    results, resent = asyncio.run(main())
    assert [type(results[k]) for k in "abc"] == [OSError, OSError, ValueError]
    assert results["d"] == "answer d"  # nothing to make durable
    assert resent == "answer e"
    assert store.syncs == 2


def test_groups_committed_while_the_disk_syncs_share_the_next_sync() -> None:
    store = SyncingStore()
    commit = store.group_commit()

    async def main() -> list[str]:
        first = asyncio.create_task(commit.submit(request(["a1"], "answer a")))
        assert await asyncio.to_thread(store.syncing.wait, 10)
        later = [
            asyncio.create_task(commit.submit(request([f"{name}1"], f"answer {name}")))
            for name in "bc"
        ]
        for _ in range(3):  # a1, then b1 and c1 committed (together or not) behind the sync
            assert await asyncio.to_thread(store.added.acquire, timeout=10)
        store.release.set()
        return [answer for answer, _ in await asyncio.gather(first, *later)]

    assert asyncio.run(main()) == ["answer a", "answer b", "answer c"]
    commit.close()
    assert store.stored == ["a1", "b1", "c1"]
    assert store.syncs == 2


def test_grouped_requests_store_what_requests_one_by_one_would(tmp_path: Path) -> None:
    """Keys resent by several requests of one group are stored once and all get the same id."""
    batches = [["k1", "k2", "-"], ["k2", "k3"], ["k1", "k4", "k1"], ["-", "k5"]] * 5
    by_one: list[Any] = []
    grouped: list[Any] = []
    for path, results, max_items in (
        (tmp_path / "a.db", by_one, 1),
        (tmp_path / "b.db", grouped, 1000),
    ):
        with SQLiteStore(path) as store:
            ids: list[list[int]] = []

            def add(items: Sequence[Incoming], store: SQLiteStore = store, ids: Any = ids) -> Added:
                ids.append(store.add_new(items))
                return ids[-1]

            named = {str(n): keys for n, keys in enumerate(batches)}
            asyncio.run(submit_while_busy(GroupCommit(add, max_items=max_items), named))
            counts = store.counts().by_state
            records = {k: store.get(k) for k in ("k1", "k2", "k3", "k4", "k5")}
            results.append((counts[State.QUEUED.value], counts[State.FILTERED.value], len(ids)))
            results.append({k: (r.id, r.state) for k, r in records.items() if r is not None})
    assert by_one[0] == (5, 10, len(batches))  # one transaction per request
    assert grouped[0] == (5, 10, 1)  # one for all
    assert grouped[1] == by_one[1]


class FailingStore(SQLiteStore):
    """A real store that refuses, like a full disk would, any batch holding a ``bad-`` event."""

    def add_new(self, items: Sequence[Incoming], *, durable: bool = True) -> Added:
        if any(i.outcome.key.startswith("bad-") for i in items):
            raise OSError("database or disk is full")
        return super().add_new(items, durable=durable)


def test_concurrent_requests_over_http_each_get_their_own_answer(tmp_path: Path) -> None:
    """Through the app: the request whose events the store refuses gets 503 with Retry-After,
    the requests grouped with it are stored and answered 202 with their own ids."""
    config = write_config(tmp_path / "c.toml", graph_url="http://127.0.0.1:9", data_dir=tmp_path)
    settings = load_config(config)
    with FailingStore(tmp_path / "leadrelay.db") as store:
        app = create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=Mapper(settings)
        )
        prefixes = ["one", "two", "bad", "four"]

        async def post_all() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {INTAKE_TOKEN}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                posts = [
                    http.post(
                        "/v1/events",
                        content=orjson.dumps([event(n, prefix=p) for n in range(3)]),
                        headers=headers,
                    )
                    for p in prefixes
                ]
                return list(await asyncio.gather(*posts))

        try:
            answers = dict(zip(prefixes, asyncio.run(post_all()), strict=True))
        finally:
            app.state.intake.close()
        bad = answers.pop("bad")
        assert bad.status_code == 503 and bad.headers["retry-after"] == "5"
        assert bad.json()["error"] == "store_unavailable"
        for prefix, answer in answers.items():
            assert answer.status_code == 202
            assert answer.json()["ids"] == [f"{prefix}-{n}" for n in range(3)]
        assert store.counts().by_state[State.QUEUED.value] == 9
        assert store.get("bad-0") is None


class FsyncFailingStore(SQLiteStore):
    """A real store whose next ``failures`` syncs fail, like a disk reporting an I/O error."""

    failures = 0

    def sync(self) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError("cannot sync the write-ahead log (Input/output error)")
        super().sync()


def test_a_request_whose_events_are_not_synced_gets_503_and_its_resend_the_same_ids(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "c.toml", graph_url="http://127.0.0.1:9", data_dir=tmp_path)
    settings = load_config(config)
    with FsyncFailingStore(tmp_path / "leadrelay.db") as store:
        store.failures = 1
        app = create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=Mapper(settings)
        )
        body = orjson.dumps([event(n) for n in range(3)])

        async def post_twice() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {INTAKE_TOKEN}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return [await http.post("/v1/events", content=body, headers=headers) for _ in "12"]

        try:
            failed, resent = asyncio.run(post_twice())
        finally:
            app.state.intake.close()
        assert failed.status_code == 503 and failed.json()["error"] == "store_unavailable"
        assert resent.status_code == 202
        assert resent.json()["ids"] == [f"ev-{n}" for n in range(3)]
        assert store.counts().by_state[State.QUEUED.value] == 3  # stored once


def test_ready_again_once_the_store_answers_without_waiting_for_a_write(tmp_path: Path) -> None:
    """After a failed write, /readyz said 503 until the next write worked. An intake-only serve
    behind a load balancer that sends nothing to an instance that is not ready never got that
    write: after a Redis restart it stayed out for good. A failed write now holds readiness for
    10 s; then the store answering reads again is enough, until a write fails again."""
    config = write_config(tmp_path / "c.toml", graph_url="http://127.0.0.1:9", data_dir=tmp_path)
    settings = load_config(config)
    now = [1_800_000_000.0]
    with FsyncFailingStore(tmp_path / "leadrelay.db") as store:
        store.failures = 2
        app = create_app(
            settings,
            store=store,
            worker=None,
            metrics=Metrics(),
            mapper=Mapper(settings),
            clock=lambda: now[0],
        )
        body = orjson.dumps([event(n) for n in range(3)])

        async def probe() -> list[tuple[str, int]]:
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {INTAKE_TOKEN}"}
            seen = []
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                for step in ("post", "ready", "later", "ready", "post", "ready", "post", "ready"):
                    if step == "later":
                        now[0] += 10.0
                        continue
                    if step == "post":
                        answer = await http.post("/v1/events", content=body, headers=headers)
                    else:
                        answer = await http.get("/readyz")
                    seen.append((step, answer.status_code))
            return seen

        try:
            seen = asyncio.run(probe())
        finally:
            app.state.intake.close()
    assert seen == [
        ("post", 503),  # the disk failed
        ("ready", 503),
        ("ready", 200),  # 10 s later, the store answering: ready again, no write needed
        ("post", 503),  # it fails again: not ready again at once
        ("ready", 503),
        ("post", 202),
        ("ready", 200),
    ]


def test_a_post_with_a_trailing_slash_is_taken_as_the_intake(tmp_path: Path) -> None:
    """``POST /v1/events/`` was answered 307 with an empty body: a client that does not follow
    redirects for POST (most) took it for an answer."""
    config = write_config(tmp_path / "c.toml", graph_url="http://127.0.0.1:9", data_dir=tmp_path)
    settings = load_config(config)
    with SQLiteStore(tmp_path / "leadrelay.db") as store:
        app = create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=Mapper(settings)
        )

        async def post() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {INTAKE_TOKEN}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                body = orjson.dumps([event(0, prefix="slash")])
                return await http.post("/v1/events/", content=body, headers=headers)

        try:
            answer = asyncio.run(post())
        finally:
            app.state.intake.close()
        assert answer.status_code == 202, answer.text
        assert answer.json()["ids"] == ["slash-0"]
        assert store.get("slash-0") is not None
