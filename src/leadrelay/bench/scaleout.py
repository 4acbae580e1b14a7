"""Scale-out: delivery from a shared Redis queue by one ``leadrelay worker``, then by two.

A real redis-server and the sandbox (Meta's stand-in) share the last core. For each run the
queue is emptied (FLUSHDB) and filled with the same generated events through one
``serve --no-worker`` intake (not timed); then the workers start, pinned one per core, and the
clock runs until the sandbox has accepted every sendable event. A run checks out only if the
sandbox accepted each sendable event exactly once (distinct event ids, when it kept them all)
and the store records every one as delivered. The variant with a slow sandbox (``--slow-ms``)
is closer to Meta, whose answers take hundreds of milliseconds: there the workers mostly wait.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import httpx
import redis

from leadrelay.bench.events import config_text, expected_counts
from leadrelay.bench.intake import bodies, post_all
from leadrelay.bench.measure import usable_cores
from leadrelay.bench.services import (
    INTAKE_TOKEN,
    REDIS_HINT,
    free_port,
    launch,
    redis_binary,
    sandbox_received,
    serve_command,
    start_redis,
    start_sandbox,
    stop,
    wait_for_port,
)
from leadrelay.config import load_config
from leadrelay.delivery.wiring import open_store

SANDBOX_KEEPS: Final = 100_000  # events the sandbox keeps for /_sandbox/received
_POLL_S: Final = 0.02
_STALL_S: Final = 60.0  # no progress this long: the run is given up (and does not check out)


def run_scaleout(
    folder: Path, events: int, now: float, slow_ms: Sequence[int] = (0,)
) -> dict[str, Any]:
    """Deliver ``events`` events with 1 then 2 workers, per sandbox latency in ``slow_ms``."""
    binary = redis_binary()
    if binary is None:
        return {"available": False, "reason": REDIS_HINT, "events": events}
    cores = usable_cores()
    expected = expected_counts(events)
    payloads = bodies(events, 1000, now)
    server, url = start_redis(binary, folder, cores[-1])
    variants: list[dict[str, Any]] = []
    try:
        for slow in slow_ms:
            sandbox, graph_url = start_sandbox(folder, cores[-1], slow_ms=slow)
            try:
                config = _config(folder, graph_url, url, slow)
                runs = {
                    str(n): _deliver(config, url, graph_url, payloads, expected.sendable, n, cores)
                    for n in (1, 2)
                }
            finally:
                stop(sandbox)
            one, two = runs["1"].get("events_per_s"), runs["2"].get("events_per_s")
            variants.append(
                {
                    "sandbox_slow_ms": slow,
                    "workers": runs,
                    "ratio": round(two / one, 2) if one and two else None,
                }
            )
    finally:
        stop(server, signal.SIGKILL)  # nothing it holds is wanted after the bench
    return {
        "available": True,
        "events": events,
        "expected": expected.as_dict(),
        "cores_used": {"workers": cores[:2], "redis_and_sandbox": cores[-1]},
        "variants": variants,
        "ok": all(run["ok"] for v in variants for run in v["workers"].values()),
    }


def _config(folder: Path, graph_url: str, redis_url: str, slow: int) -> Path:
    config = folder / f"scaleout-{slow}ms.toml"
    port = free_port()
    config.write_text(
        config_text(graph_url)
        + f'\n[server]\ndata_dir = "{(folder / "scaleout-data").as_posix()}"\nport = {port}\n'
        + f'intake_token = "{INTAKE_TOKEN}"\n'
        + f'\n[queue]\nurl = "{redis_url}"\nkey_prefix = "lr:bench"\n',
        encoding="utf-8",
    )
    return config


def _fill(config: Path, redis_url: str, payloads: Sequence[bytes], core: int) -> int:
    """Empty the queue, then post every body through an intake; the events accepted."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    port = load_config(config).server.port
    log = config.with_suffix(".intake.log")
    service = launch(serve_command(config), cores=[core], log=log)
    try:
        wait_for_port(port, service, "leadrelay serve", log)
        posted = post_all(f"http://127.0.0.1:{port}", payloads)
    finally:
        stop(service)
    return posted.accepted


def _deliver(
    config: Path,
    redis_url: str,
    graph_url: str,
    payloads: Sequence[bytes],
    sendable: int,
    workers: int,
    cores: Sequence[int],
) -> dict[str, Any]:
    accepted = _fill(config, redis_url, payloads, cores[0])
    httpx.post(f"{graph_url}/_sandbox/reset", timeout=30).raise_for_status()
    command = [sys.executable, "-m", "leadrelay", "worker", "--config", str(config)]
    log = config.with_suffix(f".workers-{workers}.log")
    began = time.perf_counter()
    processes = [launch(command, cores=[cores[n % len(cores)]], log=log) for n in range(workers)]
    try:
        received, wall = _wait_received(graph_url, sendable, processes, began)
        delivered = _wait_delivered(config, sendable)
        # A worker still starting when the others finished would die of the SIGTERM before
        # it handles it: stop them all once they run.
        _wait_started(log, processes)
    finally:
        ended = [stop(p) for p in processes]
    distinct = _distinct_received(graph_url, received)
    result: dict[str, Any] = {
        "workers": workers,
        "accepted_at_intake": accepted,
        "events_per_s": round(received / wall) if wall > 0 else None,
        "wall_s": round(wall, 3),
        "cpu_s": round(sum(e.cpu_s for e in ended), 3),
        "peak_rss_mb": round(max(e.peak_rss_mb for e in ended), 1),
        "sandbox_received": received,
        "distinct_event_ids": distinct,
        "stored_delivered": delivered,
        # Every sendable event reached Meta once (no event id twice) and is recorded delivered.
        "ok": (
            received == sendable
            and delivered == sendable
            and distinct in (None, sendable)
            and all(e.returncode == 0 for e in ended)
        ),
    }
    if not result["ok"]:
        result["log_tail"] = log.read_text("utf-8", "replace")[-2000:]
    return result


def _wait_received(
    graph_url: str, sendable: int, processes: Sequence[subprocess.Popen[bytes]], began: float
) -> tuple[int, float]:
    """Poll the sandbox until it has ``sendable`` events (or nothing moves for a minute)."""
    received, moved = 0, time.perf_counter()
    while True:
        now = time.perf_counter()
        count = sandbox_received(graph_url)
        if count != received:
            received, moved = count, now
        if received >= sendable:
            return received, time.perf_counter() - began
        if now - moved > _STALL_S or all(p.poll() is not None for p in processes):
            return received, now - began
        time.sleep(_POLL_S)


def _wait_started(log: Path, processes: Sequence[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(p.poll() is None for p in processes):
        if log.read_bytes().count(b"worker started") >= len(processes):
            return
        time.sleep(_POLL_S)


def _wait_delivered(config: Path, sendable: int) -> int:
    """The store's delivered count, once it reaches ``sendable`` (the worker records a batch
    just after Meta's answer) or after a few seconds."""
    store = open_store(load_config(config), create=False)
    try:
        deadline = time.monotonic() + 10
        while True:
            delivered = store.counts().by_state.get("delivered", 0)
            if delivered >= sendable or time.monotonic() > deadline:
                return delivered
            time.sleep(_POLL_S)
    finally:
        store.close()


def _distinct_received(graph_url: str, received: int) -> int | None:
    """Distinct event ids among the events the sandbox accepted (None: it did not keep all)."""
    if received > SANDBOX_KEEPS:
        return None
    with contextlib.suppress(httpx.HTTPError):
        answer = httpx.get(f"{graph_url}/_sandbox/received?limit={received}", timeout=120)
        return len({event.get("event_id") for event in answer.json()["events"]})
    return None
