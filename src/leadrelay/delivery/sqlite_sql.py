"""The statements the SQLite store runs on ``events`` and ``bodies`` (see ``sqlite_schema``).

Kept together, apart from the transactions of ``sqlite_store``, so that their query plans can be
read side by side: each one must use the primary key or one of the indexes, never scan the
table (``EXPLAIN QUERY PLAN`` them after changing one).
"""

from __future__ import annotations

from typing import Final

from leadrelay.delivery.sqlite_schema import OPEN
from leadrelay.delivery.store import REPLAYABLE_STATES

KEYS: Final = (
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
REPLACE_PAYLOAD: Final = (
    "INSERT INTO bodies (id, payload, notes) VALUES (?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET payload = excluded.payload, notes = excluded.notes"
)
DROP_DELIVERED: Final = (  # of the events just completed, those that are delivered now
    "DELETE FROM bodies WHERE id IN (SELECT value FROM json_each(?))"
    " AND (SELECT state FROM events e WHERE e.id = bodies.id) = 'delivered'"
)
# The unary + keeps the planner on the primary key, so each chunk goes on from the last id.
PURGEABLE: Final = (
    "SELECT id FROM events WHERE id > ? AND +state = 'delivered' AND +updated_at < ? ORDER BY id"
    " LIMIT ?"
)
# Dropping bodies walks the bodies left (delivered ones lose theirs), not every event.
BODIES_PURGEABLE: Final = (
    "SELECT b.id FROM bodies b JOIN events e ON e.id = b.id WHERE b.id > ?"
    " AND e.state = 'delivered' AND e.updated_at < ? ORDER BY b.id LIMIT ?"
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
