"""The store a ``send`` (or ``deliver``) delivers from: the config's, held with the one-deliverer
lock of its data_dir, and in front of it, for input a later run can read again, the memory that
what is read waits in until it is settled (``write_behind``). Split out of ``send_delivery``
(house rule: modules under ~300 lines)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leadrelay.config import Settings
    from leadrelay.delivery.store import Store
    from leadrelay.outcome import Payload

__all__ = ["delivering_store", "waiting"]

_REMEMBERED = 20_000
_WAITING = 10_000  # payloads read and not sent yet, kept in memory (write-behind) at most
# Reading waits for delivery while it takes events from memory at least this often; beyond,
# what is read goes to the store (delivery paused, retrying or stopped).
_DELIVERY_STALL_S = 1.0


@contextmanager
def delivering_store(settings: Settings, rereadable: bool) -> Iterator[Store]:
    """The config's store. SQLite's is held with the one-deliverer lock of its data_dir, and for
    input that a later run can read again, what is read waits in memory and is stored once,
    settled (``write_behind``); a pipe's events are stored as they are read. A fleet's queue
    (Redis) takes no lock: its processes deliver from it at once, as ``serve`` does."""
    from leadrelay.delivery.sqlite_store import SQLiteStore
    from leadrelay.delivery.wiring import open_store
    from leadrelay.delivery.write_behind import WriteBehindStore

    with ExitStack() as stack:
        if settings.queue is None:
            stack.callback(os.close, _locked(settings.server.data_dir))
        # What retention at the end would drop, dropped as events are delivered instead; and
        # the payloads this process stores kept for its own delivery (some 20 MB at most).
        drop = settings.store.drop_originals_after_delivery
        store = open_store(settings, drop_delivered_bodies=drop, remember_unclaimed=_REMEMBERED)
        if isinstance(store, SQLiteStore) and rereadable:
            store = WriteBehindStore(store, limit=_WAITING, wait_for_delivery_s=_DELIVERY_STALL_S)
        stack.callback(store.close)
        yield store


def _locked(data_dir: Path) -> int:
    """The one-deliverer lock of ``data_dir`` (made if need be); ``StoreError`` when it cannot
    be made or another process holds it (the input is not at fault: it said "Input error")."""
    from leadrelay.delivery.store import StoreError
    from leadrelay.delivery.wiring import delivery_lock

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"server.data_dir {str(data_dir)!r} cannot be created ({exc.strerror or exc}); "
            "set it to a folder this user may write to"
        ) from None
    try:
        return delivery_lock(data_dir)
    except BlockingIOError:
        raise StoreError(
            f"another leadrelay process (a running serve or send) delivers from {data_dir}; "
            "wait for it, or give this config its own server.data_dir"
        ) from None


def waiting(store: Store) -> list[tuple[int, Payload]]:
    """The payloads read and held in memory, not sent (write-behind): stored queued as it
    closes."""
    from leadrelay.delivery.write_behind import WriteBehindStore

    return list(store.waiting()) if isinstance(store, WriteBehindStore) else []
