"""``POST /v1/events``: authenticate, bound, read, map and durably store Commanders Act events.

The answer is 202 only once the events are on disk: ``Store.add`` returned, or with a store that
can defer its fsync (``DeferredSync``) ``sync`` returned after it. Reading and mapping
(``intake_map``) and storing run in the intake thread, so a 10 MB body does not hold up the event
loop; requests that queue up meanwhile share one transaction, and the next group is mapped while
the disk syncs (``group_commit``). A body of which no event can be read is refused (400) and
nothing is stored; when some items are readable and some are not, the readable ones are stored
and the others listed in the answer (202).

The endpoint is a plain ASGI app that the service app calls first (``app._App``): every event
passes here, so no Request, Response, routing or middleware objects are made per request.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Final

import orjson
import structlog
from pydantic import SecretStr
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from leadrelay.config import Settings
from leadrelay.delivery.store import Added, DeferredSync, Incoming, Outcomes, Store
from leadrelay.delivery.store_rows import with_other_stages
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.mapping.engine import Mapper
from leadrelay.service.group_commit import GroupCommit
from leadrelay.service.intake_map import Accepted, prepare_request
from leadrelay.service.metrics import Metrics

log = structlog.get_logger("leadrelay.intake")

RETRY_AFTER_S: Final = 5
"""Seconds a client is asked to wait when the backlog is full or the store is failing."""
_BACKLOG_REFRESH_S: Final = 0.5
_BACKLOG_REFRESH_MAX_S: Final = 5.0
_BACKLOG_CPU_SHARE: Final = 0.01


Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
"""An intake answer: status, body and the headers as ASGI sends them."""

_RETRY_AFTER: Final = (b"retry-after", str(RETRY_AFTER_S).encode())
_WWW_AUTHENTICATE: Final = (b"www-authenticate", b'Bearer realm="leadrelay"')
_JSON: Final = (b"content-type", b"application/json")


def json_response(content: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, encoded with orjson."""
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def problem(status: int, error: str, message: str, **extra: Any) -> Answer:
    """An error answer: ``{"error": code, "message": text, ...}``, with ``Retry-After`` (503) or
    ``WWW-Authenticate`` (401)."""
    body = orjson.dumps({"error": error, "message": message, **extra})
    if status == 503:
        return _json_answer(status, body, _RETRY_AFTER)
    if status == 401:
        return _json_answer(status, body, _WWW_AUTHENTICATE)
    return _json_answer(status, body)


def _json_answer(status: int, body: bytes, *extra: tuple[bytes, bytes]) -> Answer:
    """A JSON answer with the headers Starlette's ``Response`` would give it, in its order."""
    return status, body, [*extra, (b"content-length", str(len(body)).encode()), _JSON]


def over_backlog(waiting: int, limit: int) -> str | None:
    """Why intake refuses new events (503 ``backlog_full``): more than ``server.max_backlog``
    wait for delivery; None while they do not."""
    if waiting <= limit:
        return None
    return f"{waiting} events are waiting for delivery, over server.max_backlog ({limit})"


class Backlog:
    """The number of events waiting for delivery, read from the store at most every 0.5 s, and
    less often when reading it takes long (a count of a large backlog): at most 1% of a core."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._value = 0
        self._read_at = float("-inf")
        self._every = _BACKLOG_REFRESH_S
        self._lock = asyncio.Lock()

    async def current(self) -> int:
        """Queued plus in-flight events (cached)."""
        async with self._lock:
            if time.monotonic() - self._read_at >= self._every:
                self._value, cost = await asyncio.to_thread(self._count)
                self._read_at = time.monotonic()
                self._every = min(
                    _BACKLOG_REFRESH_MAX_S, max(_BACKLOG_REFRESH_S, cost / _BACKLOG_CPU_SHARE)
                )
            return self._value

    def added(self, n: int) -> None:
        """Count events just stored, until the next read from the store."""
        self._value += n

    def _count(self) -> tuple[int, float]:
        """The backlog in the store and the CPU seconds it took to count it."""
        began = time.thread_time()
        # since=now: only the backlog part of counts is needed, and it is indexed
        counts = self._store.counts(self._clock())
        return counts.queued + counts.in_flight, time.thread_time() - began


class Intake:
    """The ``POST /v1/events`` endpoint, a plain ASGI app (no Request or Response objects on the
    path every event takes). Settings and mapper are read from ``scope["app"].state`` on each
    request, so a config reload applies to the next request."""

    def __init__(
        self,
        store: Store,
        worker: DeliveryWorker | None,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        if isinstance(store, DeferredSync):
            add = _adding(partial(store.add_new, durable=False), store)
            self._group_commit = GroupCommit(add, sync=store.sync)
        else:
            self._group_commit = GroupCommit(_adding(store.add_new, store))
        self._worker = worker
        self._metrics = metrics
        self._clock = clock
        self.backlog = Backlog(store, clock)
        self.store_error: str | None = None
        self.store_error_at = 0.0  # when (the clock's) the last write failed
        """Why the last ``add`` failed, cleared by the next one that works."""
        self.full = False
        """Whether the last request was refused for a full backlog (logged when that begins
        and ends)."""

    def close(self) -> None:
        """Stop the intake thread (once the requests taken are answered)."""
        self._group_commit.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body, headers = await self._handle(scope, receive)
        self._metrics.intake(status)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive) -> Answer:
        state = scope["app"].state
        settings: Settings = state.settings
        mapper: Mapper = state.mapper
        server = settings.server
        header = _headers(scope["headers"])
        if not _authorized(header.get(b"authorization"), server.intake_token):
            why = "missing or wrong bearer token"
            if server.intake_token is None:
                why = "intake is disabled: set server.intake_token in the config"
            return problem(401, "unauthorized", why)
        encoding = header.get(b"content-encoding", "identity").strip().lower()
        if encoding != "identity":
            return problem(
                415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported"
            )
        try:
            backlog = await self.backlog.current()
        except Exception as exc:
            return self._store_failed(exc)
        full = over_backlog(backlog, server.max_backlog)
        if full is not None:
            if not self.full:
                log.warning(
                    "backlog full: new events are refused with 503 until fewer wait",
                    waiting=backlog,
                    max_backlog=server.max_backlog,
                )
                self.full = True
            return problem(503, "backlog_full", f"{full}; retry in {RETRY_AFTER_S} s")
        if self.full:
            log.info("backlog below server.max_backlog: events are accepted again", waiting=backlog)
            self.full = False
        limit = server.max_body_bytes
        length = header.get(b"content-length", "")
        if length.isdigit() and int(length) > limit:
            return _too_large(limit)
        body = await _read_body(receive, limit)
        if not isinstance(body, bytes):
            return body
        try:
            prepared, added = await self._group_commit.submit(
                partial(self._prepare, body, header.get(b"content-type"), mapper, settings)
            )
        except Exception as exc:  # the store failed: nothing was stored, the client must resend
            return self._store_failed(exc)
        accepted = prepared.after(added)
        self.store_error = None
        self._metrics.outcomes(accepted.counts)
        if accepted.queued:
            self.backlog.added(accepted.queued)
            if self._worker is not None:
                self._worker.notify()
        return _json_answer(accepted.status, accepted.body)

    def _prepare(
        self, body: bytes, content_type: str | None, mapper: Mapper, settings: Settings
    ) -> tuple[list[Incoming], Accepted]:
        """Read and map (in the intake thread), received now."""
        return prepare_request(body, content_type, mapper, settings, self._clock())

    def _store_failed(self, exc: Exception) -> Answer:
        self.store_error = f"{type(exc).__name__}: {exc}"
        self.store_error_at = self._clock()
        log.error("the event store failed; nothing was stored", error=self.store_error)
        return problem(503, "store_unavailable", "the event store cannot take events now")


def _adding(
    add: Callable[[Sequence[Incoming]], Added], store: Store
) -> Callable[[Sequence[Incoming]], Added]:
    """The store's ``add_new`` (``add``), telling the events it found stored under an event id
    stored for another stage (``Added.other_stages``): those are no resend."""
    if not isinstance(store, Outcomes):  # every store is; a test's may not be
        return add

    def adding(items: Sequence[Incoming]) -> Added:
        added = add(items)
        return added if all(added.stored) else with_other_stages(store.stages_of, items, added)

    return adding


_WANTED: Final = frozenset(
    {b"authorization", b"content-encoding", b"content-length", b"content-type"}
)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The request headers intake reads, the first of each name (as Starlette's ``get``); ASGI
    servers give names in lower case."""
    found: dict[bytes, str] = {}
    for name, value in raw:
        if name in _WANTED and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def _read_body(receive: Receive, limit: int) -> bytes | Answer:
    """The whole body, or the answer when it is over ``limit`` bytes or the client went away
    before sending it all."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    return _too_large(limit)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            return problem(400, "disconnected", "the client went away before sending the body")
    if len(chunks) == 1 and type(chunks[0]) is bytes:
        return chunks[0]  # the usual case: the whole body in one message, not copied
    return b"".join(chunks)


def _too_large(limit: int) -> Answer:
    return problem(
        413, "body_too_large", f"the body is larger than {limit} bytes (server.max_body_bytes)"
    )


def _authorized(header: str | None, token: SecretStr | None) -> bool:
    if token is None or header is None:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode())
