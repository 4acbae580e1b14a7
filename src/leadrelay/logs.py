"""Structured logs (structlog, with the stdlib loggers of uvicorn and httpx routed through it).

Commands log readable lines to stderr, quiet by default (``-v`` for detail); the service logs JSON
lines unless it runs on a terminal. Nothing secret is ever passed to a logger: tokens stay inside
the Graph client and the intake's comparison; log calls carry counts, codes, event ids and
fbtrace_ids only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

LEVELS = {0: logging.WARNING, 1: logging.INFO}


def configure_logging(
    verbosity: int = 0, *, fmt: Literal["json", "console"] | str | None = "console"
) -> None:
    """Log to stderr at WARNING (0), INFO (1) or DEBUG (2+); ``fmt=None`` picks JSON off a tty."""
    if fmt not in ("json", "console"):
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt == "json":
        final += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # Tracebacks without each frame's local variables: they can hold a request's
        # Authorization header or the settings' token.
        final.append(
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(verbosity, logging.DEBUG))
    for noisy in ("httpx", "httpcore"):  # one line per Graph request is too much
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
