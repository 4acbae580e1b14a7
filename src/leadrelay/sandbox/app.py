"""The sandbox ASGI app: Meta's events endpoint plus a few ``/_sandbox`` pages for people and tests.

``POST /{version}/{pixel_id}/events`` takes a JSON body (``{"data": [...]}``), or a form
(urlencoded or multipart) whose ``data`` field is JSON, as Meta does. The token may come from
``Authorization: Bearer``, the ``access_token`` query parameter or an ``access_token`` body field.
Checks run in Meta's order: token (190), path version and pixel (100/33), the ``data`` array
(100), then every event (100/28040xx, see ``validation``). Statuses are listed in ``errors``.

For people and tests: ``GET /_sandbox`` (status page), ``GET /_sandbox/received?limit=N`` (counters
and the last N accepted events, default 100, as JSON), ``POST /_sandbox/faults`` with
``{"script": ["http_500", ...]}`` (as ``SandboxState.script``) and ``POST /_sandbox/reset``.

The events endpoint is a plain ASGI callable rather than a Starlette request handler: it is the
path a million benchmark events go through, and it must be able to close the connection without
answering (``drop``), which needs the transport that ``server`` puts into the scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import re
import threading
from collections.abc import Iterator
from typing import Any, Final

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from leadrelay.config import DEFAULT_API_VERSION
from leadrelay.meta.versions import ended
from leadrelay.sandbox import errors, wire
from leadrelay.sandbox.errors import GraphError, new_fbtrace_id
from leadrelay.sandbox.options import Fault, SandboxOptions
from leadrelay.sandbox.page import render_page
from leadrelay.sandbox.state import RequestRecord, SandboxState
from leadrelay.sandbox.validation import BatchValidator

TRANSPORT_KEY: Final = "leadrelay.sandbox.transport"
MAX_EVENTS: Final = 1000
_is_version = re.compile(r"v\d+\.\d+").fullmatch
_EVENTS_PATH: Final = re.compile(r"/[^/]+/[^/]+/events/?")
_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class EventsEndpoint:
    """ASGI endpoint for ``POST /{version}/{pixel_id}/events``; settings compiled once."""

    def __init__(self, options: SandboxOptions, state: SandboxState, stopping: threading.Event):
        self._state = state
        self._stopping = stopping
        self._tokens = options.access_tokens
        self._pixels = options.pixel_ids
        self._clock = options.clock
        self._slow_s = options.slow_ms / 1000
        self._validator = BatchValidator(
            max_age_s=options.max_age_s, deleted_lead_ids=frozenset(options.deleted_lead_ids)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await wire.read_body(receive)
        pixel_id: str = scope["path_params"]["pixel_id"]
        fault = self._state.begin()
        delay = self._slow_s
        if fault is not None and fault.kind in ("slow", "timeout"):
            delay += fault.value / 1000
        if (delay and not await self._sleep(delay)) or (fault is not None and fault.kind == "drop"):
            await _drop(scope)
            self._finish(pixel_id, 0, None, "dropped")
            return
        if fault is not None and (answer := _fault_error(fault)) is not None:
            key = fault.kind if answer.code == 2 else answer.key
            await self._send_error(send, pixel_id, answer, None, key)
            return
        with _collector_paused():
            answer_or_error = self._accept(scope, body, pixel_id)
        if isinstance(answer_or_error, tuple):
            error, count = answer_or_error
            await self._send_error(send, pixel_id, error, count, error.key)
            return
        await wire.send_json(send, 200, answer_or_error)

    def _accept(
        self, scope: Scope, body: bytes, pixel_id: str
    ) -> bytes | tuple[GraphError, int | None]:
        """Check the request; record what it carried and return the 200 answer, or the error
        and how many events the request had (None when not read that far)."""
        outcome, count = self._process(scope, body, pixel_id)
        if isinstance(outcome, GraphError):
            return outcome, count
        events, warnings, code = outcome
        payload = {"events_received": len(events), "messages": warnings}
        payload["fbtrace_id"] = new_fbtrace_id()
        # Recorded before answering, so whoever has the answer also sees the events in the state.
        self._finish(pixel_id, 200, count, None, events, code)
        return orjson.dumps(payload)

    def _process(
        self, scope: Scope, body: bytes, pixel_id: str
    ) -> tuple[GraphError | tuple[list[Any], list[str], str | None], int | None]:
        content_type, bearer = wire.content_type_and_bearer(scope)
        payload = wire.parse_body(body, content_type)
        token = bearer or wire.query_token(scope)
        if token is None and isinstance(payload, dict):
            token = payload.get("access_token")
        if not token or type(token) is not str:
            return errors.TOKEN_MISSING, None
        if self._tokens and token not in self._tokens:
            return errors.TOKEN_REJECTED, None
        version = scope["path_params"]["version"]
        if not _is_version(version):
            return errors.unknown_path(scope["path"]), None
        today = dt.datetime.fromtimestamp(self._clock(), dt.UTC).date()
        if ended(version, today) is not None:
            return errors.deprecated_version(DEFAULT_API_VERSION), None
        if not self._pixel_known(pixel_id):
            return errors.unknown_pixel(pixel_id), None
        if isinstance(payload, GraphError):
            return payload, None
        data = payload.get("data")
        if type(data) is str:
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError:
                return errors.invalid("param data must be a JSON array", blame=("data",)), None
        if data is None:
            return errors.invalid("The parameter data is required", blame=("data",)), None
        if type(data) is not list:
            return errors.invalid("param data must be an array of events", blame=("data",)), None
        if not data or len(data) > MAX_EVENTS:
            return errors.invalid(
                f"param data must hold 1 to {MAX_EVENTS} events, got {len(data)}", blame=("data",)
            ), len(data)
        for name in ("test_event_code", "partner_agent"):
            value = payload.get(name)
            if value is not None and type(value) is not str:
                return errors.invalid(f"param {name} must be a string", blame=(name,)), len(data)
        checked = self._validator.validate(data, self._clock())
        if isinstance(checked, GraphError):
            return checked, len(data)
        return (data, checked, payload.get("test_event_code")), len(data)

    def _pixel_known(self, pixel_id: str) -> bool:
        if self._pixels is not None:
            return pixel_id in self._pixels
        return 15 <= len(pixel_id) <= 16 and pixel_id.isascii() and pixel_id.isdigit()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, but wake when the server stops; ``False`` if it stopped meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._stopping.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, 0.05))
        return False

    async def _send_error(
        self, send: Send, pixel_id: str, error: GraphError, count: int | None, key: str
    ) -> None:
        body = orjson.dumps(error.envelope(new_fbtrace_id()))
        self._finish(pixel_id, error.status, count, key)
        await wire.send_json(send, error.status, body, error.headers)

    def _finish(
        self,
        pixel_id: str,
        status: int,
        count: int | None,
        error: str | None,
        accepted: list[dict[str, Any]] | None = None,
        test_event_code: str | None = None,
    ) -> None:
        record = RequestRecord(self._clock(), pixel_id, status, count, error)
        self._state.finish(record, accepted, test_event_code)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a request body is parsed, checked and dropped.

    A batch of a thousand events is some twenty thousand containers, all alive until the
    request is done and then freed by reference counting (parsing makes no cycles); meanwhile
    the collector would scan them again and again (it was a third of the sandbox's CPU).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fault_error(fault: Fault) -> GraphError | None:
    kind = fault.kind
    if kind == "http_500":
        return errors.service_error(500)
    if kind == "http_503":
        return errors.service_error(503)
    if kind == "throttle":
        return errors.throttled(fault.value)
    if kind == "auth":
        return errors.TOKEN_REJECTED
    if kind == "permission":
        return errors.PERMISSION
    return None


async def _drop(scope: Scope) -> None:
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        # Outside SandboxServer/serve_forever there is no transport to close; failing the request
        # is the nearest thing (the server answers 500 or the client sees an exception).
        raise ConnectionAbortedError("sandbox fault 'drop': connection dropped")
    transport.close()
    await asyncio.sleep(0)  # lets connection_lost mark the request as disconnected


def create_app(options: SandboxOptions) -> Starlette:
    """Build the sandbox app; ``app.state.sandbox`` is its ``SandboxState``."""
    state = SandboxState(options)
    stopping = threading.Event()

    async def page(request: Request) -> Response:
        return HTMLResponse(render_page(state))

    async def received(request: Request) -> Response:
        text = request.query_params.get("limit", "100")
        if not (text.isascii() and text.isdigit()):
            return _json({"error": f"limit must be a non-negative integer, got {text!r}"}, 400)
        return _json(
            {
                "requests": state.requests,
                "events_received": state.events_received,
                "errors_by_code": dict(state.errors_by_code),
                "test_event_codes": dict(state.test_event_codes),
                "events": state.received(int(text)),
            }
        )

    async def faults(request: Request) -> Response:
        try:
            script = orjson.loads(await request.body()).get("script")
            if not isinstance(script, list):
                raise ValueError('the body must be {"script": ["http_500", ...]}')
            state.script(*script)
        except (orjson.JSONDecodeError, AttributeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"queued": len(script)})

    async def reset(request: Request) -> Response:
        state.reset()
        return _json({"reset": True})

    async def elsewhere(request: Request) -> Response:
        # Meta answers every path and method with its envelope; a plain 404 or 405 would send a
        # client (leadrelay among them) down the wrong road.
        path = request.url.path
        if request.method != "POST" and _EVENTS_PATH.fullmatch(path):
            error = errors.unsupported_method(request.method)
        else:
            error = errors.unknown_path(path)
        # Counted as Meta's answers are, so the page shows why nothing arrives.
        state.stray(RequestRecord(options.clock(), "", error.status, None, error.key))
        body = orjson.dumps(error.envelope(new_fbtrace_id()))
        return Response(body, error.status, media_type="application/json")

    app = Starlette(
        routes=[
            Route(
                "/{version}/{pixel_id}/events",
                EventsEndpoint(options, state, stopping),
                methods=["POST"],
            ),
            Route("/_sandbox", page),
            Route("/_sandbox/received", received),
            Route("/_sandbox/faults", faults, methods=["POST"]),
            Route("/_sandbox/reset", reset, methods=["POST"]),
            Route("/{path:path}", elsewhere, methods=[*_METHODS]),
        ]
    )
    app.state.sandbox = state
    app.state.sandbox_stopping = stopping
    return app


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")
