"""What ``WriteBehindStore`` keeps in memory: where each event of an add goes (memory, the store,
or nowhere: its key is held in memory already), and what the events there say of themselves.

``place`` decides it for a chunk, from what memory holds and what the store was found to hold; it
changes nothing, so a store that then fails (a full disk) leaves memory as it was and the same
chunk can be added again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from leadrelay.delivery.encoded import EncodedPayload, fits_int64, storable
from leadrelay.delivery.store import Counts, Incoming
from leadrelay.delivery.store_rows import Stage, other_stages
from leadrelay.outcome import Payload, State


@dataclass
class Placed:
    """Where ``place`` put a chunk's events, in the chunk's order."""

    ids: list[int] = field(default_factory=list)  # 0 where the store will say it
    new: list[bool] = field(default_factory=list)  # kept in memory (new), or as the store says
    rest: list[Incoming] = field(default_factory=list)  # for the store, at ``places`` of ids
    places: list[int] = field(default_factory=list)
    waiting: list[tuple[int, Incoming]] = field(default_factory=list)  # for memory, with ids
    sizes: list[int] = field(default_factory=list)  # ``size`` of each of ``waiting``
    in_memory: dict[str, int] = field(default_factory=dict)  # their keys
    held_again: list[tuple[int, int]] = field(default_factory=list)  # (place, id): key in memory


def place(
    items: Sequence[Incoming],
    held: dict[str, int],
    stored: dict[str, int],
    keep: int,
    room: int,
    next_id: int,
) -> Placed:
    """Where ``items`` go, given the keys ``held`` in memory and those found ``stored`` (key ->
    id: negative in memory, positive stored), room for ``keep`` more events and ``room`` more
    bytes in memory, and ``next_id`` the id of the next one kept there (then one less each).

    A payload whose key is in memory (held, or earlier in the chunk) is that event again: its
    id, not new. One whose key is stored goes to the store, which may let it take the place of
    an event Meta never took (``Store.add``), and so does every later one with the key (the
    store takes the first, and says its id). Other payloads wait in memory while there is room,
    as the ``EncodedPayload`` the store would keep (``storable``); the rest go to the store."""
    out = Placed()
    ids, new, rest, places = out.ids, out.new, out.rest, out.places
    in_memory, held_again = out.in_memory, out.held_again
    to_store: set[str] = set()
    # Once per event, so names are bound here; ids in memory are negative, stored ones positive:
    # neither is 0.
    held_id, added_id, stored_id = held.get, in_memory.get, stored.get
    wait, size_of = out.waiting.append, out.sizes.append
    for item in items:
        o = item.outcome
        key = o.key
        if key and key not in to_store:
            known = held_id(key) or added_id(key) or stored_id(key)
            # An outcome for a key stored before goes to the store: it may take the place of an
            # event Meta never took (``Store.add``). Not one in memory.
            if known and known < 0:
                if isinstance(o, Payload):
                    held_again.append((len(ids), known))
                ids.append(known)
                new.append(False)
                continue
            if known:
                to_store.add(key)
                places.append(len(ids))
                ids.append(0)
                new.append(False)
                rest.append(item)
                continue
        if keep > 0 and key not in to_store:
            payload = storable(o)
            if payload is not None:
                n = size(payload, item)
                if n <= room:
                    if payload is not o:
                        item = Incoming(payload, item.original, item.received_at)
                    wait((next_id, item))
                    size_of(n)
                    if key:
                        in_memory[key] = next_id
                    ids.append(next_id)
                    new.append(True)
                    next_id -= 1
                    keep -= 1
                    room -= n
                    continue
        if key:
            to_store.add(key)  # the store takes the first one, and says its id
        places.append(len(ids))
        ids.append(0)
        new.append(False)
        rest.append(item)
    return out


def all_new(
    items: Sequence[Incoming],
    keys: list[str],
    held: dict[str, int],
    keep: int,
    room: int,
    next_id: int,
) -> Placed | None:
    """What ``place`` makes of ``items`` (none of whose keys is stored) when every payload among
    them waits in memory as it is (most chunks of a send), else None; in one pass, without
    looking each key up three times. So it is when each payload is encoded as the store keeps
    it, its numbers within 64 bits, with a key of its own (``keys``: the payloads' keys that are
    not empty, in order) that none ``held`` in memory has, and there is room for their number
    (``keep``) and bytes; and when the other outcomes (filtered, rejected: the store's) have
    keys that none of those has (they would be those events again)."""
    mine = set(keys)
    if len(mine) != len(keys) or not held.keys().isdisjoint(mine):
        return None
    out = Placed()
    ids, new, wait, size_of = out.ids, out.new, out.waiting.append, out.sizes.append
    in_memory = out.in_memory
    for n, item in enumerate(items):
        o = item.outcome
        if type(o) is EncodedPayload:
            if not fits_int64(o):
                return None
            wait((next_id, item))
            size_of(size(o, item))
            if o.key:
                in_memory[o.key] = next_id
            ids.append(next_id)
            new.append(True)
            next_id -= 1
        elif isinstance(o, Payload) or (o.key and (o.key in mine or o.key in held)):
            return None  # not encoded yet; or the same event as one in memory
        else:
            out.places.append(n)
            ids.append(0)
            new.append(False)
            out.rest.append(item)
    if len(out.waiting) > keep or sum(out.sizes) > room:
        return None
    return out


def payload_of(item: Incoming) -> EncodedPayload:
    """The payload of an event in memory (only those are: see ``place``)."""
    payload = item.outcome
    assert isinstance(payload, EncodedPayload)
    return payload


def size(payload: EncodedPayload, item: Incoming) -> int:
    """What an event in memory holds, roughly: its payload and the event as received."""
    return len(payload.body or b"") + len(item.original or b"")


def other_stages_held(
    items: Sequence[Incoming],
    held_again: list[tuple[int, int]],
    in_memory: Iterable[tuple[int, Incoming]],
) -> dict[int, tuple[str, str, bool]]:
    """``Added.other_stages`` of the payloads at ``held_again`` (place, id), whose key is held
    in memory (``in_memory``: the events of the add, waiting or claimed, with their ids). Rare
    (a key twice): the events in memory are looked through."""
    wanted = {i for _, i in held_again}
    stages: dict[int, Stage] = {}  # of those in memory: not settled yet, as queued ones
    for i, item in in_memory:
        if i in wanted and isinstance(o := item.outcome, Payload):
            stages[i] = Stage(State.QUEUED, o.event_name, item.received_at, o.source_event, 0)
    return other_stages(items, held_again, stages)


def with_memory(
    counts: Counts, waiting: Sequence[Incoming], held: Sequence[Incoming], since: float | None
) -> Counts:
    """The store's ``counts`` with the events in memory: those ``waiting`` QUEUED, those
    ``held`` (claimed, being sent) IN_FLIGHT; in ``by_state`` when received since ``since``
    (the queue's rows keep their time of arrival until their outcome is stored)."""
    oldest = waiting[0].received_at if waiting else None
    if held:  # claimed, being sent: not settled either
        first = min(item.received_at for item in held)
        oldest = first if oldest is None else min(oldest, first)
    if since is None:
        recent_waiting, recent_held = len(waiting), len(held)
    else:
        recent_waiting = sum(item.received_at >= since for item in waiting)
        recent_held = sum(item.received_at >= since for item in held)
    by_state = dict(counts.by_state)
    by_state[State.QUEUED.value] = by_state.get(State.QUEUED.value, 0) + recent_waiting
    by_state[State.IN_FLIGHT.value] = by_state.get(State.IN_FLIGHT.value, 0) + recent_held
    if counts.oldest_queued_at is not None and oldest is not None:
        oldest = min(oldest, counts.oldest_queued_at)
    return replace(
        counts,
        by_state=by_state,
        queued=counts.queued + len(waiting),
        in_flight=counts.in_flight + len(held),
        oldest_queued_at=counts.oldest_queued_at if oldest is None else oldest,
    )
