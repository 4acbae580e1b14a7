"""Where the write-behind store puts a chunk's events: the shortcut for a chunk whose payloads all
wait in memory (``all_new``) applies exactly when the event-by-event way (``place``) would keep
every payload there as it is, and then puts every event where ``place`` does."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from leadrelay.delivery.encoded import EncodedPayload
from leadrelay.delivery.store import Incoming
from leadrelay.delivery.write_behind_memory import all_new, place
from leadrelay.outcome import Filtered, Payload


def example_each(chunks: list[Any]) -> Any:
    """``hypothesis.example`` for each of ``chunks``: tried first, every run."""

    def add(test: Any) -> Any:
        for chunk in chunks:
            test = example(chunk)(test)
        return test

    return add


KEYS = ["a", "b", "c", "d", "e", "f", "g", ""]  # the empty key last: drawn the least


@st.composite
def outcomes(draw: st.DrawFn) -> Payload | Filtered:
    key = draw(st.sampled_from(KEYS))
    kind = draw(st.sampled_from(["encoded", "encoded", "encoded", "payload", "filtered", "wide"]))
    if kind == "filtered":
        return Filtered(key, "lead_created", "unmapped", "no mapping")
    data = {"event_name": "Lead", "k": key, "n": draw(st.integers(0, 10**6))}
    lead_id = 2**63 if kind == "wide" else 123456789012345  # past 64 bits: the store's
    if kind == "payload":
        return Payload(key, "lead_created", "Lead", lead_id, 1767799000, data)
    return EncodedPayload(key, "lead_created", "Lead", lead_id, 1767799000, orjson.dumps(data))


@st.composite
def chunks(draw: st.DrawFn) -> tuple[list[Incoming], dict[str, int], int, int]:
    """Events of a chunk, the keys held in memory, room for a number of events and of bytes.
    None of the keys is stored: ``WriteBehindStore`` asks ``all_new`` only then."""
    items = [
        Incoming(o, draw(st.sampled_from([None, b"{}", b'{"a": 1}'])), 1.0)
        for o in draw(st.lists(outcomes(), max_size=8))
    ]
    held = {
        k: -100 - n for n, k in enumerate(draw(st.lists(st.sampled_from(KEYS[:-1]), max_size=2)))
    }
    return items, held, draw(st.integers(0, 10)), draw(st.integers(0, 600))


def _encoded(key: str, lead_id: int = 123456789012345) -> Incoming:
    body = orjson.dumps({"event_name": "Lead", "k": key})
    return Incoming(EncodedPayload(key, "e", "Lead", lead_id, 1767799000, body), b"{}", 1.0)


def _filtered(key: str) -> Incoming:
    return Incoming(Filtered(key, "e", "unmapped", "m"), None, 1.0)


Chunk = tuple[list[Incoming], dict[str, int], int, int]
# Each way a chunk falls short of its payloads waiting in memory, alone (hypothesis mixes them),
# and the chunks that do with other outcomes beside them.
SHORT_OF_IT: list[Chunk] = [
    ([_encoded("a"), _encoded("b")], {}, 5, 600),  # it does
    ([_encoded("a"), _encoded("a")], {}, 5, 600),  # a key twice
    ([_encoded("a"), _encoded("b")], {"b": -3}, 5, 600),  # a key held in memory
    ([_encoded("a"), _encoded("b", 2**63)], {}, 5, 600),  # a lead id past 64 bits
    ([_encoded("a"), _encoded("b")], {}, 1, 600),  # room for one event
    ([_encoded("a"), _encoded("b")], {}, 5, 60),  # room for the bytes of one
    ([_encoded("a"), _encoded("b")], {}, 2, 58),  # room for both, to the byte
    ([_encoded("a"), _encoded("")], {}, 5, 600),  # no key: it does, not found by key
    ([Incoming(Payload("a", "e", "Lead", 1, 2, {"k": 1}), None, 1.0)], {}, 5, 600),  # not encoded
    ([_encoded("a"), _filtered("b")], {}, 5, 600),  # it does, the other outcome to the store
    ([_filtered("b"), _filtered("b"), _filtered(""), _encoded("a")], {}, 5, 600),  # it does
    ([_filtered("a"), _filtered("b")], {}, 0, 0),  # it does: no payload, no room needed
    ([_encoded("a"), _filtered("a")], {}, 5, 600),  # an outcome for a payload just kept
    ([_filtered("a"), _encoded("a")], {}, 5, 600),  # a payload for a key going to the store
    ([_encoded("a"), _filtered("b")], {"b": -3}, 5, 600),  # an outcome for a key held
]


@settings(max_examples=1000, deadline=None)
@given(chunks())
@example_each(SHORT_OF_IT)
def test_all_new_applies_exactly_when_place_keeps_every_payload_as_it_is(chunk: Chunk) -> None:
    items, held, keep, room = chunk
    keys = [k for i in items if isinstance(o := i.outcome, Payload) and (k := o.key)]
    placed = place(items, held, {}, keep, room, -7)
    payloads = [i for i in items if isinstance(i.outcome, Payload)]
    kept_as_is = (
        len(placed.waiting) == len(payloads)
        and all(w is i for (_, w), i in zip(placed.waiting, payloads, strict=True))
        and sum(1 for i in placed.ids if i < 0) == len(payloads)  # none is an event again
    )
    fast = all_new(items, keys, held, keep, room, -7)
    assert (fast is not None) == kept_as_is
    if fast is not None:
        assert fast == placed
