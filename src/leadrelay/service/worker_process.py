"""``leadrelay worker``: a delivery-only process of a Redis fleet (no HTTP).

It runs a ``DeliveryWorker`` against the ``[queue]`` store, sharing the queue with every other
``worker`` and ``serve`` process through the consumer group. Without ``[queue]`` it refuses to
start: the SQLite store allows one delivering process per data_dir, and ``serve`` is it.

Signals, as ``serve``: SIGTERM (or Ctrl-C) lets the batches in flight finish and exits 0; SIGHUP
reloads the config file (access token, Graph URL, retries, batch size, concurrency; a delivery
paused on a refused token resumes), keeping the old one when the new one has problems; ``[queue]``
and ``[store]`` need a restart. SIGKILL loses nothing: the events this
process held are taken over by the others after ``claim_idle_s``. Logs are JSON lines on stderr
when not on a terminal, with a progress line every minute while it delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import structlog

from leadrelay.config import ConfigError, Settings, load_config
from leadrelay.delivery.redis import RedisStore
from leadrelay.delivery.store import StoreError
from leadrelay.delivery.wiring import log_request, open_store
from leadrelay.delivery.worker import DeliveryWorker, RequeuePolicy
from leadrelay.logs import configure_logging
from leadrelay.meta.client import GraphResult
from leadrelay.service.reload import (
    RELOAD_FAILED,
    DeliveringProcess,
    log_config_error,
    read_for_reload,
    restart_needed,
    switch_worker,
)

log = structlog.get_logger("leadrelay.worker_process")

PROGRESS_EVERY_S: Final = 60.0
NO_QUEUE: Final = (
    "cannot start: `leadrelay worker` needs a [queue] section (a Redis shared by the fleet). "
    "With the SQLite store only one process may deliver from a data_dir, and `leadrelay serve` "
    'already does; add [queue] with url = "redis://..." to run separate workers '
    "(see docs/redis.md)"
)


class _Progress:
    """Counts what the worker did (a ``WorkerObserver``) for the periodic progress line."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.batches = 0

    def outcomes(self, counts: Mapping[tuple[str, str], int]) -> None:
        for (outcome, _), n in counts.items():
            self.events[outcome] += n

    def batch_finished(self, seconds: float, size: int) -> None:
        self.batches += 1

    def report(self, seconds: float) -> None:
        """Log what happened since the last report (nothing when idle), then start over."""
        if self.batches or self.events:
            per_s = self.events["delivered"] / seconds if seconds > 0 else 0.0
            log.info(
                "delivery progress",
                batches=self.batches,
                delivered_per_s=round(per_s, 1),
                **dict(self.events),
            )
        self.events.clear()
        self.batches = 0


class WorkerProcess(DeliveringProcess):
    """One ``leadrelay worker``: the delivery worker, its signals and the config reload."""

    def __init__(self, path: Path, settings: Settings, store: RedisStore) -> None:
        self.path = path
        self.settings = settings
        self.store = store
        self.progress = _Progress()
        d = settings.delivery
        self.worker: DeliveryWorker | None = None
        self.worker = DeliveryWorker(
            store,
            self.dispatcher,
            batch_size=d.batch_size,
            concurrency=d.concurrency,
            requeue=RequeuePolicy(),
            observer=self.progress,
        )

    def _record_request(self, result: GraphResult, events: int) -> None:
        log_request(result, events)

    def reload(self) -> None:
        """Re-read the config file (SIGHUP); keep the old config when the new one is wrong."""
        assert self.worker is not None
        new = read_for_reload(self.path, log)
        if new is None:
            return
        if new.queue is None:
            log.error(RELOAD_FAILED, error=NO_QUEUE)
            return
        old = self.settings
        if not switch_worker(self.worker, old, new, self._use, log):
            return
        fixed = restart_needed(old, new, ("queue", "store"))
        log.info("config reloaded", path=str(self.path), restart_needed_for=fixed)

    async def run(self, progress_every_s: float = PROGRESS_EVERY_S) -> int:
        """Deliver until SIGTERM/SIGINT, then drain; returns the exit code."""
        assert self.worker is not None
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def stopping(name: str) -> None:
            log.info("stopping: finishing the batches in flight", signal=name)
            stop.set()

        handlers = {
            signal.SIGTERM: lambda: stopping("SIGTERM"),
            signal.SIGINT: lambda: stopping("SIGINT"),
            signal.SIGHUP: self.reload,
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        d = self.settings.delivery
        log.info(
            "worker started",
            config=str(self.path),
            store=self.store.where,
            key_prefix=(q.key_prefix if (q := self.settings.queue) else None)
            or f"lr:{self.settings.pixel_id}",
            consumer=self.store.consumer,
            claim_idle_s=self.store.claim_idle_s,
            batch_size=d.batch_size,
            concurrency=d.concurrency,
            pid=os.getpid(),
        )
        reporter = asyncio.create_task(self._report(stop, progress_every_s))
        try:
            await self.worker.run(stop)
        except Exception:
            log.exception("the delivery worker stopped unexpectedly")
            return 1
        finally:
            stop.set()
            await reporter
            for sig in handlers:
                loop.remove_signal_handler(sig)
        log.info("stopped")
        return 0

    async def _report(self, stop: asyncio.Event, every_s: float) -> None:
        last = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)
            now = time.monotonic()
            self.progress.report(now - last)
            last = now


def run_worker(settings_path: Path) -> int:
    """Run ``leadrelay worker`` until SIGTERM; returns the exit code (0 clean, 1 cannot start)."""
    configure_logging(1, fmt=os.environ.get("LEADRELAY_LOG_FORMAT"))
    try:
        settings = load_config(settings_path)
    except ConfigError as exc:
        log_config_error(log, exc, "cannot start: the config has problems")
        return 1
    if settings.queue is None:
        log.error(NO_QUEUE, config=str(settings_path))
        return 1
    try:
        store = open_store(settings)
    except StoreError as exc:
        log.error("cannot start: the event store cannot be opened", error=str(exc))
        return 1
    try:
        if not isinstance(store, RedisStore):  # open_store gives Redis for [queue]
            log.error(NO_QUEUE, config=str(settings_path))
            return 1
        try:
            process = WorkerProcess(settings_path, settings, store)
        except ValueError as exc:  # e.g. the Graph client refuses the token's characters
            log.error("cannot start", error=str(exc))
            return 1
        return asyncio.run(process.run())
    finally:
        store.close()
