"""The ``leadrelay serve`` ASGI app: event intake, health, readiness, metrics and its OpenAPI.

Routes: ``POST /v1/events`` (see ``intake``), ``GET /healthz`` (the process is up), ``GET /readyz``
(the store is usable and delivery is not paused; 503 with the reasons otherwise), ``GET /metrics``
(Prometheus) and ``GET /openapi.json``. The delivery worker runs in the app's lifespan: it starts
with the app and, at shutdown, drains the batches in flight before the app stops.

``app.state.settings`` and ``app.state.mapper`` are read on each request; a config reload replaces
them (``service.server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from leadrelay.config import Settings
from leadrelay.delivery.retention import retention_loop
from leadrelay.delivery.store import Store
from leadrelay.delivery.worker import DeliveryWorker, pause_advice
from leadrelay.mapping.engine import Mapper
from leadrelay.service.dashboard import dashboard_routes
from leadrelay.service.intake import Intake, json_response, over_backlog
from leadrelay.service.metrics import CONTENT_TYPE, Metrics
from leadrelay.service.openapi import openapi_document

log = structlog.get_logger("leadrelay.service")


def create_app(
    settings: Settings,
    *,
    store: Store,
    worker: DeliveryWorker | None,
    metrics: Metrics,
    mapper: Mapper,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The service app. ``worker=None`` runs intake only (``serve --no-worker``).

    The app does not own ``store``: the caller closes it after the app has stopped.
    """
    intake = Intake(store, worker, metrics, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        app.state.stop_delivery = stop
        task = None
        if worker is not None:
            task = asyncio.create_task(worker.run(stop), name="leadrelay-delivery")
            task.add_done_callback(_report_crash)
        app.state.worker_task = task
        retention = asyncio.create_task(
            retention_loop(store, lambda: app.state.settings.store, stop, clock=clock),
            name="leadrelay-retention",
        )
        try:
            yield
        finally:
            stop.set()
            intake.close()  # uvicorn has answered every request by now
            await retention
            if task is not None:
                with contextlib.suppress(Exception):  # already logged by _report_crash
                    await task

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"}, 200)

    async def readyz(request: Request) -> Response:
        problems: list[dict[str, Any]] = []
        task: asyncio.Task[None] | None = getattr(request.app.state, "worker_task", None)
        if worker is not None and task is not None and task.done():
            problems.append(
                {
                    "reason": "worker_stopped",
                    "message": "the delivery worker stopped; see the logs and restart leadrelay",
                }
            )
        paused = worker.paused if worker is not None else None
        if paused is not None:
            problems.append(
                {
                    "reason": "delivery_paused",
                    "message": pause_advice(paused),
                    "code": paused.code,
                    "subcode": paused.subcode,
                }
            )
        store_problem = await _store_problem(store, clock, intake, worker)
        if store_problem is not None:
            problems.append({"reason": "store_unavailable", "message": store_problem})
        # Said, but still ready: the 503s with Retry-After are the backpressure, and a load
        # balancer that dropped every intake process (they share the backlog) would refuse all.
        extra = {}
        if store_problem is None:
            limit = request.app.state.settings.server.max_backlog
            if (full := over_backlog(await intake.backlog.current(), limit)) is not None:
                said = f"{full}: new events are refused with 503 until fewer wait"
                extra["warnings"] = [{"reason": "backlog_full", "message": said}]
        if problems:
            first = problems[0]
            answer = {"ready": False, "reason": first["reason"], "message": first["message"]}
            return json_response({**answer, "problems": problems, **extra}, 503)
        return json_response({"ready": True, **extra}, 200)

    async def metrics_page(request: Request) -> Response:
        counts = await asyncio.to_thread(store.counts, clock())
        paused = worker is not None and worker.paused is not None
        text = metrics.render(counts, clock(), paused=paused)
        return Response(text, 200, media_type=CONTENT_TYPE)

    async def openapi(request: Request) -> Response:
        server = request.app.state.settings.server
        document = openapi_document(
            max_body_bytes=server.max_body_bytes, max_backlog=server.max_backlog
        )
        return json_response(document, 200)

    app = _App(
        intake,
        routes=[
            Route("/v1/events", intake, methods=["POST"]),
            Route("/v1/events/", intake, methods=["POST"]),  # not a 307 with an empty body
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_page),
            Route("/openapi.json", openapi),
            *dashboard_routes(store, worker, clock=clock),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.mapper = mapper
    app.state.intake = intake
    return app


_INTAKE_PATHS: Final = frozenset({"/v1/events", "/v1/events/"})


class _App(Starlette):
    """Starlette, with ``POST /v1/events`` handed straight to intake: the route every event takes
    skips Starlette's middleware and routing (measured: 50-90 us of the event loop's CPU per
    request). The route stays in ``routes`` for the rest (a root path, other methods: 405)."""

    def __init__(self, intake: Intake, **options: Any) -> None:
        super().__init__(**options)
        self._intake = intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] in _INTAKE_PATHS
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await self._intake(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the delivery worker stopped unexpectedly", exc_info=task.exception())


WRITE_FAILURE_HOLD_S: Final = 10.0
"""How long a failed intake write keeps ``/readyz`` at 503 once the store answers again."""


async def _store_problem(
    store: Store, clock: Callable[[], float], intake: Intake, worker: DeliveryWorker | None
) -> str | None:
    """Why the store cannot take events, or None: it answers, its file and folder are writable,
    and the last write (by intake or delivery) worked."""
    try:
        await asyncio.to_thread(store.counts, clock())
    except Exception as exc:
        return f"the event store does not answer: {type(exc).__name__}: {exc}"
    path = getattr(store, "path", None)
    if isinstance(path, str) and path != ":memory:" and not path.startswith("file:"):
        folder = os.path.dirname(os.path.abspath(path))
        for where in (path, folder):
            if os.path.exists(where) and not os.access(where, os.W_OK):
                return f"{where} is not writable by this process"
    # An intake write that failed counts for a while, not until the next one works: behind a
    # load balancer that sends nothing to an instance not ready, that one would never come
    # (after a Redis restart, an intake-only serve stayed not ready for good).
    failed = intake.store_error
    if failed is not None and clock() - intake.store_error_at >= WRITE_FAILURE_HOLD_S:
        failed = None  # the store answers again: ready, until a write fails again
    failed = failed or (worker.store_error if worker is not None else None)
    if failed is not None:
        return f"the last write to the event store failed: {failed}"
    return None
