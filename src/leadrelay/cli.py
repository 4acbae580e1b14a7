"""The ``leadrelay`` command: thin, it parses arguments, calls the library and prints with rich.

Each command imports what it needs when it runs: the delivery stack (httpx, the dispatcher, the
SQLite store), the structured logs and the diagnostics cost a good part of a second to import,
which a ``send --dry-run`` or a ``validate`` never uses. The annotations are evaluated as the
functions are defined (no ``from __future__ import annotations``): typer reads them on every run,
and resolving them from strings again each time cost a few milliseconds of every start-up.
"""

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from leadrelay.cli_common import ConfigOpt, configure_logging, err, load_settings
from leadrelay.cli_preview import preview
from leadrelay.cli_store import dead, report, status
from leadrelay.collecting import command_started
from leadrelay.config import DEFAULT_API_VERSION
from leadrelay.events import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Send CRM lead-stage changes to Meta's Conversions API as Conversion Leads events.",
)


def _version(shown: bool) -> None:
    if shown:
        from leadrelay import __version__
        from leadrelay.compiled import build_name

        # The build too: whether a LEADRELAY_COMPILE=1 install took (README, "A compiled build").
        typer.echo(f"leadrelay {__version__}, {build_name()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and the build (pure Python or compiled), and exit.",
        ),
    ] = False,
) -> None:
    # Only --version, before any command (a command is required: no_args_is_help).
    return None


@app.command()
def validate(config: ConfigOpt) -> None:
    """Check a config and print every problem with its key."""
    from leadrelay.mapping.engine import Mapper

    configure_logging(0)
    settings = load_settings(config)
    Mapper(settings)
    err.print(
        f"[green]OK[/green] {config}: pixel {settings.pixel_id}, "
        f"{len(settings.mapping)} mapping row(s), "
        f"{len(settings.smart_mapping)} smart mapping row(s)"
    )
    for name, variable in settings.server.unset_tokens.items():
        needs = "serve cannot start without it"
        if name == "dashboard_token":
            needs = "serve's dashboard takes the intake token only"
        err.print(
            f"[yellow]Note[/yellow] server.{name}: environment variable {variable} is not set; "
            f"{needs} (the other commands run without it).",
            highlight=False,
        )
    from leadrelay.delivery.dispatcher import RetryPolicy

    floors = RetryPolicy()
    limit = settings.delivery.max_retry_s
    for floor, what in ((floors.throttle_floor, "throttles"), (floors.blocked_floor, "blocks")):
        if limit <= floor:
            err.print(
                f"[yellow]Warning[/yellow] delivery.max_retry_s: {limit:g} s leaves no room for "
                f"the {floor:g} s leadrelay waits when Meta {what} a request: such a batch is not "
                "tried again (retries_exhausted). Raise it, or leave it out (600 s).",
                highlight=False,
            )
    import datetime

    from leadrelay.meta.versions import ended

    if (end := ended(settings.api_version, datetime.date.today())) is not None:
        err.print(
            f"[yellow]Warning[/yellow] api_version: {end}; Meta refuses it (code 2635) and "
            f"delivery would stop. Use a version Meta serves, such as {DEFAULT_API_VERSION}.",
            highlight=False,
        )


@app.command()
def send(
    files: Annotated[
        list[str], typer.Argument(help="Event files (NDJSON, JSON, CSV, .gz) or - for stdin.")
    ],
    config: ConfigOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the request bodies; send nothing.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write one NDJSON line per event.")
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")] = 0,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            max=64,
            help=(
                "Processes that read and map files (default: jobs in the delivery section, "
                "else 1); a send from standard input or a pipe maps in its own process."
            ),
        ),
    ] = None,
) -> None:
    """Map events and deliver them to Meta (or print the requests with --dry-run).

    Exit code 0 when nothing was rejected, 2 when some events were rejected or expired,
    1 for a config error or when delivery had to stop (e.g. the access token was refused).
    """
    from leadrelay.send import SendOptions, run_send

    if not dry_run:  # a dry run delivers nothing, and nothing on its way logs
        configure_logging(verbose)
    settings = load_settings(config)
    try:
        code = run_send(
            settings,
            SendOptions(
                files=files,
                dry_run=dry_run,
                report=report,
                verbose=verbose,
                jobs=jobs or settings.delivery.jobs,
            ),
            err=err,
        )
    except InputError as exc:
        err.print(f"[bold red]Input error:[/bold red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except Exception as exc:
        # Imported only now: most sends never start a pool (see mapping.pool).
        from concurrent.futures.process import BrokenProcessPool

        from leadrelay.delivery.store import StoreError

        if isinstance(exc, StoreError):  # a store that cannot be opened, or a disk that failed
            err.print(f"[bold red]Store error:[/bold red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        if not isinstance(exc, BrokenProcessPool):
            raise
        # A mapping process died (killed, out of memory): said in one line, no traceback.
        again = "" if dry_run else " (run it again: what was delivered is not sent twice)"
        err.print(f"[bold red]Stopped:[/bold red] {escape(str(exc))}{again}", highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command()
def deliver(
    config: ConfigOpt,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write one NDJSON line per event it settles (those it leaves queued: none).",
        ),
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")] = 0,
) -> None:
    """Deliver what is queued in the store (after a replay, or a send that had to stop)."""
    from leadrelay.delivery.store import StoreError
    from leadrelay.send import SendOptions, run_send

    configure_logging(verbose)
    settings = load_settings(config)
    try:
        code = run_send(settings, SendOptions(files=[], report=report, verbose=verbose), err=err)
    except (InputError, StoreError) as exc:
        err.print(f"[bold red]Cannot deliver:[/bold red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


app.command()(preview)  # in cli_preview; listed here, after deliver


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1).")] = 8090,
    token: Annotated[list[str] | None, typer.Option(help="Access token(s) to accept.")] = None,
    pixel: Annotated[list[str] | None, typer.Option(help="Pixel id(s) that exist.")] = None,
    deleted_lead: Annotated[
        list[int] | None, typer.Option(help="Lead ids treated as deleted.")
    ] = None,
    fail_rate: Annotated[float, typer.Option(help="Share of requests answered 500.")] = 0.0,
    throttle_rate: Annotated[float, typer.Option(help="Share of requests throttled.")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="Share of connections dropped.")] = 0.0,
    slow_ms: Annotated[int, typer.Option(help="Added latency per request.")] = 0,
    seed: Annotated[int | None, typer.Option(help="Seed for the fault dice.")] = None,
) -> None:
    """Run a local stand-in for Meta's Graph API events endpoint (for trying leadrelay out)."""
    import errno

    from leadrelay.sandbox import SandboxOptions, serve_forever

    configure_logging(0)
    try:
        options = SandboxOptions(
            access_tokens=frozenset(token or ["sandbox-token"]),
            pixel_ids=frozenset(pixel) if pixel else None,
            deleted_lead_ids=frozenset(deleted_lead or ()),
            fail_rate=fail_rate,
            throttle_rate=throttle_rate,
            drop_rate=drop_rate,
            slow_ms=slow_ms,
            seed=seed,
        )
    except ValueError as exc:
        err.print(f"[red]Invalid sandbox option:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    try:
        serve_forever(options, host="127.0.0.1", port=port)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        err.print(  # the port is taken, or not ours to listen on
            f"[red]Cannot listen on 127.0.0.1:{port}:[/red] {escape(exc.strerror or str(exc))}; "
            "choose another --port",
            highlight=False,
        )
        raise typer.Exit(1) from None


@app.command()
def demo() -> None:
    """Run a realistic funnel of example events through the real send path, against the sandbox."""
    from leadrelay.demo import run_demo

    configure_logging(0)
    raise typer.Exit(run_demo(err=err, out=Console()))


@app.command()
def serve(
    config: ConfigOpt,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            help="Take events in but do not deliver them (other processes deliver: another "
            "serve on the same data_dir, or `leadrelay worker` with a Redis queue).",
        ),
    ] = False,
) -> None:
    """Run the HTTP service: POST /v1/events stores events durably; a background worker
    delivers them to Meta. SIGTERM stops gracefully (exit 0), SIGHUP reloads the config.
    Exit code 1 when it cannot start."""
    from leadrelay.service.server import serve as run_service

    configure_logging(0)
    raise typer.Exit(run_service(config, no_worker=no_worker))


@app.command()
def worker(config: ConfigOpt) -> None:
    """Deliver from the shared Redis queue (the queue section of the config), without HTTP.

    Run any number, on any machines, next to `serve --no-worker` intake processes. SIGTERM stops
    gracefully (exit 0), SIGHUP reloads the config; exit code 1 when it cannot start."""
    from leadrelay.service.worker_process import run_worker

    configure_logging(0)
    raise typer.Exit(run_worker(config))


# The commands that read the store (``cli_store``), listed after those that deliver.
app.command()(status)
app.command()(report)
app.add_typer(dead, name="dead-letters")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Run the benchmark harness (options: see `python -m leadrelay.bench --help`)."""
    from leadrelay.bench import main as run_bench

    configure_logging(0)
    raise typer.Exit(run_bench(list(ctx.args)))


def main() -> None:
    """Console-script entry point (each command configures the logs it may write)."""
    command_started()  # what start-up loaded lives as long as the command: out of collections
    try:
        app()
    except KeyboardInterrupt:
        # Ending already: one more Ctrl-C must not cut the exit short with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        err.print("interrupted")
        sys.exit(130)
