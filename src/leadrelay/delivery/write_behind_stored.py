"""What ``WriteBehindStore`` asks of the store under it as it is: the events stored (those in
memory are not in the commands' lists, nor found by id), and the changes the commands make."""

from __future__ import annotations

from collections.abc import Sequence

from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import EventRecord, Stage
from leadrelay.outcome import Payload, State


class StoredEvents:
    """The calls of ``Store`` that ``WriteBehindStore`` hands to ``_store`` unchanged."""

    _store: SQLiteStore

    def timeline(self, since: float, bucket_s: int) -> list[tuple[float, dict[str, int]]]:
        """See ``Store.timeline`` (stored events only)."""
        return self._store.timeline(since, bucket_s)

    def events(
        self,
        *,
        states: Sequence[State] | None = None,
        reason: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after_id: int | None = None,
        bodies: bool = True,
    ) -> list[EventRecord]:
        """See ``Store.events`` (stored events only)."""
        return self._store.events(
            states=states,
            reason=reason,
            since=since,
            limit=limit,
            after_id=after_id,
            bodies=bodies,
        )

    def outcomes(self, ids: Sequence[int]) -> list[EventRecord]:
        """See ``Outcomes.outcomes`` (stored events only)."""
        return self._store.outcomes(ids)

    def stages_of(self, ids: Sequence[int]) -> dict[int, Stage]:
        """See ``Outcomes.stages_of`` (stored events only)."""
        return self._store.stages_of(ids)

    def last_id(self) -> int:
        """See ``Store.last_id`` (stored events only: those in memory have negative ids)."""
        return self._store.last_id()

    def get(self, id_or_key: int | str) -> EventRecord | None:
        """See ``Store.get`` (stored events only)."""
        return self._store.get(id_or_key)

    def requeue(
        self,
        ids: Sequence[int],
        payloads: Sequence[Payload] | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """See ``Store.requeue`` (stored events only)."""
        return self._store.requeue(ids, payloads, now=now)

    def purge(
        self, *, delivered_before: float, drop_originals: bool, state: State = State.DELIVERED
    ) -> int:
        """See ``Store.purge``."""
        return self._store.purge(
            delivered_before=delivered_before, drop_originals=drop_originals, state=state
        )
