"""Intake: ``leadrelay serve --no-worker`` taking events over HTTP, in batches of 100 and 1000.

The service runs on one core with the SQLite store in a fresh data_dir; eight concurrent clients
post pre-encoded JSON arrays of generated events from the harness, on another core. The figure
is accepted events (from the 202 answers) per second of posting, with the p50 and p99 latency of
a 202. A run checks out only if every request was answered 202, the answers accepted every event
and the store holds exactly the events posted (queued, rejected or filtered).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from leadrelay.bench.events import config_text, expected_counts, generate_events
from leadrelay.bench.measure import can_pin, usable_cores
from leadrelay.bench.services import (
    INTAKE_TOKEN,
    cpu_seconds,
    free_port,
    launch,
    serve_command,
    stop,
    wait_for_port,
)
from leadrelay.config import load_config
from leadrelay.delivery.wiring import open_store

BATCH_SIZES: Final = (100, 1000)
CLIENTS: Final = 8
_HEADERS: Final = {"Authorization": f"Bearer {INTAKE_TOKEN}", "Content-Type": "application/json"}


def bodies(events: int, batch_size: int, now: float) -> list[bytes]:
    """The generated events as JSON array bodies of ``batch_size`` events (the last may be
    smaller)."""
    source = generate_events(events, now=now)
    out: list[bytes] = []
    while batch := list(itertools.islice(source, batch_size)):
        out.append(orjson.dumps(batch))
    return out


@dataclass(slots=True)
class Posted:
    """What posting a list of bodies gave: wall time, answers and per-request latency."""

    wall_s: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def post_all(
    url: str, payloads: Sequence[bytes], *, clients: int = CLIENTS, cores: Sequence[int] = ()
) -> Posted:
    """POST every body to ``{url}/v1/events`` from ``clients`` threads at once.

    The threads are pinned to ``cores`` (a thread inherits its creator's affinity, and the
    harness's own is restored afterwards).
    """
    posted = Posted()
    lock = threading.Lock()
    work: Iterator[bytes] = iter(payloads)

    def client() -> None:
        with httpx.Client(timeout=120.0) as http:
            while True:
                with lock:
                    body = next(work, None)
                if body is None:
                    return
                began = time.perf_counter()
                try:
                    answer = http.post(f"{url}/v1/events", content=body, headers=_HEADERS)
                except httpx.HTTPError as exc:
                    with lock:
                        posted.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                took = time.perf_counter() - began
                accepted = answer.json().get("accepted", 0) if answer.status_code == 202 else 0
                with lock:
                    posted.statuses[answer.status_code] += 1
                    posted.latencies_s.append(took)
                    posted.accepted += accepted
                    if answer.status_code != 202 and len(posted.errors) < 5:
                        posted.errors.append(f"HTTP {answer.status_code}: {answer.text[:300]}")

    pin = bool(cores) and can_pin()
    before = os.sched_getaffinity(0) if pin else set()
    if pin:
        os.sched_setaffinity(0, set(cores))
    try:
        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    finally:
        if pin:
            os.sched_setaffinity(0, before)
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    posted.wall_s = time.perf_counter() - began
    return posted


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))  # nearest rank
    return ordered[min(rank, len(ordered)) - 1]


def run_intake(folder: Path, events: int, now: float) -> dict[str, Any]:
    """Post ``events`` events to a fresh ``serve --no-worker`` per batch size; the figures."""
    cores = usable_cores()
    serve_core, client_core = cores[0], cores[-1]
    runs = {
        str(size): _one_size(folder, events, size, now, serve_core, client_core)
        for size in BATCH_SIZES
    }
    return {
        "events": events,
        "clients": CLIENTS,
        "expected": expected_counts(events).as_dict(),
        "cores_used": {"serve": serve_core, "clients": client_core},
        "batches": runs,
        "ok": all(run["ok"] for run in runs.values()),
    }


def _one_size(
    folder: Path, events: int, size: int, now: float, serve_core: int, client_core: int
) -> dict[str, Any]:
    payloads = bodies(events, size, now)
    port = free_port()
    data_dir = folder / f"intake-{size}-data"
    config = folder / f"intake-{size}.toml"
    config.write_text(
        config_text()
        + f'\n[server]\ndata_dir = "{data_dir.as_posix()}"\nport = {port}\n'
        + f'intake_token = "{INTAKE_TOKEN}"\n',
        encoding="utf-8",
    )
    log = folder / f"intake-{size}.log"
    service = launch(serve_command(config), cores=[serve_core], log=log)
    cpu_before = cpu_after = None
    try:
        wait_for_port(port, service, "leadrelay serve", log)
        cpu_before = cpu_seconds(service.pid)
        posted = post_all(f"http://127.0.0.1:{port}", payloads, cores=[client_core])
        cpu_after = cpu_seconds(service.pid)
    finally:
        ended = stop(service)
    stored = _stored(config)
    result: dict[str, Any] = {
        "batch_size": size,
        "requests": len(payloads),
        "answers": {str(k): v for k, v in sorted(posted.statuses.items())},
        "accepted": posted.accepted,
        "events_per_s": round(posted.accepted / posted.wall_s) if posted.wall_s > 0 else None,
        "wall_s": round(posted.wall_s, 3),
        "latency_ms": {
            "p50": round(percentile(posted.latencies_s, 0.50) * 1000, 1),
            "p99": round(percentile(posted.latencies_s, 0.99) * 1000, 1),
        },
        "serve_cpu_s": round(ended.cpu_s, 3),
        # The serve core's cost per accepted event while posting: start-up and shutdown left out.
        "serve_cpu_us_per_event": (
            round((cpu_after - cpu_before) / posted.accepted * 1e6, 1)
            if cpu_before is not None and cpu_after is not None and posted.accepted
            else None
        ),
        "peak_rss_mb": round(ended.peak_rss_mb, 1),
        "serve_returncode": ended.returncode,
        "stored": sum(stored.values()),
        "stored_outcomes": stored,
        # Every request taken, every event accepted, and exactly those events in the store.
        "ok": (
            posted.statuses.get(202, 0) == len(payloads)
            and posted.accepted == events
            and sum(stored.values()) == events
            and ended.returncode == 0
        ),
    }
    if not result["ok"]:
        result["errors"] = posted.errors[:5]
        result["log_tail"] = log.read_text("utf-8", "replace")[-2000:]
    return result


def _stored(config: Path) -> dict[str, int]:
    store = open_store(load_config(config), create=False)
    try:
        return {state: n for state, n in store.counts().by_state.items() if n}
    finally:
        store.close()
