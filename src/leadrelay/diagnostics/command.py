"""``leadrelay report``: compute the funnel and the good-fit checks, print them, write the page."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from leadrelay.config import Settings
from leadrelay.delivery.store import Store
from leadrelay.diagnostics import sources
from leadrelay.diagnostics.html import render_html
from leadrelay.diagnostics.render import render_report
from leadrelay.diagnostics.report import build_report
from leadrelay.events import InputError


def run_report(
    settings: Settings,
    *,
    files: Sequence[str] | None,
    store: Store | None,
    html_path: Path,
    console: Console,
    now: float | None = None,
) -> int:
    """Report on ``files`` (a CRM export, before going live) or else on ``store``.

    Prints the report on ``console`` and writes the self-contained HTML page to ``html_path``.
    Returns the exit code: 0 when the report was made (whatever the checks say: they are advice,
    not errors), 1 when there was nothing to read or a file or the page could not be read/written.
    """
    clock = time.time() if now is None else now
    if files:
        records = sources.from_files(files, settings, now=clock)
        source = f"{len(files)} file(s): {', '.join(files)}"
    elif store is not None:
        # What retention keeps of every outcome: past it, deliveries are deleted and dead
        # letters kept, and the figures would show the failures alone.
        records = sources.from_store(store, since=clock - settings.store.retention_s)
        source = "the event store"
    else:
        console.print(
            "[bold red]Nothing to report on:[/bold red] give event files with --from, "
            "or run it where the service keeps its event store."
        )
        return 1
    try:
        report = build_report(
            records,
            static=sources.static_stages(settings),
            now=clock,
            from_store=not files,
            source=source,
            pixel_id=settings.pixel_id,
        )
    except InputError as exc:
        console.print(f"[bold red]Input error:[/bold red] {exc}", highlight=False)
        return 1
    render_report(report, console)
    tmp = html_path.with_name(html_path.name + ".tmp")
    try:
        tmp.write_text(render_html(report), encoding="utf-8")
        os.replace(tmp, html_path)
    except OSError as exc:
        console.print(f"[bold red]Cannot write {html_path}:[/bold red] {exc}", highlight=False)
        return 1
    console.print(f"Wrote {html_path}", highlight=False)
    return 0
