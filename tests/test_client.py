"""GraphClient: the request Meta gets, and what a failed call comes back as (never an exception)."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Callable

import httpx
import orjson
import pytest

from leadrelay.meta.client import GraphClient, GraphResult, _Released
from leadrelay.meta.errors import ErrorKind
from leadrelay.sandbox import SandboxOptions, SandboxServer

TOKEN = "EAAB-secret-token-do-not-print"
EVENTS = [
    orjson.dumps({"event_name": "Converted", "user_data": {"lead_id": 123456789012345678}}),
    orjson.dumps({"event_name": "Raw Lead", "user_data": {"lead_id": 123456789012345}}),
]

Handler = Callable[[httpx.Request], httpx.Response]


def send(handler: Handler, test_event_code: str | None = None) -> GraphResult:
    async def go() -> GraphResult:
        client = GraphClient(
            graph_url="https://graph.example/",
            api_version="v25.0",
            pixel_id="987654321012345",
            access_token=TOKEN,
            test_event_code=test_event_code,
            transport=httpx.MockTransport(handler),
        )
        async with client:
            return await client.send(EVENTS)

    return asyncio.run(go())


def ok(request: httpx.Request) -> httpx.Response:
    body = orjson.loads(request.content)
    return httpx.Response(
        200, json={"events_received": len(body["data"]), "messages": [], "fbtrace_id": "TraceOk"}
    )


def test_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(request)

    result = send(handler)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://graph.example/v25.0/987654321012345/events"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.content == b'{"data":[' + b",".join(EVENTS) + b"]}"
    assert request.headers["content-length"] == str(len(request.content))
    assert "transfer-encoding" not in request.headers
    # 18-digit ids survive as exact JSON integers
    assert orjson.loads(request.content)["data"][0]["user_data"]["lead_id"] == 123456789012345678
    assert result == GraphResult(
        ok=True, events_received=2, messages=[], fbtrace_id="TraceOk", error=None, http_status=200
    )


@pytest.mark.parametrize("code", [None, 'TEST"123'])
@pytest.mark.parametrize("events", [[], EVENTS[:1], EVENTS, [b"1", b"[]", b'{"x":null}'] * 300])
def test_body_is_the_events_in_a_data_array(events: list[bytes], code: str | None) -> None:
    client = GraphClient(
        graph_url="http://127.0.0.1:9",
        api_version="v25.0",
        pixel_id="123456789012345",
        access_token=TOKEN,
        test_event_code=code,
    )
    tail = b"" if code is None else b',"test_event_code":' + orjson.dumps(code)
    before = list(events)
    assert client.body(events) == b'{"data":[' + b",".join(events) + b"]" + tail + b"}"
    assert events == before  # the caller's events are left alone
    asyncio.run(client.aclose())


def test_test_event_code_is_added_to_the_body() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return ok(request)

    send(handler, test_event_code='TEST"123')
    body = orjson.loads(seen[0])
    assert body["test_event_code"] == 'TEST"123'
    assert len(body["data"]) == 2


def test_token_never_in_url_repr_or_errors() -> None:
    urls: list[str] = []

    def echo(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        # A proxy that echoes the request headers back in its error message.
        text = f"bad request, you sent {request.headers['authorization']}"
        return httpx.Response(
            400,
            json={"error": {"message": text, "code": 100, "error_user_title": f"token {TOKEN}"}},
        )

    result = send(echo)
    assert result.error is not None
    assert TOKEN not in urls[0]
    assert TOKEN not in repr(result)
    assert TOKEN not in result.error.message
    assert "[access_token]" in result.error.message
    client = GraphClient(
        graph_url="https://graph.example", api_version="v25.0", pixel_id="1", access_token=TOKEN
    )
    assert TOKEN not in repr(client)
    assert TOKEN not in client.url


@pytest.mark.parametrize("as_json", [True, False])
def test_a_token_echoed_where_the_message_is_cut_leaves_no_part_of_it(as_json: bool) -> None:
    """Error texts are cut to 300 characters: a token echoed across the cut must not leave its
    first half in the message (as a Graph error, or as a proxy's page that is not JSON)."""
    text = "x" * 270 + f" access_token={TOKEN} " + "y" * 100  # the token from 284 on

    def echo(request: httpx.Request) -> httpx.Response:
        if as_json:
            return httpx.Response(400, json={"error": {"message": text, "code": 100}})
        return httpx.Response(400, text=text)

    result = send(echo)
    assert result.error is not None
    assert len(result.error.message) < len(text)  # it was cut
    assert TOKEN[:8] not in result.error.message


def _escaped(text: str) -> str:
    """``text`` as a JSON string of \\u escapes: the same text once parsed, not the same bytes."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


@pytest.mark.parametrize("ok", [True, False], ids=["success", "error"])
def test_a_token_echoed_in_json_escapes_is_taken_out_of_every_field(ok: bool) -> None:
    """Escaped, the token is not in the answer's bytes; once parsed it is, in any field: the
    fbtrace_id and the messages of a success are kept and logged as they come."""
    token = _escaped(TOKEN)

    def echo(request: httpx.Request) -> httpx.Response:
        if ok:
            content = f'{{"events_received":2,"messages":["got {token}"],"fbtrace_id":"{token}"}}'
            return httpx.Response(200, content=content.encode())
        content = (
            f'{{"error":{{"message":"bad {token}","code":100,"error_subcode":2804036,'
            f'"error_user_title":"{token}","fbtrace_id":"{token}"}}}}'
        )
        return httpx.Response(400, content=content.encode())

    result = send(echo)
    assert result.ok is ok
    assert TOKEN not in repr(result)
    assert "[access_token]" in (result.fbtrace_id or "")


def test_bad_token_error_does_not_quote_it() -> None:
    with pytest.raises(ValueError) as info:
        GraphClient(
            graph_url="https://graph.example",
            api_version="v25.0",
            pixel_id="1",
            access_token="EAAB secret\n",
        )
    assert "secret" not in str(info.value)
    assert "access_token" in str(info.value)


def test_graph_error_comes_back_classified() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "error": {
                    "message": "Invalid parameter",
                    "type": "OAuthException",
                    "code": 100,
                    "error_subcode": 2804036,
                    "is_transient": False,
                    "error_user_title": "Invalid lead ID",
                    "fbtrace_id": "TraceBad",
                }
            },
        )

    result = send(handler)
    assert not result.ok
    assert result.http_status == 400
    assert result.fbtrace_id == "TraceBad"
    assert result.error is not None
    assert (result.error.kind, result.error.label()) == (ErrorKind.INVALID, "100/2804036")


def test_throttle_headers_reach_the_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "42"}, content=b"slow down")

    result = send(handler)
    assert result.error is not None
    assert (result.error.kind, result.error.retry_after) == (ErrorKind.THROTTLED, 42.0)


@pytest.mark.parametrize(
    ("exc", "label"),
    [
        (httpx.ReadTimeout, "timeout"),
        (httpx.ConnectError, "connection"),
    ],
)
def test_network_failures_do_not_raise(exc: type[httpx.TransportError], label: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc(f"simulated {label}", request=request)

    result = send(handler)
    assert result.error is not None
    assert (result.ok, result.http_status, result.error.kind, result.error.label()) == (
        False,
        None,
        ErrorKind.TRANSIENT,
        label,
    )


def test_success_messages_are_kept() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"events_received": 2, "messages": ["warn: x"], "fbtrace_id": "T"}
        )

    assert send(handler).messages == ["warn: x"]


def test_an_unreachable_server_is_an_error_result() -> None:
    async def go() -> GraphResult:
        # Port 9 (discard) on loopback: nothing listens there in the test environment.
        async with GraphClient(
            graph_url="http://127.0.0.1:9",
            api_version="v25.0",
            pixel_id="1",
            access_token=TOKEN,
            timeout=2.0,
        ) as client:
            return await client.send(EVENTS)

    result = asyncio.run(go())
    assert result.error is not None
    assert result.error.kind is ErrorKind.TRANSIENT
    assert TOKEN not in repr(result)


def test_a_sent_body_is_not_kept_alive() -> None:
    """Ten requests of 0.7 MB each over real HTTP, the cycle collector off (as between its rare
    full runs in a long send): what stays allocated afterwards is far less than one body."""
    event = orjson.dumps(
        {
            "event_name": "Raw Lead",
            "event_time": int(time.time()) - 60,
            "action_source": "system_generated",
            "user_data": {"lead_id": 123456789012345, "em": ["a" * 64] * 8},
            "custom_data": {"event_source": "crm", "lead_event_source": "CRM"},
        }
    )
    events = [event] * 1000

    async def go(url: str) -> int:
        client = GraphClient(
            graph_url=url,
            api_version="v25.0",
            pixel_id="987654321012345",
            access_token=TOKEN,
            test_event_code=None,
        )
        async with client:
            assert (await client.send(events)).ok  # connection and imports settled
            gc.collect()
            gc.disable()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(10):
                    assert (await client.send(events)).ok
                return tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
                gc.enable()

    options = SandboxOptions(access_tokens=frozenset({TOKEN}), keep_events=0)
    with SandboxServer(options) as server:
        kept = asyncio.run(go(server.url))
    assert kept < 300_000, kept


def test_a_body_read_again_goes_out_whole_until_released() -> None:
    async def read(body: _Released) -> bytes:
        return b"".join([chunk async for chunk in body])

    body = _Released(b'{"data":[]}')
    assert body.headers == {"Content-Length": "11"}
    assert asyncio.run(read(body)) == asyncio.run(read(body)) == b'{"data":[]}'
    body.release()
    assert asyncio.run(read(body)) == b""
