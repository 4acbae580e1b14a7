"""``POST /v1/events``: authenticate, bound, read, map and durably store Commanders Act events.

The answer is 202 only once the events are on disk: ``Store.add`` returned, or with a store that
can defer its fsync (``DeferredSync``) ``sync`` returned after it. Reading, mapping and storing run
in the intake thread, so a 10 MB body does not hold up the event loop; requests that queue up
meanwhile share one transaction, and the next group is mapped while the disk syncs
(``group_commit``). A body of which no event can be
read is refused (400) and nothing is stored; when some items are readable and some are not, the
readable ones are stored and the others listed in the answer (202).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import orjson
import structlog
from pydantic import SecretStr
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from leadrelay.config import Settings
from leadrelay.delivery.store import DeferredSync, Incoming, Store
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.events import parse_body
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Filtered, Payload, Rejected
from leadrelay.service.group_commit import GroupCommit
from leadrelay.service.metrics import Metrics

log = structlog.get_logger("leadrelay.intake")

RETRY_AFTER_S: Final = 5
"""Seconds a client is asked to wait when the backlog is full or the store is failing."""
_BACKLOG_REFRESH_S: Final = 0.5


def json_response(content: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, encoded with orjson."""
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def problem(status: int, error: str, message: str, **extra: Any) -> Response:
    """An error answer: ``{"error": code, "message": text, ...}``."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="leadrelay"'}
    return json_response({"error": error, "message": message, **extra}, status, headers)


class Backlog:
    """The number of events waiting for delivery, read from the store at most every 0.5 s."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._value = 0
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def current(self) -> int:
        """Queued plus in-flight events (cached)."""
        async with self._lock:
            if time.monotonic() - self._read_at >= _BACKLOG_REFRESH_S:
                # since=now: only the backlog part of counts is needed, and it is indexed
                counts = await asyncio.to_thread(self._store.counts, self._clock())
                self._value = counts.queued + counts.in_flight
                self._read_at = time.monotonic()
            return self._value

    def added(self, n: int) -> None:
        """Count events just stored, until the next read from the store."""
        self._value += n


@dataclass(frozen=True, slots=True)
class _Accepted:
    status: int
    body: dict[str, Any]
    queued: int
    counts: Counter[tuple[str, str]]


class Intake:
    """The ``POST /v1/events`` endpoint. Settings and mapper are read from ``app.state`` on each
    request, so a config reload applies to the next request."""

    def __init__(
        self,
        store: Store,
        worker: DeliveryWorker | None,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        if isinstance(store, DeferredSync):
            self._group_commit = GroupCommit(partial(store.add, durable=False), sync=store.sync)
        else:
            self._group_commit = GroupCommit(store.add)
        self._worker = worker
        self._metrics = metrics
        self._clock = clock
        self.backlog = Backlog(store, clock)
        self.store_error: str | None = None
        """Why the last ``add`` failed, cleared by the next one that works."""

    def close(self) -> None:
        """Stop the intake thread (once the requests taken are answered)."""
        self._group_commit.close()

    async def __call__(self, request: Request) -> Response:
        response = await self._handle(request)
        self._metrics.intake(response.status_code)
        return response

    async def _handle(self, request: Request) -> Response:
        settings: Settings = request.app.state.settings
        mapper: Mapper = request.app.state.mapper
        server = settings.server
        if not _authorized(request.headers.get("authorization"), server.intake_token):
            why = "missing or wrong bearer token"
            if server.intake_token is None:
                why = "intake is disabled: set server.intake_token in the config"
            return problem(401, "unauthorized", why)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            return problem(
                415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported"
            )
        try:
            backlog = await self.backlog.current()
        except Exception as exc:
            return self._store_failed(exc)
        if backlog > server.max_backlog:
            return problem(
                503,
                "backlog_full",
                f"{backlog} events are waiting for delivery, over server.max_backlog "
                f"({server.max_backlog}); retry in {RETRY_AFTER_S} s",
            )
        limit = server.max_body_bytes
        length = request.headers.get("content-length", "")
        body = bytearray()
        try:
            if length.isdigit() and int(length) > limit:
                return _too_large(limit)
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return _too_large(limit)
        except ClientDisconnect:
            return problem(400, "disconnected", "the client went away before sending the body")
        content_type = request.headers.get("content-type")
        try:
            accepted = await self._group_commit.submit(
                partial(self._prepare, bytes(body), content_type, mapper, settings)
            )
        except Exception as exc:  # the store failed: nothing was stored, the client must resend
            return self._store_failed(exc)
        self.store_error = None
        self._metrics.outcomes(accepted.counts)
        if accepted.queued:
            self.backlog.added(accepted.queued)
            if self._worker is not None:
                self._worker.notify()
        return json_response(accepted.body, accepted.status)

    def _store_failed(self, exc: Exception) -> Response:
        self.store_error = f"{type(exc).__name__}: {exc}"
        log.error("the event store failed; nothing was stored", error=self.store_error)
        return problem(503, "store_unavailable", "the event store cannot take events now")

    def _prepare(
        self, body: bytes, content_type: str | None, mapper: Mapper, settings: Settings
    ) -> tuple[list[Incoming], _Accepted]:
        """Read and map (in the intake thread): the events to store and the answer once they
        are stored."""
        now = self._clock()
        keep_originals = settings.store.originals != "drop"
        items: list[Incoming] = []
        rejected: list[dict[str, Any]] = []
        filtered: Counter[str] = Counter()
        counts: Counter[tuple[str, str]] = Counter()
        ids: list[str] = []
        records = parse_body(body, content_type=content_type)
        for record in records:
            if record.event is None:
                rejected.append(_rejection(record.where, None, "unreadable", None, record.error))
                counts["rejected", "unreadable"] += 1
                continue
            try:
                outcome = mapper.map(record.event)
            except Exception as exc:  # a bug must cost one event, not the whole request
                log.exception("mapping failed", item=record.where)
                rejected.append(_rejection(record.where, None, "mapping_failed", None, str(exc)))
                counts["rejected", "mapping_failed"] += 1
                continue
            if isinstance(outcome, Payload):
                ids.append(outcome.key)  # counted once after the loop
            elif isinstance(outcome, Filtered):
                filtered[outcome.reason] += 1
                counts["filtered", outcome.reason] += 1
            elif isinstance(outcome, Rejected):
                rejected.append(
                    _rejection(
                        record.where, outcome.key, outcome.reason, outcome.field, outcome.message
                    )
                )
                counts["rejected", outcome.reason] += 1
            original = orjson.dumps(record.event) if keep_originals else None
            items.append(Incoming(outcome, original, now))
        if not items and rejected:
            first = rejected[0]["message"]
            more = f" (and {len(rejected) - 1} more problems)" if len(rejected) > 1 else ""
            return [], _Accepted(
                400,
                {"error": "malformed_body", "message": f"{first}{more}", "rejected": rejected},
                0,
                Counter(),
            )
        if ids:
            counts["queued", ""] = len(ids)
        answer = {
            "accepted": len(items),
            "queued": len(ids),
            "filtered": dict(filtered),
            "rejected": rejected,
            "ids": ids,
        }
        return items, _Accepted(202, answer, len(ids), counts)


def _too_large(limit: int) -> Response:
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


def _rejection(
    where: str, key: str | None, reason: str, field: str | None, message: str | None
) -> dict[str, Any]:
    return {
        "item": where,
        "event_id": key or None,
        "reason": reason,
        "field": field,
        "message": message or reason,
    }
