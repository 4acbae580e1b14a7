"""The dashboard's routes, mounted by ``service.app.create_app``.

Every page reads the store in a worker thread (``asyncio.to_thread``), like ``/metrics``, so a
large store never holds up intake. Settings and mapper are read from ``app.state`` on each
request: a config reload applies to the next page.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from leadrelay.config import Settings
from leadrelay.delivery.store import Store
from leadrelay.delivery.worker import pause_advice
from leadrelay.diagnostics.delivery import SPANS, Granularity
from leadrelay.mapping.engine import Mapper
from leadrelay.meta.errors import GraphError
from leadrelay.service.dashboard import delivery_page, events_page, funnel_page, playground
from leadrelay.service.dashboard.auth import DashboardAuth
from leadrelay.service.dashboard.forms import FormError, read_form
from leadrelay.service.dashboard.layout import BASE, page
from leadrelay.service.dashboard.reports import Reports


class PauseSource(Protocol):
    """What the dashboard asks of the delivery worker (``DeliveryWorker`` is one)."""

    @property
    def paused(self) -> GraphError | None:
        """Why delivery is paused, or None."""
        ...


_ID_DIGITS: Final = 18  # ids and codes are SQLite integers (64 bits): longer is no id


def _int(text: str | None) -> int | None:
    """A whole number from the query (ASCII digits: "²" is a digit to ``isdigit``), else None."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > _ID_DIGITS:
        return None
    return int(text)


def _not_found(what: str) -> Response:
    body = f'<h1>Not found</h1><p>{what}</p><p><a href="{BASE}">Event Delivery</a></p>'
    return page("Not found", body, current=None, status=404)


def dashboard_routes(
    store: Store, worker: PauseSource | None, *, clock: Callable[[], float] = time.time
) -> list[Route]:
    """The ``/dashboard`` routes over ``store``; ``worker=None`` when this process does not
    deliver (``serve --no-worker``)."""
    auth = DashboardAuth(clock)
    reports = Reports(store)  # the Event Delivery and Funnel pages' report, shared

    def settings_of(request: Request) -> Settings:
        settings: Settings = request.app.state.settings
        return settings

    def worker_state(request: Request, view: delivery_page.DeliveryView) -> tuple[str, str | None]:
        if worker is None:
            held = delivery_page.held_for_auth(view)
            paused = (
                f"{held} queued event(s) wait because Meta refused the requests (the access "
                "token, a permission or the endpoint)."
                if held
                else None
            )
            return "not in this process (serve --no-worker)", paused
        task: asyncio.Task[None] | None = getattr(request.app.state, "worker_task", None)
        state = "stopped: see the logs and restart leadrelay" if task and task.done() else "running"
        error = worker.paused
        return state, None if error is None else pause_advice(error)

    async def delivery(request: Request) -> Response:
        settings = settings_of(request)
        by = request.query_params.get("by")
        view = await asyncio.to_thread(delivery_page.collect, store, settings, clock(), reports)
        state, paused = worker_state(request, view)
        granularity: Granularity | None = next((g for g in SPANS if g == by), None)
        body = delivery_page.render(view, by=granularity, paused=paused, worker=state)
        return page("Event Delivery", body, current="delivery", pixel_id=settings.pixel_id)

    async def events(request: Request) -> Response:
        q = request.query_params
        category = q.get("category") if q.get("category") in delivery_page.STATES_OF else None
        code, subcode = _int(q.get("code")), _int(q.get("subcode"))
        # The filters said on the page are those applied: an unknown category or a code that
        # is no number filters nothing, and is not said to.
        applied = {"category": category, "reason": q.get("reason"), "code": code}
        if code is not None:
            applied["subcode"] = subcode
        filters = {k: str(v) for k, v in applied.items() if v}
        rows, more = await asyncio.to_thread(
            events_page.list_events,
            store,
            category=category,
            reason=q.get("reason"),
            code=code,
            subcode=subcode,
            after=_int(q.get("after")),
        )
        body = events_page.render_list(rows, filters=filters, more=more)
        return page("Events", body, current="events", pixel_id=settings_of(request).pixel_id)

    async def event(request: Request) -> Response:
        id_: int = request.path_params["id"]
        record = None if id_ >= 2**63 else await asyncio.to_thread(store.get, id_)
        if record is None:
            return _not_found(f"No event #{id_} in the store (it may have been purged).")
        body = events_page.render_event(record)
        return page(f"Event #{id_}", body, current="events", pixel_id=settings_of(request).pixel_id)

    async def funnel(request: Request) -> Response:
        settings = settings_of(request)
        report = await asyncio.to_thread(reports.get, settings, clock())
        body = funnel_page.render(report)
        return page("Funnel", body, current="funnel", pixel_id=settings.pixel_id)

    async def play(request: Request) -> Response:
        settings = settings_of(request)
        if request.method == "GET":
            body = playground.render(playground.sample_event(settings, clock()), "", None)
            return page(
                "Mapping playground", body, current="playground", pixel_id=settings.pixel_id
            )
        try:
            form = await read_form(request, playground.FORM_LIMIT)
        except FormError as exc:
            failed = playground.Result(event_problem=str(exc))
            body = playground.render("", "", failed)
            return page("Mapping playground", body, current="playground", status=400)
        event_text, rows_text = form.get("event", ""), form.get("rows", "")
        mapper: Mapper = request.app.state.mapper
        result = await asyncio.to_thread(
            playground.run, settings, mapper, event_text, rows_text, clock
        )
        body = playground.render(event_text, rows_text, result)
        return page("Mapping playground", body, current="playground", pixel_id=settings.pixel_id)

    return [
        Route(BASE, auth.guard(delivery)),
        Route(f"{BASE}/events", auth.guard(events)),
        Route(BASE + "/events/{id:int}", auth.guard(event)),
        Route(f"{BASE}/funnel", auth.guard(funnel)),
        Route(f"{BASE}/playground", auth.guard(play), methods=["GET", "POST"]),
        Route(f"{BASE}/login", auth.login, methods=["GET", "POST"]),
        Route(f"{BASE}/logout", auth.logout, methods=["POST"]),
    ]
