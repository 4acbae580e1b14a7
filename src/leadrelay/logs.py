"""Structured logs (structlog) to stderr: quiet by default, ``-v`` for detail, JSON for services.

Nothing secret is ever passed to a logger: tokens stay inside the Graph client and the intake's
comparison; log calls carry counts, codes, event ids and fbtrace_ids only.
"""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = {0: logging.WARNING, 1: logging.INFO}


def configure_logging(verbosity: int = 0, *, json: bool = False) -> None:
    """Send structlog output to stderr at WARNING (0), INFO (1) or DEBUG (2+)."""
    level = LEVELS.get(verbosity, logging.DEBUG)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
