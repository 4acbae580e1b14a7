"""The SDK's pace around a measurement: what makes an absolute rate comparable from run to run.

The issue states two targets as absolute rates, end to end 40,000 events/s and intake 20,000,
on machines where Meta's SDK turns about 10,000 events/s into request bodies on one core. This
VM's speed moves by up to half from hour to hour, so an absolute rate says as much about the
hour it was taken in as about leadrelay. So the SDK (the transform's baseline, run the same way:
whole process, same events, same core, its output counted) runs right before and right after
such a measurement, and the rate is also given over the faster of the two (``vs_sdk``), as the
transform keeps the SDK's best run. On the issue's machines the targets are 4.0x end to end and
2.0x for intake.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from leadrelay.bench import sdk_baseline
from leadrelay.bench.events import expected_counts, write_events
from leadrelay.bench.measure import Counter, measure, ratio

PACE_EVENTS: Final = 200_000
"""Events of each SDK run: as many as the transform's, so its start-up (0.4 s) weighs the same."""

UNSTEADY: Final = 0.1
"""The SDK's two runs this far apart (a share of the faster): the table says the ratio is loose."""

NOT_ASKED: Final = "not taken (--pace-events 0; --quick takes none)"
NOT_INSTALLED: Final = (
    f"the SDK is not installed, so there is no pace to compare with; {sdk_baseline.INSTALL}"
)


class Pace:
    """Runs the SDK on ``events`` generated events pinned to ``core``. The events are those of
    ``path``, written there first unless it holds them already (``written``)."""

    def __init__(self, path: Path, events: int, now: float, core: int, *, written: bool) -> None:
        self.path = path
        self.events = events
        self.core = core
        self._now = now
        self._written = written

    def once(self) -> float | str:
        """The SDK's events per second over the whole process; or, when it did not turn every
        sendable event into a server event, what went wrong."""
        if not self._written:
            write_events(self.path, self.events, now=self._now)
            self._written = True
        os.sync()  # what the measurement before left to write does not land in the SDK's run
        counter = Counter(sdk_baseline.OUTPUT_MARK)
        run = measure(sdk_baseline.command(self.path), cores=[self.core], consume=counter)
        sendable = expected_counts(self.events).sendable
        if run.returncode == 0 and counter.count == sendable and run.wall_s > 0:
            return self.events / run.wall_s
        return (
            f"exit code {run.returncode}, {counter.count:,} of {sendable:,} server events out; "
            f"stderr: {run.stderr[-300:].strip()}"
        )


def around(
    pace: Pace | str, measurement: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``measurement()``'s figures, and the SDK's pace just before and after it: its events per
    second each time and the faster (``events_per_s``; None when a run failed, ``failed`` then
    says how). Given why there is no ``pace`` instead, the second says that."""
    if isinstance(pace, str):
        return measurement(), {"available": False, "reason": pace}
    runs = [pace.once()]
    figures = measurement()
    runs.append(pace.once())
    rates = [run for run in runs if isinstance(run, float)]
    faster = max(rates) if len(rates) == 2 else None
    before, after = (run if isinstance(run, float) else None for run in runs)
    sdk_pace: dict[str, Any] = {
        "events": pace.events,
        "core": pace.core,
        "before": _rounded(before),
        "after": _rounded(after),
        "events_per_s": _rounded(faster),
        # A share of the faster run, the one the ratio is taken against.
        "moved": None if faster is None else round(abs(rates[0] - rates[1]) / faster, 3),
    }
    if failed := [run for run in runs if isinstance(run, str)]:
        sdk_pace["failed"] = failed
    return figures, sdk_pace


def with_ratio(figures: dict[str, Any], sdk_pace: dict[str, Any]) -> dict[str, Any]:
    """``figures`` with ``vs_sdk``: their events per second over the SDK's pace (or None)."""
    figures["vs_sdk"] = ratio(figures.get("events_per_s"), sdk_pace.get("events_per_s"))
    return figures


def _rounded(rate: float | None) -> int | None:
    return None if rate is None else round(rate)
