"""What the ``leadrelay`` commands share (``cli``, ``cli_store``): the console for what they say,
the ``--config`` option, the logs, and loading the config and the store with one-line errors.
No ``from __future__ import annotations``: see ``cli``."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from leadrelay.config import ConfigError, Settings, load_config

if TYPE_CHECKING:
    from leadrelay.delivery.store import Store

err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The leadrelay TOML config.")]


def configure_logging(verbose: int) -> None:
    """Structured logs on stderr, for the commands that may log (delivery, service, store):
    readable lines, or JSON lines with ``LEADRELAY_LOG_FORMAT=json``."""
    from leadrelay.logs import configure_logging as configure

    fmt = os.environ.get("LEADRELAY_LOG_FORMAT", "").strip().lower()
    configure(verbose, fmt=fmt if fmt == "json" else "console")


def load_settings(path: Path) -> Settings:
    """The config at ``path``; each problem said with its key, and exit 1."""
    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[bold red]Config error[/bold red] in {exc.source}:", highlight=False)
        for problem in exc.problems:
            err.print(f"  - {problem}", markup=False, highlight=False)
        raise typer.Exit(1) from None


def open_store(settings: Settings) -> "Store":
    """The config's store, as it is (not created); why it cannot be opened said, and exit 1."""
    from leadrelay.delivery.store import StoreError
    from leadrelay.delivery.wiring import open_store as opened

    try:
        return opened(settings, create=False)
    except StoreError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None
