"""What the sandbox has seen, and the faults it will play next. Shared by the app and tests."""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from leadrelay.sandbox.options import Fault, SandboxOptions, parse_fault

RECENT_REQUESTS = 20


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One answered (or dropped) events request, as shown on the page and in the log.

    ``status`` is 0 for a dropped connection; ``events`` is ``None`` when the request was not
    read as far as its ``data`` (faults, auth errors); ``error`` is an ``errors_by_code`` key.
    The token is deliberately not part of it.
    """

    at: float
    pixel_id: str
    status: int
    events: int | None
    error: str | None


class SandboxState:
    """Counters, accepted events and the fault script of one sandbox app.

    Every method takes one lock, so tests may read while the server thread writes. ``requests``
    counts requests to the events endpoint as they arrive, and those to any other path (answered
    with an error, as Meta does): so requests are the successes and ``errors_by_code`` together,
    once each has finished. ``events_received`` counts accepted
    events; ``errors_by_code`` counts error answers by ``"code/subcode"`` (``"100/2804036"``,
    ``"190"``) or by fault (``"http_500"``, ``"http_503"``, ``"dropped"``).
    """

    def __init__(self, options: SandboxOptions) -> None:
        self._options = options
        self._lock = threading.Lock()
        self.log: Callable[[RequestRecord], None] | None = None
        """Called with every finished request (``serve_forever`` prints them)."""
        self._reset()

    def _reset(self) -> None:
        self.requests = 0
        self.events_received = 0
        self.errors_by_code: Counter[str] = Counter()
        # Events accepted per test_event_code sent with them: Meta shows those in Test Events only.
        self.test_event_codes: Counter[str] = Counter()
        # Accepted events by request, encoded: a hundred thousand events kept as objects would be
        # scanned by every full garbage collection (it doubled the sandbox's CPU per event).
        self._received: deque[tuple[int, bytes]] = deque()
        self._kept = 0  # events in _received; may exceed keep_events by less than one request
        self._recent: deque[RequestRecord] = deque(maxlen=RECENT_REQUESTS)
        self._script: deque[Fault] = deque()
        self._rng = random.Random(self._options.seed)

    def received(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Accepted events in arrival order: the last ``keep_events`` of them, or only the last
        ``limit`` (0: none). Only the requests that hold those are decoded, so a poll that asks
        for counts alone costs nothing however many events are kept."""
        keep = self._options.keep_events
        wanted = keep if limit is None else min(limit, keep)
        with self._lock:
            chunks: list[bytes] = []
            have = 0
            for count, blob in reversed(self._received):
                if have >= wanted:
                    break
                chunks.append(blob)
                have += count
        events: list[dict[str, Any]] = []
        for blob in reversed(chunks):
            events.extend(orjson.loads(blob))
        return events[max(0, len(events) - wanted) :] if wanted else []

    def recent_requests(self) -> list[RequestRecord]:
        """The last 20 finished requests, oldest first."""
        with self._lock:
            return list(self._recent)

    def script(self, *faults: str) -> None:
        """Queue faults, consumed one per request before any random fault is drawn.

        Valid: ``"ok"``, ``"http_500"``, ``"http_503"``, ``"throttle"`` (code 4) or
        ``"throttle:<4|17|32|613|80004>"``, ``"drop"``, ``"slow:<ms>"``, ``"auth"`` (190),
        ``"permission"`` (200) and ``"timeout"`` (30 s, then processed and answered normally, as
        Meta may have accepted a batch whose answer the client gave up on). All are checked
        before any is queued.
        """
        parsed = [parse_fault(text) for text in faults]
        with self._lock:
            self._script.extend(parsed)

    def reset(self) -> None:
        """Forget everything: counters, events, recent requests, script; reseed the fault RNG."""
        with self._lock:
            self._reset()

    def begin(self) -> Fault | None:
        """Count an arriving events request and return the fault to play on it, if any.

        Used by the app. A scripted fault wins; otherwise one random draw decides, so the same
        seed and the same request order give the same faults.
        """
        opts = self._options
        with self._lock:
            self.requests += 1
            if self._script:
                return self._script.popleft()
            if not (opts.drop_rate or opts.fail_rate or opts.throttle_rate):
                return None
            draw = self._rng.random()
        if draw < opts.drop_rate:
            return Fault("drop")
        draw -= opts.drop_rate
        if draw < opts.fail_rate:
            return Fault("http_500")
        if draw - opts.fail_rate < opts.throttle_rate:
            return Fault("throttle", 4)
        return None

    def stray(self, record: RequestRecord) -> None:
        """Count a request to another path (or with another method) and its error answer."""
        with self._lock:
            self.requests += 1
        self.finish(record, None, None)

    def _keep(self, accepted: list[dict[str, Any]]) -> None:
        keep = self._options.keep_events
        if not keep or not accepted:
            return
        # Parsed from JSON, so they encode again; a value that does not is not worth failing on.
        try:
            blob = orjson.dumps(accepted)
        except orjson.JSONEncodeError:
            return
        self._received.append((len(accepted), blob))
        self._kept += len(accepted)
        while self._kept - self._received[0][0] >= keep:
            self._kept -= self._received.popleft()[0]

    def finish(
        self,
        record: RequestRecord,
        accepted: list[dict[str, Any]] | None = None,
        test_event_code: str | None = None,
    ) -> None:
        """Record a finished request and, if it succeeded, its events (sent with
        ``test_event_code``, if any). Used by the app."""
        with self._lock:
            if accepted is not None:
                self.events_received += len(accepted)
                self._keep(accepted)
                if test_event_code is not None:
                    self.test_event_codes[test_event_code] += len(accepted)
            if record.error is not None:
                self.errors_by_code[record.error] += 1
            self._recent.append(record)
        if self.log is not None:
            self.log(record)
