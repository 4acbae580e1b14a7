"""``leadrelay status``: the Event Delivery view in the terminal.

Counts by outcome and reason over the last hour, day and week, a health label from the delivered
share, the backlog, and whether delivery is paused (asked of the running service when there is
one, else read from the reasons of queued events).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leadrelay.config import Settings, StoreSettings
from leadrelay.delivery.store import Counts, FleetControl, Store
from leadrelay.diagnostics.delivery import Health, health
from leadrelay.diagnostics.fixes import what_to_fix
from leadrelay.outcome import INTERRUPTED

WINDOWS: Final = (("last hour", 3600), ("last day", 86400), ("last week", 7 * 86400))


def windows(store: StoreSettings) -> list[tuple[str, float]]:
    """``WINDOWS``, each cut to what the store keeps: past ``retention_days`` delivered (and
    filtered) events are deleted but dead letters are not, so a longer window would count the
    failures alone (health "stormy: 0.0% delivered" after 397,376 deliveries). A cut window
    says so in its name."""
    kept = store.retention_s
    out = []
    for name, seconds in WINDOWS:
        if seconds <= kept:
            out.append((name, float(seconds)))
        else:
            out.append((f"{name} (the store keeps {_span(kept)})", kept))
    return out


def _span(seconds: float) -> str:
    """``3 days``, ``12 hours``, ``30 minutes``: how long, in the largest whole unit."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds / size
            shown = f"{n:.0f}" if abs(n - round(n)) < 0.05 else f"{n:.1f}"
            return f"{shown} {unit}{'' if shown == '1' else 's'}"
    return f"{seconds:.0f} seconds"


FAILED: Final = ("rejected", "expired", "dead")
PAUSE_REASONS: Final = frozenset({"paused_auth"})
_NOT_TRIED: Final = PAUSE_REASONS | {INTERRUPTED}  # queued, but no request of theirs failed


@dataclass(frozen=True, slots=True)
class Window:
    """Counts over one period and the health they give."""

    name: str
    counts: Counts
    health: Health


@dataclass(frozen=True, slots=True)
class Status:
    """Everything ``leadrelay status`` shows."""

    windows: tuple[Window, ...]
    backlog: Counts
    paused: str | None
    service: str
    max_backlog: int | None = None  # server.max_backlog: beyond it, serve refuses events


def _health(counts: Counts) -> Health:
    failed = sum(counts.by_state.get(s, 0) for s in FAILED)
    return health(counts.by_state.get("delivered", 0), failed)


def service_state(settings: Settings) -> tuple[str, str | None]:
    """Ask the running service (if any) whether it is ready: (description, pause reason)."""
    server = settings.server
    url = f"http://{server.host}:{server.port}/readyz"
    try:
        answer = httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return f"not running at {server.host}:{server.port}", None
    try:
        body: Any = answer.json()
    except ValueError:
        body = None
    warned = body.get("warnings") if isinstance(body, dict) else None  # a full backlog
    warnings = "".join(f"; {w.get('message')}" for w in warned or [] if isinstance(w, dict))
    if answer.status_code == 200:
        return f"running at {server.host}:{server.port}, ready{warnings}", None
    if not isinstance(body, dict):
        return f"running at {server.host}:{server.port}, not ready: {answer.text[:200]}", None
    # What /readyz says to do (the cause and the fix), not only its reason code: each problem
    # (a pause hid a full backlog), the pause said apart.
    problems = [p for p in body.get("problems") or [body] if isinstance(p, dict)]
    paused = [p for p in problems if p.get("reason") == "delivery_paused"]
    said = "; ".join(
        str(p.get("message") or p.get("reason") or p) for p in problems if p not in paused
    )
    where = f"running at {server.host}:{server.port}, not ready"
    pause = str(paused[0].get("message") or "delivery is paused") if paused else None
    return (f"{where}: {said}" if said else where) + warnings, pause


def collect(settings: Settings, store: Store, *, now: float | None = None) -> Status:
    """Read the store (and the service) into a ``Status``."""
    at = time.time() if now is None else now
    found = []
    for name, seconds in windows(settings.store):
        counts = store.counts(since=at - seconds)
        found.append(Window(name, counts, _health(counts)))
    backlog = store.counts()
    service, paused = service_state(settings)
    if paused is None and isinstance(store, FleetControl):
        fleet = store.paused_until(now=at)
        if fleet is not None:
            until, reason = fleet
            paused = f"the whole fleet waits {until - at:.0f} s more ({reason})"
    if paused is None:
        waiting = {r: n for (s, r), n in backlog.by_reason.items() if s == "queued"}
        held = sum(n for r, n in waiting.items() if r in PAUSE_REASONS)
        if held:
            paused = (
                f"{held} queued event(s) wait because Meta refused the requests "
                "(the access token, a permission or the endpoint: the delivering process's "
                "log, and serve's /readyz, give Meta's message)"
            )
    return Status(tuple(found), backlog, paused, service, settings.server.max_backlog)


def fix_for(reason: str) -> str:
    """What to do about a stored reason; ``meta_<code>_<subcode>`` reasons carry Meta's codes.
    Where advice points at an event's message, it names the command that shows it (status
    shows none: it said "see the example message")."""
    example = f"`leadrelay dead-letters list --reason {reason}`"
    if reason.startswith("meta_"):
        parts = reason.split("_")[1:]
        if parts and all(p.isdigit() for p in parts):
            subcode = int(parts[1]) if len(parts) > 1 else None
            return what_to_fix(reason, int(parts[0]), subcode, example=example)
    return what_to_fix(reason, example=example)


def age(seconds: float) -> str:
    """A duration, rounded to what matters."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def render(status: Status, console: Console, *, now: float | None = None) -> None:
    """Print the status tables."""
    at = time.time() if now is None else now
    table = Table(title="Event Delivery", header_style="bold")
    table.add_column("outcome")
    for w in status.windows:
        table.add_column(w.name, justify="right")
    for state in ("delivered", "filtered", "rejected", "expired", "dead"):
        table.add_row(state, *(str(w.counts.by_state.get(state, 0)) for w in status.windows))
    table.add_row("health", *(w.health.label for w in status.windows), style="bold")
    console.print(table)
    week = status.windows[-1]
    console.print(f"Health (last week): {week.health.text}")
    b = status.backlog
    oldest = "-" if b.oldest_queued_at is None else age(max(0.0, at - b.oldest_queued_at))
    console.print(f"Queue: {b.queued} queued, {b.in_flight} in flight, oldest waiting {oldest}")
    # Those an outage left waiting for their next try: they are neither delivered nor failed,
    # and health stayed "sunny" through 4 minutes of 500s (queued rows are not in "Why").
    retrying = sorted(
        ((n, r) for (s, r), n in b.by_reason.items() if s == "queued" and r not in _NOT_TRIED),
        reverse=True,
    )
    if retrying:
        said = ", ".join(f"{n} {reason}" for n, reason in retrying)
        console.print(
            f"[bold yellow]Waiting to be tried again:[/bold yellow] {escape(said)} (queued after "
            "requests that failed; a running serve or worker tries them again by itself)",
            highlight=False,
        )
    limit = status.max_backlog
    if limit is not None and b.queued + b.in_flight > limit:
        console.print(
            f"[bold red]Backlog full:[/bold red] over server.max_backlog ({limit}): serve refuses "
            "new events with 503 (Retry-After) until fewer wait",
            highlight=False,
        )
    console.print(f"Service: {escape(status.service)}", highlight=False)
    if status.paused:
        console.print(
            f"[bold red]Delivery paused:[/bold red] {escape(status.paused)}", highlight=False
        )
    reasons = sorted(
        ((s, r, n) for (s, r), n in week.counts.by_reason.items() if s != "queued"),
        key=lambda x: -x[2],
    )
    if reasons:
        why = Table(title="Why (last week)", header_style="bold")
        for col in ("outcome", "reason", "events", "what to do"):
            why.add_column(col, overflow="fold")
        for state, reason, n in reasons[:15]:
            why.add_row(state, reason, str(n), escape(fix_for(reason)))
        console.print(why)
