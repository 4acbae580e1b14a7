"""Prometheus metrics of one ``leadrelay serve`` process, in a registry of its own.

Counters count what this process did since it started (events by outcome and reason, Graph API
requests and errors by Meta's code, intake requests by status) and a histogram times batches.
Queue depth, oldest queued age and the pause flag are gauges read from the store at scrape time,
so they are right after a restart too. Labels never hold event data or secrets.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from leadrelay.delivery.store import Counts
from leadrelay.meta.client import GraphResult

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The Prometheus text exposition format ``render`` produces."""

_BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)


class Metrics:
    """The service's metrics; implements the delivery worker's ``WorkerObserver``.

    Each instance has its own ``CollectorRegistry`` (not the process-global one), so several apps
    (tests) can live in one process.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "leadrelay_events",
            "Events by outcome (queued, filtered, rejected, delivered, expired, dead, requeued) "
            "and reason, since the process started",
            ["outcome", "reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "leadrelay_batch_duration_seconds",
            "Time from claiming a batch to recording its results, retries included",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_events = Counter(
            "leadrelay_batch_events", "Events in the batches delivered", registry=r
        )
        self.graph_requests = Counter(
            "leadrelay_graph_requests", "Requests made to the Graph API", ["result"], registry=r
        )
        self.graph_errors = Counter(
            "leadrelay_graph_errors",
            "Failed Graph API requests by Meta's code/subcode (or http_<status>, timeout, "
            "connection) and by what leadrelay made of it",
            ["code", "kind"],
            registry=r,
        )
        self.intake_requests = Counter(
            "leadrelay_intake_requests",
            "Requests to POST /v1/events by status",
            ["status"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "leadrelay_queue_depth", "Events waiting to be delivered", registry=r
        )
        self.in_flight = Gauge(
            "leadrelay_in_flight_events", "Events being delivered right now", registry=r
        )
        self.oldest_age = Gauge(
            "leadrelay_oldest_queued_age_seconds",
            "Age of the oldest event waiting to be delivered (0 when none)",
            registry=r,
        )
        self.paused = Gauge(
            "leadrelay_delivery_paused",
            "1 while delivery is paused because Meta refused the token or permission",
            registry=r,
        )
        # labels() takes a lock and checks its arguments on every call; intake counts a few
        # (outcome, reason) pairs and statuses per request, always the same ones.
        self._event_counters: dict[tuple[str, str], Counter] = {}
        self._intake_counters: dict[int, Counter] = {}

    def outcomes(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Count events by (outcome, reason)."""
        counters = self._event_counters
        for key, n in counts.items():
            if n:
                counter = counters.get(key)
                if counter is None:
                    counter = counters[key] = self.events.labels(*key)
                counter.inc(n)

    def batch_finished(self, seconds: float, size: int) -> None:
        """Time one batch."""
        self.batch_seconds.observe(seconds)
        self.batch_events.inc(size)

    def graph_request(self, result: GraphResult, events: int) -> None:
        """Count one Graph API request (the dispatcher's ``on_request`` hook)."""
        self.graph_requests.labels("ok" if result.ok else "error").inc()
        if result.error is not None:
            self.graph_errors.labels(result.error.label(), result.error.kind.value).inc()

    def intake(self, status: int) -> None:
        """Count one intake request by the status it was answered with."""
        counter = self._intake_counters.get(status)
        if counter is None:
            counter = self._intake_counters[status] = self.intake_requests.labels(str(status))
        counter.inc()

    def render(self, counts: Counts, now: float, *, paused: bool) -> bytes:
        """The exposition text, with the gauges set from ``counts`` first."""
        self.queue_depth.set(counts.queued)
        self.in_flight.set(counts.in_flight)
        oldest = counts.oldest_queued_at
        self.oldest_age.set(0.0 if oldest is None else max(0.0, now - oldest))
        self.paused.set(1 if paused else 0)
        return generate_latest(self.registry)
