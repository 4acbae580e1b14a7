"""What the long-running processes (``serve``, ``worker``) share: config loading at start and
on SIGHUP, and building dispatchers from the current settings.

A reload never makes things worse: a config with problems is logged (keys and reasons, never
values) and the running one stays; a new config the worker cannot use is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from leadrelay.config import ConfigError, Settings, StoreSettings, load_config
from leadrelay.delivery.dispatcher import Dispatcher
from leadrelay.delivery.wiring import make_client, make_dispatcher
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.meta.client import GraphResult

RELOAD_FAILED = "config reload failed; keeping the previous config"
Log = structlog.typing.FilteringBoundLogger


def log_config_error(log: Log, exc: ConfigError, what: str) -> None:
    """Log a config's problems. They name keys and say what is wrong; they never hold the values
    (tokens are SecretStr)."""
    log.error(what, source=exc.source, problems=[str(p) for p in exc.problems])


def store_needs_restart(old: StoreSettings, new: StoreSettings) -> bool:
    """Whether ``[store]`` changed in what the open store was made with (``originals``,
    ``synchronous``). ``retention_days`` and ``drop_originals_after_delivery`` need no restart:
    the next retention pass (every 10 minutes, in ``serve``) applies them, a restart at once."""
    return (old.originals, old.synchronous) != (new.originals, new.synchronous)


def restart_needed(old: Settings, new: Settings, sections: Sequence[str]) -> list[str] | None:
    """Of ``sections`` (``server``, ``store``, ``queue``), those that changed in what a reload
    cannot apply (None for none): what the process listens on, opened its store or its queue
    with."""
    return [section for section in sections if _needs_restart(old, new, section)] or None


def _needs_restart(old: Settings, new: Settings, section: str) -> bool:
    if section == "server":
        a, b = old.server, new.server
        return (a.host, a.port, a.data_dir) != (b.host, b.port, b.data_dir)
    if section == "queue":
        return old.queue != new.queue
    return store_needs_restart(old.store, new.store)


def read_for_reload(path: Path, log: Log) -> Settings | None:
    """The config at ``path``, or None (problems logged) to keep the running one."""
    try:
        return load_config(path)
    except ConfigError as exc:
        log_config_error(log, exc, RELOAD_FAILED)
    except Exception as exc:
        log.error(RELOAD_FAILED, error=str(exc))
    return None


def switch_worker(
    worker: DeliveryWorker,
    old: Settings,
    new: Settings,
    use: Callable[[Settings], None],
    log: Log,
) -> bool:
    """Make ``new`` the settings (through ``use``) and rebuild the worker's dispatcher from them;
    on failure go back to ``old`` and say so. A paused delivery resumes."""
    use(new)
    try:
        worker.resume()  # builds its dispatcher from the settings ``use`` installed
    except Exception as exc:
        use(old)
        log.error(RELOAD_FAILED, error=str(exc))
        return False
    worker.batch_size = new.delivery.batch_size
    worker.concurrency = new.delivery.concurrency
    return True


class DeliveringProcess:
    """What ``serve`` and ``worker`` share: the current settings, and dispatchers built from
    them whose every Graph answer is recorded (``_record_request``: metrics or logs) and shown
    to the worker (for the fleet-wide pause)."""

    settings: Settings
    worker: DeliveryWorker | None = None

    def _use(self, settings: Settings) -> None:
        self.settings = settings

    def dispatcher(self) -> Dispatcher:
        """A dispatcher (and Graph client) for the current settings."""
        return make_dispatcher(
            self.settings, make_client(self.settings), on_request=self._on_request
        )

    def _record_request(self, result: GraphResult, events: int) -> None:
        """Where a Graph answer goes besides the worker (metrics, logs)."""

    def _on_request(self, result: GraphResult, events: int) -> None:
        self._record_request(result, events)
        if self.worker is not None:  # None only while the worker itself is being built
            self.worker.observe_request(result, events)
