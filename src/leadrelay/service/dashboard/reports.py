"""The report behind the dashboard's Event Delivery and Funnel pages: of the events stored last,
made at most once a minute (``FRESH_S``) and shared by every view meanwhile.

``build_report`` reads every event it covers. Over the whole store that grew with it: 10-12 s of
the serving process's CPU per view at 205,000 events (intake's p99 went from 19 to 268 ms
meanwhile), minutes at the millions a 30-day retention keeps. The pages cover the ``LATEST``
events stored last, and say so when the store holds more; ``leadrelay report`` reads them all.
"""

from __future__ import annotations

import threading
from typing import Final

from leadrelay.config import Settings
from leadrelay.delivery.store import Store
from leadrelay.diagnostics import sources
from leadrelay.diagnostics.report import Report, build_report

LATEST: Final = 100_000
"""Events the pages' report covers at most: the ones stored last."""
FRESH_S: Final = 60.0
"""How long a report is shown before the next view makes a new one."""
WHOLE: Final = "the event store"
"""The report's ``source`` when it covers every stored event."""


class Reports:
    """The pages' report over ``store``: made anew when older than ``fresh_s`` or when the
    settings changed (a reload: the stages are the config's). Thread-safe: views that come
    while one is made wait for it rather than make their own."""

    def __init__(self, store: Store, *, latest: int = LATEST, fresh_s: float = FRESH_S) -> None:
        self._store = store
        self._latest = latest
        self._fresh_s = fresh_s
        self._lock = threading.Lock()
        self._made: tuple[Settings, float, Report] | None = None

    def get(self, settings: Settings, now: float) -> Report:
        """The report as of ``now``, or of less than ``fresh_s`` before (blocking: run it in a
        thread)."""
        with self._lock:
            made = self._made
            if made is not None and made[0] is settings and 0 <= now - made[1] < self._fresh_s:
                return made[2]
            report = self._make(settings, now)
            self._made = (settings, now, report)
            return report

    def _make(self, settings: Settings, now: float) -> Report:
        stored = self._store.last_id()
        source = WHOLE
        if stored > self._latest:
            source = f"the latest {self._latest:,} events of the event store"
        return build_report(
            sources.from_store(
                self._store,
                # what retention keeps of every outcome (see ``status.windows``)
                since=now - settings.store.retention_s,
                after_id=max(0, stored - self._latest),
            ),
            static=sources.static_stages(settings),
            now=now,
            from_store=True,
            source=source,
            pixel_id=settings.pixel_id,
        )
