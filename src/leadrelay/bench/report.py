"""The benchmark's results as a table for people and as JSON for the README and for comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leadrelay.bench.pace import NOT_ASKED, NOT_INSTALLED, UNSTEADY


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` to ``path`` (folders created), indented, keys in a stable order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")


def _rate(figures: dict[str, Any] | None) -> str:
    if not figures or not figures.get("events_per_s"):
        return "-"
    return f"{figures['events_per_s']:,}"


def _times(ratio: float | None, missing: str = "") -> str:
    return f"{ratio:.2f}x" if ratio else missing


def _check(figures: dict[str, Any] | None) -> str:
    if not figures or "ok" not in figures:
        return ""
    return "[green]ok[/green]" if figures["ok"] else "[red]MISMATCH[/red]"


def render(results: dict[str, Any], console: Console) -> None:
    """Print one table: each run, its throughput, time, memory and whether it checked out."""
    machine = results["machine"]
    table = Table(
        title=(
            f"leadrelay bench: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, "
            f"leadrelay {machine.get('build', 'pure Python')}"
        ),
        header_style="bold",
    )
    for column, justify in (
        ("measurement", "left"),
        ("program", "left"),
        ("events", "right"),
        ("events/s", "right"),
        ("wall s", "right"),
        ("peak MB", "right"),
        ("vs SDK", "right"),
        ("check", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    transform = results.get("transform")
    if transform is not None:
        events = f"{transform['events']:,}"
        sdk = transform.get("sdk", {})
        if sdk.get("available", True):
            table.add_row(
                "transform",
                "Meta SDK, 1 core",
                events,
                _rate(sdk),
                f"{sdk['wall_s']:.2f}",
                f"{sdk['peak_rss_mb']:.0f}",
                "1.00x",
                _check(sdk),
            )
        for key, ratio_key in (("leadrelay", "ratio"), ("leadrelay_workers", "ratio_workers")):
            figures = transform.get(key)
            if figures is None:
                continue
            ratio = transform.get(ratio_key)
            cores = figures.get("workers", 1)
            table.add_row(
                "transform",
                f"leadrelay, {cores} core{'s' if cores > 1 else ''}",
                events,
                _rate(figures),
                f"{figures['wall_s']:.2f}",
                f"{figures['peak_rss_mb']:.0f}",
                _times(ratio, "n/a"),
                _check(figures),
            )
    for key, what in (
        ("e2e", "leadrelay send, 1 core"),
        ("e2e_random_ids", "leadrelay send, 1 core, random (UUID) event ids"),
        ("e2e_jobs", "leadrelay send --jobs {jobs}, {cores} cores (the sandbox on one)"),
        ("e2e_slow", "leadrelay send, 1 core, sandbox +{slow} ms (Meta-like), --report"),
    ):
        e2e = results.get(key)
        if e2e is None:
            continue
        send_cores = (e2e.get("cores_used") or {}).get("send")
        cores = len(send_cores) if isinstance(send_cores, list) else 1
        what = what.format(jobs=e2e.get("jobs"), cores=cores, slow=e2e.get("sandbox_slow_ms"))
        table.add_row(
            "end to end",
            what,
            f"{e2e['events']:,}",
            _rate(e2e),
            f"{e2e['wall_s']:.2f}",
            f"{e2e['peak_rss_mb']:.0f}",
            _times(e2e.get("vs_sdk")),
            _check(e2e),
        )
    _service_rows(table, results)
    console.print(table)
    scaleout = results.get("scaleout")
    if scaleout is not None and not scaleout.get("available", True):
        console.print(f"[yellow]Scale-out unavailable:[/yellow] {escape(scaleout['reason'])}")
    if transform is not None and transform.get("ratio_unavailable"):
        unavailable = escape(transform["ratio_unavailable"])
        console.print(f"[yellow]SDK ratio unavailable:[/yellow] {unavailable}")
    _pace_notes(results, console)
    # Taken before anything was measured, the load is other programs' (the benchmark's own
    # processes would count in the load at the end).
    load = machine.get("load_average_at_start")
    if load and load[0] >= 0.5:
        console.print(
            f"[yellow]Other programs were running (load average {load[0]} at the start):"
            "[/yellow] figures are lower than on a quiet machine."
        )


def _pace_notes(results: dict[str, Any], console: Console) -> None:
    """Why end to end or intake has no ratio to the SDK's pace (see ``pace``), a line per
    reason: not when the user said not to take it, nor the SDK missing when the transform's line
    said so already; and where the pace moved too much for its ratio to hold."""
    whats: dict[str, list[str]] = {}
    said = {NOT_ASKED}
    if (results.get("transform") or {}).get("ratio_unavailable"):
        said.add(NOT_INSTALLED)
    paced = (
        ("e2e", "end to end"),
        ("e2e_random_ids", "end to end with random ids"),
        ("e2e_jobs", "end to end with --jobs"),
        ("intake", "intake"),
    )
    for key, what in paced:
        sdk_pace = (results.get(key) or {}).get("sdk_pace") or {}
        for reason in (sdk_pace.get("reason"), *sdk_pace.get("failed", ())):
            if reason and reason not in said and what not in whats.setdefault(reason, []):
                whats[reason].append(what)
        moved = sdk_pace.get("moved")
        if moved is not None and moved > UNSTEADY:
            console.print(
                f"[yellow]The SDK's pace moved {moved:.0%} around {what}[/yellow] "
                f"({sdk_pace['before']:,} then {sdk_pace['after']:,} events/s): the machine "
                "changed speed meanwhile, so its ratio is loose."
            )
    for reason, names in whats.items():
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        console.print(f"[yellow]No SDK pace for {listed}:[/yellow] {escape(reason)}")


def _service_rows(table: Table, results: dict[str, Any]) -> None:
    """The intake rows (one per batch size) and the scale-out rows (1 and 2 workers)."""
    intake = results.get("intake")
    if intake is not None:
        for size, run in intake["batches"].items():
            latency = run["latency_ms"]
            table.add_row(
                "intake",
                f"serve --no-worker, 1 core, {intake['clients']} clients, batches of "
                f"{int(size):,} (202 p50 {latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms)",
                f"{intake['events']:,}",
                _rate(run),
                f"{run['wall_s']:.2f}",
                f"{run['peak_rss_mb']:.0f}",
                _times(run.get("vs_sdk")),
                _check(run),
            )
    scaleout = results.get("scaleout")
    if scaleout is None or not scaleout.get("available", True):
        return
    for variant in scaleout["variants"]:
        slow = variant["sandbox_slow_ms"]
        where = f"sandbox +{slow} ms (Meta-like)" if slow else "sandbox at full speed"
        for n, run in variant["workers"].items():
            ratio = variant["ratio"] if n != "1" else None
            table.add_row(
                "scale-out",
                f"leadrelay worker x{n}, Redis, {where}"
                + (f": {ratio:.2f}x of 1 worker" if ratio else ""),
                f"{scaleout['events']:,}",
                _rate(run),
                f"{run['wall_s']:.2f}",
                f"{run['peak_rss_mb']:.0f}",
                "",
                _check(run),
            )
