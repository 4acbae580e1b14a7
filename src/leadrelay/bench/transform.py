"""Transform: ``leadrelay send --dry-run`` against Meta's SDK doing the same work, same events.

Both run as whole processes (start-up included) pinned to the same core, one after the other;
each one's output is piped back and its server events counted, so a run that dropped events
cannot look fast. ``leadrelay`` then runs again on ``workers`` cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from leadrelay.bench import sdk_baseline
from leadrelay.bench.events import EventCounts, config_text, write_events
from leadrelay.bench.measure import Counter, Run, measure, ratio, usable_cores

EVENTS_FILE: Final = "transform.ndjson"
"""The transform's events, in the bench's folder (the SDK's pace reads them too: ``pace``)."""

# One per server event in leadrelay's output (orjson writes no spaces; the SDK's json.dumps
# does: sdk_baseline.OUTPUT_MARK).
_LEADRELAY_MARK = b'"action_source":"system_generated"'


def run_transform(
    folder: Path, events: int, workers: int, now: float, *, repeat: int = 1
) -> dict[str, Any]:
    """Generate ``events`` events in ``folder``, measure the programs ``repeat`` times in turn
    (so that a busy moment hurts them alike), keep each one's best run, return the figures."""
    path = folder / EVENTS_FILE
    expected = write_events(path, events, now=now)
    config = folder / "transform.toml"
    config.write_text(config_text(), encoding="utf-8")
    cores = usable_cores()
    jobs = min(workers, len(cores))
    programs: dict[str, tuple[str, list[str], list[int], bytes]] = {
        "leadrelay": (
            "leadrelay send --dry-run",
            [*_LEADRELAY, str(path), "--config", str(config), "--dry-run"],
            cores[:1],
            _LEADRELAY_MARK,
        ),
    }
    if jobs > 1:
        programs["leadrelay_workers"] = _with_jobs(path, config, jobs, cores[:jobs])
    problem = sdk_baseline.missing()
    if problem is None:
        programs["sdk"] = (
            "facebook-business SDK",
            sdk_baseline.command(path),
            cores[:1],
            sdk_baseline.OUTPUT_MARK,
        )
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeat):
        for key, (name, command, pinned, mark) in programs.items():
            counter = Counter(mark)
            run = measure(command, cores=pinned, consume=counter)
            figures = _figures(run, counter, expected, name)
            if key == "sdk":
                figures["counts"] = _last_json_line(run.stderr)
            rates = [*best.get(key, {}).get("runs", []), figures["events_per_s"]]
            if key not in best or (figures["events_per_s"] or 0) > (best[key]["events_per_s"] or 0):
                best[key] = figures
            best[key]["runs"] = rates
    result: dict[str, Any] = {
        "events": events,
        "expected": expected.as_dict(),
        "repeat": repeat,
        "cores_used": {"one": cores[0], "workers": cores[:jobs]},
        **best,
    }
    if "leadrelay_workers" in result:
        # The workers are not this process's children (they come from a fork server): only the
        # main process's CPU time and memory are known.
        result["leadrelay_workers"].update(
            workers=jobs, events_per_cpu_s=None, note="cpu_s and peak_rss_mb: main process only"
        )
    if problem is None:
        sdk = result["sdk"]["events_per_s"]
        result["ratio"] = ratio(result["leadrelay"]["events_per_s"], sdk)
        if "leadrelay_workers" in result:
            result["ratio_workers"] = ratio(result["leadrelay_workers"]["events_per_s"], sdk)
    else:
        result["sdk"] = {"available": False, "reason": problem}
        result["ratio"] = None
        result["ratio_unavailable"] = problem
    return result


_LEADRELAY = [sys.executable, "-m", "leadrelay", "send"]


def _with_jobs(
    path: Path, config: Path, jobs: int, cores: list[int]
) -> tuple[str, list[str], list[int], bytes]:
    if _send_has_jobs():
        command = [*_LEADRELAY, str(path), "--config", str(config), "--dry-run"]
        return (
            f"leadrelay send --dry-run --jobs {jobs}",
            [*command, "--jobs", str(jobs)],
            cores,
            _LEADRELAY_MARK,
        )
    # Until ``send`` has --jobs: the same library calls, see leadrelay.bench.dryrun.
    command = [sys.executable, "-m", "leadrelay.bench.dryrun", str(path), "--config", str(config)]
    return (
        f"leadrelay.bench.dryrun --jobs {jobs}",
        [*command, "--jobs", str(jobs)],
        cores,
        _LEADRELAY_MARK,
    )


def _send_has_jobs() -> bool:
    shown = subprocess.run(
        [sys.executable, "-m", "leadrelay", "send", "--help"],
        capture_output=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return b"--jobs" in shown.stdout


def _figures(run: Run, counted: Counter, expected: EventCounts, command: str) -> dict[str, Any]:
    output_events = counted.count
    figures: dict[str, Any] = {
        "command": command,
        "events_per_s": round(expected.total / run.wall_s) if run.wall_s > 0 else None,
        "events_per_cpu_s": round(expected.total / run.cpu_s) if run.cpu_s > 0 else None,
        "wall_s": round(run.wall_s, 3),
        "cpu_s": round(run.cpu_s, 3),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "output_events": output_events,
        "output_mb": round(counted.bytes / 2**20, 1),
        "returncode": run.returncode,
        # Every sendable event is in the output, and the process ended as send does (2: the bad
        # events were rejected, as intended).
        "ok": output_events == expected.sendable and run.returncode in (0, 2),
    }
    if not figures["ok"]:
        figures["stderr_tail"] = run.stderr[-2000:]
    return figures


def _last_json_line(text: str) -> Any:
    """The SDK baseline's counts (its last line of stderr), or None."""
    lines = text.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
