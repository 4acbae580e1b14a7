"""The SDK's pace around a measurement: what makes an absolute rate comparable from run to run.

The issue states two targets as absolute rates, end to end 40,000 events/s and intake 20,000,
on machines where Meta's SDK turns about 10,000 events/s into request bodies on one core. A
shared virtual machine's speed drifts by a quarter within minutes, so an absolute rate says as
much about the minute it was taken in as about leadrelay. So the SDK (the transform's baseline)
runs right before and right after such a measurement, on the core it runs on, and the rate is
also given as a ratio to the SDK's mean pace: ``vs_sdk``. On the issue's machines the targets
are 4.0x (end to end) and 2.0x (intake).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from leadrelay.bench import sdk_baseline
from leadrelay.bench.events import write_events
from leadrelay.bench.measure import Counter, measure

PACE_EVENTS: Final = 200_000
"""Events of each SDK run: as many as the transform's, so its start-up (0.4 s) weighs the same."""


class Pace:
    """Runs the SDK on ``events`` generated events (made once, in ``folder``) pinned to ``core``."""

    def __init__(self, folder: Path, events: int, now: float, core: int) -> None:
        self._path = folder / "pace.ndjson"
        self.events = events
        self._now = now
        self._core = core
        self._sendable: int | None = None

    def once(self) -> float | None:
        """The SDK's events per second over the whole process, or None when it did not turn
        every sendable event into a server event (a failed run gives no pace)."""
        if self._sendable is None:
            self._sendable = write_events(self._path, self.events, now=self._now).sendable
        counter = Counter(sdk_baseline.OUTPUT_MARK)
        run = measure(sdk_baseline.command(self._path), cores=[self._core], consume=counter)
        if run.returncode != 0 or counter.count != self._sendable or run.wall_s <= 0:
            return None
        return self.events / run.wall_s


def around(
    pace: Pace | None, measurement: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``measurement()``'s figures, and the SDK's pace just before and after it: its events per
    second each time and their mean (``events_per_s``, None when a run failed). Without a
    ``pace`` the second says why there is none (``unavailable``)."""
    if pace is None:
        return measurement(), {"available": False, "reason": unavailable()}
    before = pace.once()
    figures = measurement()
    after = pace.once()
    mean = (before + after) / 2 if before and after else None
    return figures, {
        "events": pace.events,
        "before": _rounded(before),
        "after": _rounded(after),
        "events_per_s": _rounded(mean),
    }


def unavailable() -> str:
    """Why there is no SDK pace: the SDK is not installed, or it was not asked for."""
    return sdk_baseline.missing() or "not taken (--pace-events 0)"


def vs_sdk(rate: Any, sdk_pace: dict[str, Any]) -> float | None:
    """``rate`` (events per second) over the SDK's mean pace (see ``around``), or None."""
    pace = sdk_pace.get("events_per_s")
    return round(float(rate) / pace, 2) if rate and pace else None


def _rounded(rate: float | None) -> int | None:
    return None if rate is None else round(rate)
