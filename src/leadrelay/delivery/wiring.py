"""The delivery objects a config describes: the store, the Graph client, the dispatcher."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path

import structlog

from leadrelay.config import Settings
from leadrelay.delivery.dispatcher import Dispatcher, RetryPolicy
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Store, StoreError
from leadrelay.meta.client import GraphClient, GraphResult
from leadrelay.meta.errors import ErrorKind

log = structlog.get_logger("leadrelay.delivery")

DB_NAME = "leadrelay.db"


def store_path(settings: Settings) -> Path:
    """Where the SQLite store of ``settings`` lives: ``server.data_dir/leadrelay.db``."""
    return settings.server.data_dir / DB_NAME


def open_store(
    settings: Settings,
    *,
    create: bool = True,
    drop_delivered_bodies: bool = False,
    remember_unclaimed: int = 0,
) -> Store:
    """Open (or create) the store: Redis when ``[queue]`` is set, else the SQLite file in
    ``server.data_dir``; with ``create=False`` a missing store is a ``StoreError``.
    ``drop_delivered_bodies`` and ``remember_unclaimed``: see ``SQLiteStore`` (Redis ignores
    them)."""
    queue = settings.queue
    if queue is not None:
        from leadrelay.delivery.redis import RedisStore

        return RedisStore(
            queue.url.get_secret_value(),
            prefix=queue.key_prefix or f"lr:{settings.pixel_id}",
            consumer=queue.consumer,
            claim_idle_s=queue.claim_idle_s,
            max_deliveries=queue.max_deliveries,
            original_policy=settings.store.originals,
            cluster=queue.cluster,
            create=create,
            require_aof=queue.require_aof,
        )
    path = store_path(settings)
    if not path.exists():
        if not create:
            raise StoreError(
                f"no event store at {path}: nothing has been sent or served with this config yet "
                "(server.data_dir sets where it lives)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(
        path,
        synchronous=settings.store.synchronous,
        original_policy=settings.store.originals,
        drop_delivered_bodies=drop_delivered_bodies,
        remember_unclaimed=remember_unclaimed,
    )


def make_client(settings: Settings) -> GraphClient:
    """The Graph client for a config."""
    return GraphClient(
        graph_url=settings.graph_url,
        api_version=settings.api_version,
        pixel_id=settings.pixel_id,
        access_token=settings.access_token.get_secret_value(),
        test_event_code=settings.test_event_code,
        timeout=settings.delivery.timeout_s,
        max_connections=settings.delivery.concurrency * 2,
    )


def log_request(result: GraphResult, events: int) -> None:
    """Log one Graph request. Rejected batches are split to find the bad events, so each split
    is detail (info); transient errors are warnings; a refused token is an error."""
    if result.ok:
        log.debug(
            "graph request",
            events=events,
            received=result.events_received,
            fbtrace_id=result.fbtrace_id,
            messages=result.messages or None,
        )
        return
    e = result.error
    if e is None:
        return
    level = {ErrorKind.INVALID: logging.INFO, ErrorKind.AUTH: logging.ERROR}.get(
        e.kind, logging.WARNING
    )
    log.log(
        level,
        "graph error",
        events=events,
        kind=e.kind.value,
        error=e.label(),
        http_status=e.http_status,
        fbtrace_id=e.fbtrace_id,
        message=e.message,
    )


def make_dispatcher(
    settings: Settings,
    client: GraphClient,
    *,
    on_request: Callable[[GraphResult, int], None] = log_request,
) -> Dispatcher:
    """The dispatcher for a config; ``on_request`` sees every Graph answer (logs by default)."""
    d = settings.delivery
    return Dispatcher(
        client,
        policy=RetryPolicy(
            max_attempts=d.max_attempts, max_total=d.max_retry_s, base_delay=d.retry_base_s
        ),
        on_request=on_request,
    )


def delivery_lock(data_dir: Path) -> int:
    """Hold an exclusive lock on ``data_dir/leadrelay.lock`` for as long as the process lives
    (the kernel drops it even on SIGKILL): one delivering process per store."""
    fd = os.open(data_dir / "leadrelay.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd
