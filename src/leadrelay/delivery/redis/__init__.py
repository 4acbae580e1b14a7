"""The scale-out ``Store``: one Redis (or one Redis Cluster slot) shared by many processes.

Any number of intake processes (``serve``) and delivery processes (``worker``) on any machines
share one queue. Same protocol and same semantics as ``SQLiteStore``, with these additions:
several consumers deliver at once, a dead consumer's events are taken over, poison events are set
aside, throttling pauses the whole fleet, and the events of one lead go out in acceptance order.

Keys (prefix ``lr`` by default; ``{...}`` is a Cluster hash tag, so all keys of one deployment
share one slot and every script is single-slot; shard by running deployments with their own
prefixes):

- ``{lr}:e:<id>`` one small hash per event (fields listed in ``lua_common``), its payload,
  notes and original in ``{lr}:p:<id>``, ``{lr}:n:<id>``, ``{lr}:o:<id>``; ids come from
  ``{lr}:seq``, ``{lr}:keys`` maps an event key to its id (the dedupe, checked in the same script
  as the write, so a resent event is never stored twice).
- ``{lr}:q`` the queue, a stream read through the consumer group ``delivery``: ``add`` appends
  one entry per queued event. ``claim`` first XAUTOCLAIMs entries other consumers have held for
  more than ``claim_idle_s`` (they died), then XREADGROUPs new ones. ``complete`` records the
  outcome and XACKs (and XDELs) the entry in the same script: an event is acknowledged only once
  its outcome is recorded, so a consumer killed at any point loses nothing.
- ``{lr}:delayed`` a sorted set of queued events not due yet (``retry_later``, ``requeue``),
  scored by due time; ``claim`` and ``add`` move the due ones into the stream first, in due
  order, so the stream stays close to due order and a backlog does not starve retries.
- ``{lr}:l:<lead_id>`` per lead, its open (queued or in-flight) events in acceptance order.
  ``claim`` hands out an event only when every earlier open event of its lead is in the same
  claim (usually: it is the first). Otherwise the event is *parked* (flag ``h``, out of the
  stream) and goes back into the stream when the events before it are finished. So two workers
  never hold events of one lead at once, and a lead's events go out in the order accepted
  (several of them may share one batch, in order). A replayed event goes behind its lead's open
  events.
- An entry handed out more than ``max_deliveries`` times without a result (its consumers keep
  dying on it) goes DEAD with reason ``poison``. Every event that goes DEAD is also appended to
  the dead-letter stream ``{lr}:dead`` (id, key, reason, message, time), capped at
  ``dead_letter_maxlen`` entries; ``events(states=[DEAD])`` remains the full list.
- ``{lr}:s:<state>`` the ids per state, for ``events`` paging and ``purge``: a sorted set for
  queued and in_flight, a bitmap for the final states (a bit per id, so retention costs
  megabytes, not gigabytes). ``{lr}:totals`` counts per (state, reason); ``{lr}:b<size>:<start>``
  the same counts for the events last updated in that second / minute / hour, kept 2 hours,
  2 days, 40 days, so ``counts(since)`` and ``timeline`` read a few hundred small hashes, not the
  events, and show the whole fleet.
- ``{lr}:pause`` a fleet-wide pause (``pause_until``/``paused_until``), with a PX expiry.

``release_in_flight`` takes back only what this consumer holds (a restart under the same consumer
name); other consumers' entries are reclaimed by ``claim`` once idle for ``claim_idle_s``. A
long delivery (retries with backoff) keeps its events with ``renew``.

Every state change is one Lua script (one round trip; ``add`` of a 1000-event batch included),
atomic, so a process killed at any point leaves a consistent store. Two workers never hold
events of one lead at once, except when one is taken over after ``claim_idle_s`` while its first
holder was still alive (then it may be delivered twice: at least once, never lost).

Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` an ``add`` is on disk
when it returns, like SQLite's ``FULL``; ``everysec`` may lose the last second on power loss. A
Redis without an append-only file is refused where events are to be stored (unless
``require_aof=False``), and a ``maxmemory-policy`` that evicts any key (``allkeys-*``) always
is. See ``docs/redis.md``.
"""

from leadrelay.delivery.redis.connection import default_consumer
from leadrelay.delivery.redis.store import RedisStore

__all__ = ["RedisStore", "default_consumer"]
