"""End to end: ``leadrelay send`` of a large file to the sandbox, every outcome recorded.

The sandbox (Meta's stand-in) runs in its own process on another core than ``send``, so the
figure is leadrelay's: reading, mapping, the durable store, batching and HTTP. Afterwards the
run is checked, not just timed: the sandbox must have accepted every sendable event and the
store must hold one outcome per input event (delivered, rejected or filtered, by reason).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from leadrelay.bench.events import config_text, write_events
from leadrelay.bench.measure import Counter, measure, usable_cores
from leadrelay.bench.services import start_sandbox, stop
from leadrelay.config import load_config
from leadrelay.delivery.wiring import open_store


def run_e2e(
    folder: Path,
    events: int,
    now: float,
    *,
    random_ids: bool = False,
    slow_ms: int = 0,
    report: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Generate ``events`` events (with UUIDs for event ids with ``random_ids``), send them to a
    fresh sandbox (answering ``slow_ms`` later than it can), with a ``--report`` if ``report``
    (checked: a row per event, each saying where it was read), return the checked figures.
    With ``jobs`` above 1, ``send --jobs N`` runs on every usable core (mapping processes
    included), the sandbox's among them; else on the first core alone.

    A sandbox as slow as Meta makes delivery slower than reading: the events read wait, in
    memory up to send's limit and in the store beyond it, and so does each one's report row
    (where it was read). That is where memory peaks."""
    name = "e2e" + ("-random-ids" if random_ids else "") + (f"-slow-{slow_ms}" if slow_ms else "")
    name += f"-jobs-{jobs}" if jobs > 1 else ""
    path = folder / f"{name}.ndjson"
    expected = write_events(path, events, now=now, random_ids=random_ids)
    cores = usable_cores()
    send_core, sandbox_core = cores[0], cores[-1]
    sandbox, url = start_sandbox(folder, sandbox_core, slow_ms=slow_ms)
    try:
        config = folder / f"{name}.toml"
        data_dir = folder / f"{name}-data"
        shutil.rmtree(data_dir, ignore_errors=True)  # a --workdir used before: a fresh store
        config.write_text(
            config_text(url) + f'\n[server]\ndata_dir = "{data_dir.as_posix()}"\n',
            encoding="utf-8",
        )
        report_file = folder / f"{name}-report.ndjson"
        command = [sys.executable, "-m", "leadrelay", "send", str(path), "--config", str(config)]
        command += ["--jobs", str(jobs)] if jobs > 1 else []
        run = measure(
            [*command, "--report", str(report_file)] if report else command,
            cores=cores if jobs > 1 else [send_core],
            consume=Counter(b"\n"),
        )
        received = httpx.get(f"{url}/_sandbox/received?limit=0", timeout=30).json()
    finally:
        sandbox_end = stop(sandbox)
    by_state = _stored_outcomes(config)
    accounted = sum(by_state.values())
    delivered = by_state.get("delivered", 0)
    result: dict[str, Any] = {
        "events": events,
        "event_ids": "random (UUID)" if random_ids else "in order (bench-N)",
        "sandbox_slow_ms": slow_ms,
        "expected": expected.as_dict(),
        "jobs": jobs,
        "cores_used": {"send": cores if jobs > 1 else send_core, "sandbox": sandbox_core},
        "events_per_s": round(events / run.wall_s) if run.wall_s > 0 else None,
        "wall_s": round(run.wall_s, 3),
        "cpu_s": round(run.cpu_s, 3),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "returncode": run.returncode,
        "sandbox_received": received.get("events_received"),
        # Its CPU, start-up included: what Meta's stand-in needs must stay well below send's.
        "sandbox_cpu_s": round(sandbox_end.cpu_s, 3),
        "sandbox_errors": received.get("errors_by_code"),
        "stored_outcomes": by_state,
        # Every event has exactly one recorded outcome, and Meta (the sandbox) got every
        # sendable one exactly once.
        "ok": (
            accounted == events
            and delivered == expected.sendable
            and received.get("events_received") == expected.sendable
            and run.returncode in (0, 2)
        ),
    }
    if report:
        rows, placeless = _report_rows(report_file)
        result.update(report_rows=rows, report_rows_without_where=placeless)
        result["ok"] = result["ok"] and rows == events and placeless == 0
        report_file.unlink()
    if not result["ok"]:
        result["stderr_tail"] = run.stderr[-2000:]
    return result


def _report_rows(path: Path) -> tuple[int, int]:
    """How many rows the report has, and how many of them do not say where their event was."""
    rows = placeless = 0
    with path.open("rb") as lines:
        for line in lines:
            rows += 1
            placeless += orjson.loads(line)["where"] is None
    return rows, placeless


def _stored_outcomes(config: Path) -> dict[str, int]:
    store = open_store(load_config(config), create=False)
    try:
        return {state: n for state, n in store.counts().by_state.items() if n}
    finally:
        store.close()
