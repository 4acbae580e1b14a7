"""Intake's reading and mapping of a body (``intake_map``) and its plain-ASGI endpoint: a JSON
array read at once answers exactly as ``parse_body``'s general path does, and every answer keeps
its status, message and headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from leadrelay.config import Settings, load_config
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import State
from leadrelay.service.app import create_app
from leadrelay.service.intake_map import MAX_EVENTS, prepare_request
from leadrelay.service.metrics import Metrics
from service_process import INTAKE_TOKEN, event, write_config

NOW = 1767800000.0  # received at
AT = time.time() - 60  # the events' time: the mapper refuses events older than Meta's window
AUTH = {"Authorization": f"Bearer {INTAKE_TOKEN}"}


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    config = write_config(
        tmp_path / "c.toml",
        graph_url="http://127.0.0.1:9",
        data_dir=tmp_path,
        server={"max_body_bytes": 4096},
    )
    return load_config(config)


def ev(n: int, **changes: Any) -> dict[str, Any]:
    return {**event(n, now=AT), **changes}


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


BODIES: list[tuple[str, bytes]] = [
    ("array", dumps([ev(1), ev(2), ev(3)])),
    ("batch envelope", dumps({"batch": [ev(1), ev(2)]})),
    (
        "filtered and rejected",
        dumps([ev(1), ev(2, event_name="nope"), ev(3, facebook_lead_id="1")]),
    ),
    ("a non-object item", dumps([ev(1), 7, None, ev(2)])),
    ("only non-objects", dumps([1, "two"])),
    ("empty array", b"[]"),
    ("empty envelope", b'{"batch": []}'),
    ("envelope of a JSON text", dumps({"batch": orjson.dumps([ev(1)]).decode()})),
    ("envelope of an object", dumps({"batch": ev(1)})),
    ("single event", dumps(ev(1))),
    ("several objects", dumps(ev(1)) + b"\n" + dumps(ev(2))),
    ("broken JSON", b'[{"event_name": "lead_qualified"},'),
    ("empty", b""),
    ("blank", b" \n"),
    ("byte order mark", b"\xef\xbb\xbf" + dumps([ev(1)])),
    ("not JSON", b"hello"),
    ("a number", b"42"),
    ("repeated event id", dumps([ev(1), ev(1)])),
]


@pytest.mark.parametrize(("name", "body"), BODIES, ids=[name for name, _ in BODIES])
@pytest.mark.parametrize(
    "content_type", ["application/json", None, "application/json; charset=utf-8"]
)
def test_a_json_body_is_answered_as_parse_body_reads_it(
    settings: Settings, name: str, body: bytes, content_type: str | None
) -> None:
    """``text/plain`` takes ``parse_body`` (which reads it as JSON too): the reference."""
    mapper = Mapper(settings)
    reference = prepare_request(body, "text/plain", mapper, settings, NOW)
    assert prepare_request(body, content_type, mapper, settings, NOW) == reference


def test_answers_name_each_problem_by_item(settings: Settings) -> None:
    body = dumps([ev(1), 7, ev(3, facebook_lead_id="1"), ev(4, event_name="nope")])
    items, accepted = prepare_request(body, "application/json", Mapper(settings), settings, NOW)
    answer = orjson.loads(accepted.body)
    assert accepted.status == 202 and accepted.queued == 1
    assert [r["item"] for r in answer["rejected"]] == ["request item 2", "request item 3"]
    assert answer["rejected"][0]["message"] == "request item 2 is not a JSON object (got number)"
    assert answer["rejected"][1]["event_id"] == "ev-3"
    assert answer["ids"] == ["ev-1"] and answer["accepted"] == 3 == len(items)
    assert items[0].original == dumps(ev(1)) and items[0].received_at == NOW


class Exploding:
    """A mapper with a bug on events named ``boom``."""

    def __init__(self, inner: Mapper) -> None:
        self.inner = inner

    def map(self, event: dict[str, Any]) -> Any:
        if event.get("event_name") == "boom":
            raise RuntimeError("bug")
        return self.inner.map(event)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_a_mapping_bug_costs_one_event_named_by_item(settings: Settings, content_type: str) -> None:
    body = dumps([ev(1), ev(2, event_name="boom")])
    mapper: Any = Exploding(Mapper(settings))
    items, accepted = prepare_request(body, content_type, mapper, settings, NOW)
    rejected = orjson.loads(accepted.body)["rejected"]
    assert len(items) == 1
    assert rejected == [
        {
            "item": "request item 2",
            "event_id": None,
            "reason": "mapping_failed",
            "field": None,
            "message": "bug",
        }
    ]


def test_originals_are_not_kept_when_dropped(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", graph_url="http://127.0.0.1:9", data_dir=tmp_path)
    config.write_text(config.read_text() + '\n[store]\noriginals = "drop"\n')
    settings = load_config(config)
    items, _ = prepare_request(dumps([ev(1)]), None, Mapper(settings), settings, NOW)
    assert items[0].original is None


def call(
    settings: Settings,
    tmp_path: Path,
    *requests: dict[str, Any],
    before_each: Callable[[Any, int], None] | None = None,
) -> list[httpx.Response]:
    """Each request (``httpx`` arguments) through the app, in turn; ``before_each(app, n)``
    runs before request ``n`` (0-based)."""
    with SQLiteStore(tmp_path / "leadrelay.db") as store:
        app = create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=Mapper(settings)
        )

        async def run() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            answers = []
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                for n, request in enumerate(requests):
                    if before_each is not None:
                        before_each(app, n)
                    answers.append(await http.request(**request))
            return answers

        try:
            return asyncio.run(run())
        finally:
            app.state.intake.close()


async def streamed_body() -> AsyncIterator[bytes]:
    """A body sent in pieces, without Content-Length."""
    for piece in (b"[", b" " * 4096, b"]"):
        yield piece


def test_intake_answers_keep_their_status_message_and_headers(
    settings: Settings, tmp_path: Path
) -> None:
    good = dumps([ev(1)])
    post: dict[str, Any] = {"method": "POST", "url": "/v1/events"}
    answers = call(
        settings,
        tmp_path,
        {**post, "content": good, "headers": AUTH},
        {**post, "content": good},
        {**post, "content": good, "headers": {**AUTH, "Content-Encoding": "gzip"}},
        {**post, "content": b"x" * 5000, "headers": AUTH},
        {**post, "content": streamed_body(), "headers": AUTH},
        {**post, "content": b"nope", "headers": AUTH},
        {"method": "GET", "url": "/v1/events", "headers": AUTH},
    )
    ok, no_token, gzip, too_large, streamed, malformed, get = answers
    for answer in answers[:-1]:
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["content-length"] == str(len(answer.content))
    assert ok.status_code == 202 and ok.json()["ids"] == ["ev-1"]
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"] == 'Bearer realm="leadrelay"'
    assert no_token.json() == {"error": "unauthorized", "message": "missing or wrong bearer token"}
    assert gzip.status_code == 415
    assert gzip.json()["message"] == "Content-Encoding 'gzip' is not supported"
    for answer in (too_large, streamed):
        assert answer.status_code == 413
        assert answer.json()["message"] == (
            "the body is larger than 4096 bytes (server.max_body_bytes)"
        )
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed_body"
    assert get.status_code == 405


def test_a_client_gone_before_its_body_gets_400_and_nothing_is_stored(
    settings: Settings, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"[", "more_body": True}]
    messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/events",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {INTAKE_TOKEN}".encode())],
    }
    with SQLiteStore(tmp_path / "leadrelay.db") as store:
        app = create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=Mapper(settings)
        )
        try:
            asyncio.run(app(scope, receive, send))
        finally:
            app.state.intake.close()
        assert store.counts().by_state[State.QUEUED.value] == 0
    assert sent[0]["status"] == 400
    assert orjson.loads(sent[1]["body"])["error"] == "disconnected"


def test_a_reloaded_mapper_applies_to_the_next_request(settings: Settings, tmp_path: Path) -> None:
    """Intake reads the mapper from the app's state on each request, as a reload sets it."""
    post = {
        "method": "POST",
        "url": "/v1/events",
        "content": dumps([ev(1, event_name="boom")]),
        "headers": AUTH,
    }

    def reload_after_the_first(app: Any, n: int) -> None:
        if n == 1:
            app.state.mapper = Exploding(Mapper(settings))

    before, after = call(settings, tmp_path, post, post, before_each=reload_after_the_first)
    assert before.json()["filtered"] == {"unmapped": 1}
    assert after.status_code == 400 and after.json()["rejected"][0]["reason"] == "mapping_failed"


@pytest.mark.parametrize("body", [b"[]", b'{"batch": []}'])
def test_a_body_with_no_event_is_a_400(settings: Settings, body: bytes) -> None:
    items, accepted = prepare_request(body, "application/json", Mapper(settings), settings, NOW)
    assert (items, accepted.status) == ([], 400)
    assert orjson.loads(accepted.body)["message"] == "the body holds no event"


@pytest.mark.parametrize(
    ("batch", "got"),
    [('"[{\\"event_name\\": \\"lead_qualified\\"}]"', "string: the array itself"),
     ('{"event_name": "lead_qualified"}', "object"), ("null", "null")],
)  # fmt: skip
def test_an_envelope_whose_batch_is_no_array_is_a_400_saying_so(
    settings: Settings, batch: str, got: str
) -> None:
    """'{"batch": "[...]"}' (the array sent as a JSON text) was answered 202 "accepted": 1, the
    envelope stored as an event with no event_name, and the events in it lost."""
    body = b'{"batch": ' + batch.encode() + b"}"
    items, accepted = prepare_request(body, "application/json", Mapper(settings), settings, NOW)
    assert (items, accepted.status) == ([], 400)
    (said,) = orjson.loads(accepted.body)["rejected"]
    assert said["message"].startswith(f'request: "batch" must be an array of events (got {got}')


def test_a_body_of_too_many_events_is_a_413_before_any_is_mapped(settings: Settings) -> None:
    """A body of tiny events ({}) within max_body_bytes held gigabytes while it was read."""
    body = b"[" + b",".join([b"{}"] * (MAX_EVENTS + 1)) + b"]"
    items, accepted = prepare_request(body, "application/json", Mapper(settings), settings, NOW)
    assert (items, accepted.status) == ([], 413)
    assert f"over {MAX_EVENTS} per request" in orjson.loads(accepted.body)["message"]
