"""Reading the counters the scripts keep: ``Counts`` and ``timeline`` without reading events.

The COUNTS script answers ``[queued, in_flight, oldest received_at, counters]``. For all time,
``counters`` is the flat ``{lr}:totals`` hash; since a time, it is ``[size, start, flat hash,
...]`` for the second, minute and hour buckets that together cover the period. Hash fields are
``state|reason`` (empty reason for none), values are counts of events in that state whose last
update fell in the bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from leadrelay.delivery.store import Counts
from leadrelay.outcome import State

BUCKET_LEVELS: Final = ((1, 2 * 3600), (60, 2 * 86400), (3600, 40 * 86400))
"""Counter buckets: (seconds per bucket, how long they are kept after their last change)."""

_ALL_STATES: Final = tuple(s.value for s in State)


def levels_for(bucket_s: int | None) -> list[str]:
    """The bucket sizes to read: all of them for ``counts``; for a timeline, those that fit
    whole in one of its buckets."""
    return [str(g) for g, _ in BUCKET_LEVELS if bucket_s is None or bucket_s % g == 0]


def _pairs(flat: Sequence[bytes]) -> list[tuple[str, str, int]]:
    out = []
    for field, n in zip(flat[::2], flat[1::2], strict=True):
        state, _, reason = field.decode().partition("|")
        out.append((state, reason, int(n)))
    return out


def to_counts(answer: Sequence[Any], *, all_time: bool) -> Counts:
    """``Counts`` from the COUNTS script's answer."""
    queued, in_flight, oldest, raw = answer
    tables = [raw] if all_time else raw[2::3]
    by_state = dict.fromkeys(_ALL_STATES, 0)
    by_reason: dict[tuple[str, str], int] = {}
    for flat in tables:
        for state, reason, n in _pairs(flat):
            by_state[state] = by_state.get(state, 0) + n
            if reason:
                by_reason[(state, reason)] = by_reason.get((state, reason), 0) + n
    by_reason = {k: n for k, n in by_reason.items() if n}
    oldest_at = None if oldest is None else float(oldest)
    return Counts(by_state, by_reason, int(queued), int(in_flight), oldest_at)


def to_timeline(raw: Sequence[Any], bucket_s: int) -> list[tuple[float, dict[str, int]]]:
    """Timeline rows (epoch-aligned ``bucket_s`` buckets, ascending, empty ones left out) from
    the bucket part of the COUNTS script's answer."""
    rows: dict[float, dict[str, int]] = {}
    for start, flat in zip(raw[1::3], raw[2::3], strict=True):
        row = rows.setdefault(float(int(start) // bucket_s * bucket_s), {})
        for state, _, n in _pairs(flat):
            row[state] = row.get(state, 0) + n
    out = []
    for start in sorted(rows):
        kept = {state: n for state, n in rows[start].items() if n}
        if kept:
            out.append((start, kept))
    return out
