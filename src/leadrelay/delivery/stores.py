"""Opening the store a config points at (the embedded SQLite file by default)."""

from __future__ import annotations

from pathlib import Path

from leadrelay.config import Settings
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Store, StoreError

DB_NAME = "leadrelay.db"


def store_path(settings: Settings) -> Path:
    """Where the SQLite store of ``settings`` lives: ``server.data_dir/leadrelay.db``."""
    return settings.server.data_dir / DB_NAME


def open_store(settings: Settings, *, create: bool = True) -> Store:
    """Open (or create) the store; with ``create=False`` a missing store is a ``StoreError``."""
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
    )
