"""The statements the SQLite store runs on ``events`` and ``bodies`` (see ``sqlite_schema``).

Kept together, apart from the transactions of ``sqlite_store``, so that their query plans can be
read side by side: each one must use the primary key or one of the indexes, never scan the
table (``EXPLAIN QUERY PLAN`` them after changing one).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain
from typing import Any, Final

import orjson

from leadrelay.delivery.sqlite_schema import OPEN
from leadrelay.delivery.store import REPLAYABLE_STATES

_KEYS: Final = (
    "SELECT key, id FROM events WHERE key != '' AND key IN (SELECT value FROM json_each(?))"
)
BODY_OF: Final = "(SELECT {} FROM bodies b WHERE b.id = events.id)"
# Claiming selects in claim order, then marks what it selected (in the same transaction): a
# tenth cheaper than one UPDATE ... RETURNING, whose rows come back unordered besides.
CLAIM: Final = (
    "SELECT next_attempt_at, id, key, source_event, event_name, lead_id, event_time, attempts"
    " FROM events WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at, id"
    " LIMIT ?"
)
MARK_IN_FLIGHT: Final = (
    "UPDATE events SET state = 'in_flight' WHERE id IN (SELECT value FROM json_each(?))"
)
PAYLOADS: Final = (
    "SELECT id, payload, notes FROM bodies WHERE id IN (SELECT value FROM json_each(?))"
)
COMPLETE: Final = (
    "UPDATE events SET state = ?, updated_at = ?, next_attempt_at = ?, attempts = attempts + ?,"
    " reason = ?, message = ?, code = ?, subcode = ?, fbtrace_id = ?, response = ?"
    # The unary + keeps the planner on the ids: the claim index would walk the whole backlog.
    " WHERE id IN (SELECT value FROM json_each(?)) AND +state IN ('queued', 'in_flight')"
)
RETRY: Final = (
    "UPDATE events SET state = 'queued', next_attempt_at = ?, updated_at = ?,"
    " attempts = attempts + ?, reason = ?, message = ?, code = NULL, subcode = NULL,"
    f" fbtrace_id = NULL WHERE id = ? AND {OPEN}"
)
REPLAYABLE: Final = "state IN ({})".format(", ".join(f"'{s.value}'" for s in REPLAYABLE_STATES))
RESET: Final = (
    "state = 'queued', next_attempt_at = ?, updated_at = ?, attempts = 0, reason = NULL,"
    " message = NULL, field = NULL, value = NULL, code = NULL, subcode = NULL,"
    " fbtrace_id = NULL, response = NULL"
)
REQUEUE: Final = (
    f"UPDATE events SET {RESET} WHERE id = ? AND {REPLAYABLE}"
    f" AND {BODY_OF.format('payload')} IS NOT NULL"
)
REQUEUE_WITH: Final = (
    f"UPDATE events SET {RESET}, source_event = ?, event_name = ?, lead_id = ?, event_time = ?"
    f" WHERE id = ? AND {REPLAYABLE}"
)
TAKE_PLACE: Final = (  # a payload in place of an event Meta never took: received anew (_map_again)
    f"UPDATE events SET {RESET}, received_at = ?, source_event = ?, event_name = ?, lead_id = ?,"
    f" event_time = ? WHERE id = ? AND {REPLAYABLE}"
)
REPLACE_BODY: Final = (  # payload, notes and the event as received, of an event mapped again
    "INSERT INTO bodies (id, payload, notes, original) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET payload = excluded.payload, notes = excluded.notes,"
    " original = excluded.original"
)
REPLACE_PAYLOAD: Final = (
    "INSERT INTO bodies (id, payload, notes) VALUES (?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET payload = excluded.payload, notes = excluded.notes"
)
DROP_DELIVERED: Final = (  # of the events just completed, those that are delivered now
    "DELETE FROM bodies WHERE id IN (SELECT value FROM json_each(?))"
    " AND (SELECT state FROM events e WHERE e.id = bodies.id) = 'delivered'"
)
# Purging selects (id, where the next chunk starts) after a start, before a time. Deleting
# records walks the events of before that time only (events_updated), from the time where the
# last chunk ended: those a chunk deletes are gone, the others (dead letters) are passed once
# (those of the very time a chunk starts from, once per such chunk: a batch's worth at most).
# (Walking every event by id, a send of 1,000,000 spent 0.13 s at its end finding none.)
PURGEABLE: Final = (  # parameters: from, before, state, limit
    "SELECT id, updated_at FROM events WHERE updated_at >= ? AND updated_at < ?"
    " AND state = ? ORDER BY updated_at LIMIT ?"
)
# Dropping bodies walks the bodies left (delivered ones lose theirs), not every event.
BODIES_PURGEABLE: Final = (
    "SELECT b.id, b.id FROM bodies b JOIN events e ON e.id = b.id WHERE b.id > ?"
    " AND e.updated_at < ? AND e.state = ? ORDER BY b.id LIMIT ?"
)
# The read side (``sqlite_reads``): outcomes by state and reason, the open backlog, a timeline.
COUNTS: Final = (
    "SELECT state, reason, count(*) FROM events WHERE updated_at >= ? GROUP BY state, reason"
)
BACKLOG: Final = f"SELECT state, count(*), min(received_at) FROM events WHERE {OPEN} GROUP BY state"
TIMELINE: Final = (
    "SELECT CAST(updated_at / ?1 AS INTEGER) AS b, state, count(*) FROM events"
    " WHERE updated_at >= ?2 GROUP BY b, state ORDER BY b"
)


def stored_ids(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, int]:
    """The ids of those of ``keys`` that are stored, by key (the empty key is never)."""
    return dict(conn.execute(_KEYS, (orjson.dumps(keys),)))


# Stored events Meta never took: never sent (filtered, refused by our rules, expired in the
# queue), or refused by Meta (reason meta_<code>...), with the payload that Meta refused. What
# is added later for the same key may take their place (``_map_again``) without sending
# anything twice.
_NOT_TAKEN: Final = (
    "SELECT e.id, e.attempts = 0 AND e.state IN ('filtered', 'rejected', 'expired'), b.payload,"
    " e.state, e.reason, e.message, e.event_name, e.source_event"
    " FROM events e LEFT JOIN bodies b ON b.id = e.id"
    " WHERE e.id IN (SELECT value FROM json_each(?))"
    " AND (e.attempts = 0 AND e.state IN ('filtered', 'rejected', 'expired')"
    " OR e.state = 'rejected' AND e.reason LIKE 'meta|_%' ESCAPE '|')"
)


def not_taken(
    conn: sqlite3.Connection, ids: Sequence[int]
) -> dict[int, tuple[bytes | tuple[str, str | None, str | None], str | None, str]]:
    """Those of ``ids`` stored as events Meta never took: for one never sent, its (state,
    reason, message); for one Meta refused, the payload it refused (see ``_NOT_TAKEN``); each
    with its Facebook and user's event name (``another_stage``)."""
    rows = conn.execute(_NOT_TAKEN, (orjson.dumps(ids),))
    return {
        id_: ((state, reason, message) if never else (payload or b""), name, source or "")
        for id_, never, payload, state, reason, message, name, source in rows
    }


REFUSE_WITH: Final = (  # a refusal in place of a stored event never sent (see _map_again)
    "UPDATE events SET state = ?, source_event = ?, event_name = ?, lead_id = ?,"
    " event_time = ?, received_at = ?, updated_at = ?, next_attempt_at = NULL, attempts = 0,"
    " reason = ?, message = ?, field = ?, value = ?, code = ?, subcode = ?, fbtrace_id = ?,"
    " response = NULL WHERE id = ?"
)


# Rows per statement, at most: SQLite runs a statement's prologue and epilogue once per execution
# (for ``events``, AUTOINCREMENT reads and rewrites ``sqlite_sequence`` each time): for
# executemany, once per row, half of what inserting a delivered event cost. Fewer where the
# connection binds fewer parameters than 100 rows take (999 before SQLite 3.32, unless built
# otherwise; 32,766 since).
_MOST_ROWS: Final = 100
_NUMBERED: Final = re.compile(r"\?(\d+)")
_statements: dict[tuple[str, int], str] = {}
_widths: dict[str, int] = {}


def insert_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``conn.executemany(sql, rows)`` for an ``INSERT ... VALUES (...)`` of one row, done with
    as few statements as it takes: 100 rows each (fewer if the connection binds fewer
    parameters), then 10, then one at a time (the same rows, in order)."""
    sizes = _sizes(conn, _width(sql))
    _in_statements(conn, rows, sizes, partial(_rows_statement, sql))


def _in_statements(
    conn: sqlite3.Connection,
    rows: Sequence[Sequence[Any]],
    sizes: tuple[int, ...],
    statement: Callable[[int], str],
    shared: tuple[Any, ...] = (),
) -> None:
    """Execute ``statement(size)`` for ``rows``, ``size`` rows at a time, the largest of
    ``sizes`` first (the last size is 1), each with its rows' values and then ``shared``."""
    done, n = 0, len(rows)
    for size in sizes:
        if n - done < size:
            continue
        text = statement(size)
        while n - done >= size:
            conn.execute(text, [*chain.from_iterable(rows[done : done + size]), *shared])
            done += size


def _sizes(conn: sqlite3.Connection, width: int, shared: int = 0) -> tuple[int, ...]:
    """Rows per statement, largest first, for rows of ``width`` parameters and ``shared`` more
    bound once: 100 and 10 where the connection's limit allows, as many as it does where not,
    and 1."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    most = max(1, min(_MOST_ROWS, (limit - shared) // max(1, width)))
    return tuple(sorted({most, min(10, most), 1}, reverse=True))


def _width(sql: str) -> int:
    """The parameters one row of ``sql`` binds (``INSERT ... VALUES (...)``). Counted once."""
    if (width := _widths.get(sql)) is not None:
        return width
    row = _row(sql)[1]
    numbers = [int(n) for n in _NUMBERED.findall(row)]
    _widths[sql] = width = max(numbers) if numbers else row.count("?")
    return width


def _row(sql: str) -> tuple[str, str]:
    """``sql`` split at VALUES: what comes before, and the row after."""
    head, values, row = sql.partition(" VALUES ")
    if not values or not (row.startswith("(") and row.endswith(")")):
        raise ValueError(f"not an INSERT of one row of VALUES: {sql!r}")
    return head, row


def _rows_statement(sql: str, size: int) -> str:
    """``sql`` (``INSERT ... VALUES (...)``) inserting ``size`` rows; numbered parameters (``?3``)
    are numbered on from row to row, so that each row binds its own values. Made once."""
    if (statement := _statements.get((sql, size))) is not None:
        return statement
    head, row = _row(sql)
    if _NUMBERED.search(row):
        width = _width(sql)
        rows = [_renumbered(row, k * width) for k in range(size)]
    else:
        rows = [row] * size
    statement = f"{head} VALUES {', '.join(rows)}"
    _statements[(sql, size)] = statement
    return statement


def _renumbered(row: str, by: int) -> str:
    """``row`` with each numbered parameter ``?n`` made ``?(n + by)``."""
    return _NUMBERED.sub(lambda m: f"?{int(m[1]) + by}", row)


_DELIVERED_INTO: Final = (  # of INSERT ... VALUES, as ``insert_delivered`` writes it
    "events (id, key, state, source_event, event_name, lead_id, event_time, received_at,"
    " updated_at, attempts, message, fbtrace_id)"
)


def insert_delivered(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[Any, ...]],
    now: float,
    message: str | None,
    fbtrace_id: str | None,
) -> None:
    """Insert events delivered at one request, at its first attempt: ``rows`` of (id, key,
    source_event, event_name, lead_id, event_time, received_at), and what they share (their
    ``updated_at``, message and fbtrace_id) bound once per statement, not once per row: the
    rows ``INSERT_DELIVERED`` makes of each, with ``attempts`` 1."""
    sizes = _sizes(conn, 7, shared=3)
    _in_statements(conn, rows, sizes, _delivered_statement, (now, message, fbtrace_id))


def _delivered_statement(size: int) -> str:
    """``insert_delivered``'s statement for ``size`` rows: 7 parameters each, then the 3 shared.
    Made once."""
    if (statement := _statements.get((_DELIVERED_INTO, size))) is not None:
        return statement
    at = 7 * size
    rows = ", ".join(
        f"(?{k + 1}, ?{k + 2}, 'delivered', ?{k + 3}, ?{k + 4}, ?{k + 5}, ?{k + 6}, ?{k + 7},"
        f" ?{at + 1}, 1, ?{at + 2}, ?{at + 3})"
        for k in range(0, at, 7)
    )
    statement = f"INSERT INTO {_DELIVERED_INTO} VALUES {rows}"
    _statements[(_DELIVERED_INTO, size)] = statement
    return statement
