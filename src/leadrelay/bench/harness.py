"""The benchmark run: options, the measurements in order, the table and the JSON file."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from leadrelay.bench import sdk_baseline
from leadrelay.bench.e2e import run_e2e
from leadrelay.bench.intake import run_intake
from leadrelay.bench.machine import load_average, machine_info
from leadrelay.bench.measure import usable_cores
from leadrelay.bench.pace import NOT_ASKED, NOT_INSTALLED, PACE_EVENTS, Pace, around, with_ratio
from leadrelay.bench.report import render, write_json
from leadrelay.bench.scaleout import run_scaleout
from leadrelay.bench.transform import EVENTS_FILE, run_transform

DEFAULT_JSON = Path("bench/results/latest.json")
DEFAULT_EVENTS = 200_000
DEFAULT_E2E_EVENTS = 1_000_000
QUICK_EVENTS = 2_000
QUICK_E2E_EVENTS = 5_000
DEFAULT_INTAKE_EVENTS = 200_000
QUICK_INTAKE_EVENTS = 2_000
DEFAULT_SCALEOUT_EVENTS = 100_000
QUICK_SCALEOUT_EVENTS = 2_000
DEFAULT_SLOW_MS = 300
# Events of the end-to-end run against a sandbox as slow as Meta, with a --report: its memory
# peaks once send's limit of payloads waiting in memory is reached (10,000), and the report's
# of rows waiting (50,000), and stays there whatever the input.
SLOW_E2E_EVENTS = 300_000


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to measure. ``only`` limits the run to one measurement."""

    events: int = DEFAULT_EVENTS
    e2e_events: int = DEFAULT_E2E_EVENTS
    intake_events: int = DEFAULT_INTAKE_EVENTS
    scaleout_events: int = DEFAULT_SCALEOUT_EVENTS
    slow_ms: int = DEFAULT_SLOW_MS  # the Meta-like end-to-end and scale-out runs; 0: not run
    # The SDK's runs before and after the end-to-end and intake runs (see ``pace``); 0: none.
    pace_events: int = PACE_EVENTS
    workers: int = 2
    repeat: int = 3  # transform runs per program; the best one counts
    json: Path | None = DEFAULT_JSON
    only: Literal["transform", "e2e", "intake", "scaleout"] | None = None
    workdir: Path | None = None  # kept afterwards when given; a temporary folder otherwise

    def __post_init__(self) -> None:
        if min(self.events, self.e2e_events, self.intake_events, self.scaleout_events) < 1:
            raise ValueError(
                "--events, --e2e-events, --intake-events and --scaleout-events must be at least 1"
            )
        if self.slow_ms < 0 or self.pace_events < 0:
            raise ValueError("--slow-ms and --pace-events must not be negative")
        if self.workers < 1 or self.repeat < 1:
            raise ValueError("--workers and --repeat must be at least 1")


def run(options: BenchOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the measurements; return the results (also written to ``options.json`` when set)."""
    console = console or Console(stderr=True)
    results: dict[str, Any] = {"machine": machine_info()}
    folder = options.workdir or Path(tempfile.mkdtemp(prefix="leadrelay-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    pace = _pace(options, folder, now)
    try:
        if options.only in (None, "transform"):
            console.print(
                f"transform: {options.events:,} events, leadrelay vs the SDK, "
                f"best of {options.repeat} ..."
            )
            results["transform"] = run_transform(
                folder, options.events, options.workers, now, repeat=options.repeat
            )
        if options.only in (None, "e2e"):
            console.print(f"end to end: {options.e2e_events:,} events to the sandbox{_paced(pace)}")
            results["e2e"] = _against_sdk(pace, lambda: run_e2e(folder, options.e2e_events, now))
            console.print(f"end to end again, with random (UUID) event ids{_paced(pace)}")
            results["e2e_random_ids"] = _against_sdk(
                pace, lambda: run_e2e(folder, options.e2e_events, now, random_ids=True)
            )
            if options.workers > 1 and len(usable_cores()) > 1:
                console.print(
                    f"end to end again, send --jobs {options.workers} on every core "
                    f"(the sandbox's too){_paced(pace)}"
                )
                results["e2e_jobs"] = _against_sdk(
                    pace,
                    lambda: run_e2e(folder, options.e2e_events, now, jobs=options.workers),
                )
            if options.slow_ms:
                slow_events = min(options.e2e_events, SLOW_E2E_EVENTS)
                console.print(
                    f"end to end again, {slow_events:,} events, the sandbox answering "
                    f"{options.slow_ms} ms later, with a --report (delivery slower than "
                    "reading: peak memory) ..."
                )
                results["e2e_slow"] = run_e2e(
                    folder, slow_events, now, slow_ms=options.slow_ms, report=True
                )
        if options.only in (None, "intake"):
            console.print(f"intake: {options.intake_events:,} events posted to serve{_paced(pace)}")
            intake, sdk_pace = around(pace, lambda: run_intake(folder, options.intake_events, now))
            intake["sdk_pace"] = sdk_pace
            for figures in intake["batches"].values():
                with_ratio(figures, sdk_pace)
            results["intake"] = intake
        if options.only in (None, "scaleout"):
            console.print(
                f"scale-out: {options.scaleout_events:,} events from Redis, 1 then 2 workers ..."
            )
            slow = (0, options.slow_ms) if options.slow_ms else (0,)
            results["scaleout"] = run_scaleout(folder, options.scaleout_events, now, slow)
    finally:
        if options.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    results["load_average_at_end"] = load_average()
    if options.json is not None:
        write_json(results, options.json)
    return results


def _pace(options: BenchOptions, folder: Path, now: float) -> Pace | str:
    """The SDK's runs around the end-to-end and intake runs, on the first core (where ``send``
    and ``serve`` run), or why there are none. On the transform's events when it has as many
    (the same generator, seed and time: the same file)."""
    if not options.pace_events:
        return NOT_ASKED
    if sdk_baseline.missing() is not None:
        return NOT_INSTALLED
    same = options.only in (None, "transform") and options.events == options.pace_events
    path = folder / (EVENTS_FILE if same else "pace.ndjson")
    return Pace(path, options.pace_events, now, usable_cores()[0], written=same)


def _paced(pace: Pace | str) -> str:
    """What the console says of the SDK's runs around a measurement."""
    if isinstance(pace, str):
        return " ..."
    return f", the SDK's pace ({pace.events:,} events) taken before and after ..."


def _against_sdk(pace: Pace | str, measurement: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measurement()``'s figures with the SDK's pace around it and ``vs_sdk`` (see ``pace``)."""
    figures, sdk_pace = around(pace, measurement)
    figures["sdk_pace"] = sdk_pace
    return with_ratio(figures, sdk_pace)


def parse_args(argv: list[str] | None) -> BenchOptions:
    """Options from the command line."""
    parser = argparse.ArgumentParser(
        prog="leadrelay bench",
        description="Measure leadrelay: transform throughput against Meta's SDK, end-to-end "
        "delivery to the local sandbox, HTTP intake, and delivery by 1 and 2 Redis workers. "
        "Prints a table and writes JSON.",
    )
    parser.add_argument("--events", type=int, help="events for the transform run (200,000)")
    parser.add_argument("--e2e-events", type=int, help="events for the end-to-end run (1,000,000)")
    parser.add_argument("--intake-events", type=int, help="events for the intake run (200,000)")
    parser.add_argument(
        "--scaleout-events", type=int, help="events for the scale-out runs (100,000)"
    )
    parser.add_argument(
        "--slow-ms",
        type=int,
        default=DEFAULT_SLOW_MS,
        help="sandbox latency of the Meta-like end-to-end and scale-out runs, 0 to skip them (300)",
    )
    parser.add_argument(
        "--pace-events",
        type=int,
        help="events of the SDK's runs before and after the end-to-end and intake runs, "
        "0 for none (200,000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="cores (and send's --jobs) for the parallel figures (2)",
    )
    parser.add_argument("--repeat", type=int, help="transform runs per program, best counts (3)")
    parser.add_argument("--quick", action="store_true", help="small inputs, one run, seconds")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"({DEFAULT_JSON})")
    parser.add_argument(
        "--only",
        choices=("transform", "e2e", "intake", "scaleout"),
        help="run one measurement",
    )
    parser.add_argument("--workdir", type=Path, help="keep the generated files in this folder")
    args = parser.parse_args(argv)
    events = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    e2e_events = args.e2e_events or (QUICK_E2E_EVENTS if args.quick else DEFAULT_E2E_EVENTS)
    try:
        return BenchOptions(
            events=events,
            e2e_events=e2e_events,
            intake_events=args.intake_events
            or (QUICK_INTAKE_EVENTS if args.quick else DEFAULT_INTAKE_EVENTS),
            scaleout_events=args.scaleout_events
            or (QUICK_SCALEOUT_EVENTS if args.quick else DEFAULT_SCALEOUT_EVENTS),
            slow_ms=args.slow_ms,
            # --quick: none, its SDK runs would be mostly the SDK's start-up.
            pace_events=args.pace_events
            if args.pace_events is not None
            else (0 if args.quick else PACE_EVENTS),
            workers=args.workers,
            repeat=args.repeat or (1 if args.quick else 3),
            json=args.json,
            only=args.only,
            workdir=args.workdir,
        )
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    """``python -m leadrelay.bench`` / ``leadrelay bench``: 0 when every run checked out, else 1."""
    options = parse_args(argv)
    console = Console(stderr=True)
    results = run(options, console)
    render(results, Console())
    if options.json is not None:
        console.print(f"Results written to {options.json}")
    checks = [m.get("ok", True) for m in _measurements(results)]
    return 0 if all(checks) else 1


def _measurements(results: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    transform = results.get("transform") or {}
    for key in ("sdk", "leadrelay", "leadrelay_workers"):
        if isinstance(transform.get(key), dict):
            found.append(transform[key])
    found.extend(results[key] for key in ("e2e", "e2e_random_ids", "e2e_slow") if key in results)
    found.extend((results.get("intake") or {}).get("batches", {}).values())
    for variant in (results.get("scaleout") or {}).get("variants", []):
        found.extend(variant["workers"].values())
    return found
