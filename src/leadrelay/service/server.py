"""``leadrelay serve``: the intake app on uvicorn with the delivery worker in the same process.

Signals: SIGTERM (or Ctrl-C) stops taking requests, lets the batches in flight finish (the
worker's drain) and exits 0. SIGHUP reloads the config file: when it is valid, the mapping, the
intake token and the Graph client are rebuilt and a delivery paused on a refused token resumes;
when it is not, the problems are logged and the old config stays. Host, port, data_dir and the
``[store]`` section need a restart. SIGKILL loses nothing that was answered 202: events are on
disk before the answer, and the next start takes back what was in flight.

With ``[queue]`` the store is Redis, shared by a fleet: no data_dir lock (any number of ``serve``
and ``leadrelay worker`` processes deliver from one queue), ``--no-worker`` is intake only, and a
throttled Graph answer pauses the whole fleet (``DeliveryWorker.observe_request``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import structlog
import uvicorn
from starlette.applications import Starlette

from leadrelay.collecting import collecting_less
from leadrelay.config import ConfigError, Settings, load_config
from leadrelay.delivery.store import Store, StoreError
from leadrelay.delivery.wiring import (
    delivery_lock,
    log_request,
    open_store,
    store_path,
)
from leadrelay.delivery.worker import DeliveryWorker, RequeuePolicy
from leadrelay.logs import configure_logging
from leadrelay.mapping.engine import Mapper
from leadrelay.meta.client import GraphResult
from leadrelay.service.app import create_app
from leadrelay.service.metrics import Metrics
from leadrelay.service.reload import (
    RELOAD_FAILED,
    DeliveringProcess,
    log_config_error,
    read_for_reload,
    restart_needed,
    switch_worker,
)

log = structlog.get_logger("leadrelay.server")

_GRACEFUL_HTTP_S = 10
# The intake thread maps while the event loop thread reads requests and sends answers, and an
# answer also passes through the syncer thread. A thread waiting for the GIL gets it after at most
# this long (Python's default is 5 ms): at 5 ms, answers sat waiting and clients came back later;
# at 1 ms, 10% more events per second on one core for the same CPU.
_SWITCH_INTERVAL_S = 0.001


class _Service(DeliveringProcess):
    """Everything one ``serve`` process runs, and the config reload."""

    def __init__(self, path: Path, settings: Settings, store: Store, worker: bool) -> None:
        self.path = path
        self.settings = settings
        self.store = store
        self.metrics = Metrics()
        d = settings.delivery
        self.worker = (
            DeliveryWorker(
                store,
                self.dispatcher,
                batch_size=d.batch_size,
                concurrency=d.concurrency,
                requeue=RequeuePolicy(),
                observer=self.metrics,
            )
            if worker
            else None
        )
        self.app: Starlette = create_app(
            settings,
            store=store,
            worker=self.worker,
            metrics=self.metrics,
            mapper=Mapper(settings),
        )

    def _record_request(self, result: GraphResult, events: int) -> None:
        log_request(result, events)  # as send and worker log it: Meta's errors, by code
        self.metrics.graph_request(result, events)

    def reload(self) -> None:
        """Re-read the config file (SIGHUP); keep the old config when the new one is wrong."""
        new = read_for_reload(self.path, log)
        if new is None:
            return
        if new.server.intake_token is None and self.settings.server.intake_token is not None:
            # serve does not start without it: reloaded, it would refuse every event.
            log.error(RELOAD_FAILED, error=f"{_no_intake_token(new)} in the new config")
            return
        try:
            mapper = Mapper(new)
        except Exception as exc:
            log.error(RELOAD_FAILED, error=str(exc))
            return
        old = self.settings
        if self.worker is not None and not switch_worker(self.worker, old, new, self._use, log):
            return
        self.settings = new
        self.app.state.settings = new
        self.app.state.mapper = mapper
        fixed = restart_needed(old, new, ("server", "store", "queue"))
        log.info("config reloaded", path=str(self.path), restart_needed_for=fixed)


class _Server(uvicorn.Server):
    """uvicorn with our signals: SIGTERM/SIGINT stop gracefully (exit 0), SIGHUP reloads."""

    def __init__(self, config: uvicorn.Config, service: _Service) -> None:
        super().__init__(config)
        self._service = service

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: lambda: self._stop("SIGTERM"),
            signal.SIGINT: lambda: self._stop("SIGINT"),
            signal.SIGHUP: self._service.reload,
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        try:
            yield
        finally:
            for sig in handlers:
                loop.remove_signal_handler(sig)

    def _stop(self, name: str) -> None:
        if self.should_exit and name == "SIGINT":
            self.force_exit = True
        self.should_exit = True
        log.info("stopping: finishing the batches in flight", signal=name)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    log.info("listening", url=f"http://{host}:{port}", port=port, pid=os.getpid())


def store_where(store: Store, settings: Settings) -> str:
    """Where the store lives, for logs: the Redis URL without its password (with the key
    prefix), or the SQLite file."""
    where = getattr(store, "where", None)
    if settings.queue is not None and isinstance(where, str):
        prefix = settings.queue.key_prefix or f"lr:{settings.pixel_id}"
        return f"{where} (key prefix {prefix})"
    return str(store_path(settings))


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port already in use must stop
    us before the worker takes back rows another process holds in flight."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio then turns Nagle off for accepted connections.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


NO_INTAKE_TOKEN: Final = (
    "server.intake_token is not set; set it (at least 16 random characters, e.g. "
    'intake_token = "${LEADRELAY_INTAKE_TOKEN}")'
)


def _no_intake_token(settings: Settings) -> str:
    """Why serve cannot take events: no intake token, or its variable is not set."""
    name = settings.server.unset_tokens.get("intake_token")
    if name is None:
        return NO_INTAKE_TOKEN
    return f"server.intake_token: environment variable {name} is not set"


def serve(settings_path: Path, *, no_worker: bool = False) -> int:
    """Run the service until SIGTERM; returns the exit code (0 clean, 1 cannot start)."""
    configure_logging(1, fmt=os.environ.get("LEADRELAY_LOG_FORMAT"))
    try:
        settings = load_config(settings_path)
    except ConfigError as exc:
        log_config_error(log, exc, "cannot start: the config has problems")
        return 1
    server = settings.server
    if server.intake_token is None:
        log.error(f"cannot start: {_no_intake_token(settings)}")
        return 1
    if (name := server.unset_tokens.get("dashboard_token")) is not None:
        log.warning(
            f"server.dashboard_token: environment variable {name} is not set; the dashboard "
            "takes the intake token only"
        )
    shared = settings.queue is not None  # Redis: many processes deliver from one queue
    with contextlib.ExitStack() as stack:
        try:
            if not shared:
                server.data_dir.mkdir(parents=True, exist_ok=True)
            if not no_worker and not shared:
                stack.callback(os.close, delivery_lock(server.data_dir))
        except BlockingIOError:
            log.error(
                "cannot start: another leadrelay process delivers from this data_dir; start "
                "extra intake processes with --no-worker",
                data_dir=str(server.data_dir),
            )
            return 1
        except OSError as exc:
            log.error("cannot start: data_dir is not usable", error=str(exc))
            return 1
        try:
            sock = _bind(server.host, server.port)
        except OSError as exc:
            log.error(f"cannot start: cannot listen on {server.host}:{server.port}", error=str(exc))
            return 1
        stack.callback(sock.close)
        try:
            store = open_store(settings)
        except StoreError as exc:
            log.error("cannot start: the event store cannot be opened", error=str(exc))
            return 1
        stack.callback(store.close)
        try:
            service = _Service(settings_path, settings, store, worker=not no_worker)
        except ValueError as exc:  # e.g. the Graph client refuses the token's characters
            log.error("cannot start", error=str(exc))
            return 1
        # HTTP parsing by h11: it refuses a request line and headers over 16 KB with a 400, while
        # uvicorn on httptools has no such limit (a client without a token could grow memory and
        # stall every request with one endless header). The event loop is uvicorn's "auto":
        # uvloop (a dependency), asyncio where uvloop does not exist (Windows).
        config = uvicorn.Config(
            service.app,
            http="h11",
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=_GRACEFUL_HTTP_S,
        )
        log.info(
            "starting",
            config=str(settings_path),
            store=store_where(store, settings),
            delivery="off" if no_worker else "on",
        )
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        try:
            with collecting_less():
                _Server(config, service).run(sockets=[sock])
        except SystemExit:  # uvicorn's way out when the app cannot start; it logged why
            return 1
        finally:
            sys.setswitchinterval(switch_interval)
        log.info("stopped")
        return 0
