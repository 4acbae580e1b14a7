"""``Mapper.map_parts`` (what the bulk encoder of ``--dry-run`` maps NDJSON lines with) gives
the fields of the payload ``Mapper.map`` gives, so encoding lines gives what encoding the same
events one outcome at a time gives: the same bodies, rows and count."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import NOW, make_settings
from leadrelay.events import LineBatch
from leadrelay.events.ndjson import read_ndjson, split_ndjson
from leadrelay.mapping.encode import encode_unit
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.parallel import _SLICE, BodyWriter
from leadrelay.mapping.plans import lead_digits, ms_digits
from leadrelay.meta.rules import MAX_AGE_S, MAX_FUTURE_S
from leadrelay.outcome import Payload

_MAPPER = Mapper(
    make_settings(mapping={"lead_qualified": "Qualified", "deal_won": "Converted"}),
    clock=lambda: NOW,
)
_MS = int(NOW * 1000)
_TEXT = st.sampled_from(
    ["Léa", "", " ", "F", "x", "CA", "FR", "Atlantis", "75011", "bad", "x@example.com",
     "+33 6 12 34 56 78", "06 12 34 56 78", "1950-02-30", "1950-01-31"]
)  # fmt: skip
_USER = st.dictionaries(
    st.sampled_from(["email", "phone", "gender", "state", "zipcode", "country", "birthdate"]),
    st.one_of(_TEXT, st.none(), st.integers(-3, 10), st.lists(_TEXT, max_size=2)),
)
_EVENT = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(["lead_qualified", "deal_won", "nope", None]),
        "facebook_lead_id": st.sampled_from([123456789012345, "123456789012346", "12", None]),
        "user": _USER,
        "context": st.fixed_dictionaries(
            {
                "event_id": st.sampled_from(["e-1", None, 5]),
                "event_timestamp": st.sampled_from([_MS - 5000, str(_MS), "x", _MS + 10**9]),
            }
        ),
    }
)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(_EVENT, max_size=8), every_payload=st.booleans())
def test_encoding_lines_gives_what_encoding_each_outcome_gives(
    events: list[dict[str, Any]], every_payload: bool
) -> None:
    lines = [orjson.dumps(e) for e in events]
    by_lines = encode_unit(_MAPPER, [LineBatch("f", 0, lines)], every_payload)
    records = [(f"f line {n}", e, None) for n, e in enumerate(events, 1)]
    by_outcomes = encode_unit(_MAPPER, list(records), every_payload)
    assert by_lines == by_outcomes


@settings(max_examples=200, deadline=None)
@given(event=_EVENT)
def test_the_parts_are_the_payload_fields(event: dict[str, Any]) -> None:
    outcome = _MAPPER.map(event)
    parts = _MAPPER.map_parts(event)
    if isinstance(outcome, Payload):
        assert Payload(*parts) == outcome  # type: ignore[misc]
    else:
        assert parts == outcome


_ODD_LEAD_IDS = [
    "0123456789012345", " 123456789012345", 12345678901234567890, 10**14 - 1, 10**17, True,
    1.5e14, "12", None,
]  # fmt: skip
_ODD_TIMES = [
    "x", _MS + 10**9, None, True, "2026-11-29T10:00:00Z", _MS - 8 * 86_400_000, str(_MS)[:-1],
    NOW - 8 * 86400, 10**11 - 1, _MS + (MAX_FUTURE_S + 5) * 1000, NOW + MAX_FUTURE_S + 5,
    _MS - (MAX_AGE_S - 5) * 1000, NOW - MAX_AGE_S,
]  # fmt: skip


def _usual_or(usual: list[Any], odd: list[Any]) -> st.SearchStrategy[Any]:
    """Half the time a value the usual way takes, else one it hands to the general way."""
    return st.one_of(st.sampled_from(usual), st.sampled_from(odd))


_ODD_EVENT = st.fixed_dictionaries(
    {
        "event_name": _usual_or(["lead_qualified", "deal_won"], ["nope", None, 3]),
        "facebook_lead_id": _usual_or([123456789012345, "12345678901234567"], _ODD_LEAD_IDS),
        "user": _USER,
        "context": _usual_or(
            [{"event_id": "e-1"}, {"event_id": " e-2 "}], [{"event_id": i} for i in (" ", "", 5)]
        ).flatmap(
            lambda context: _usual_or([_MS - 5000, str(_MS), NOW - 60], _ODD_TIMES).map(
                lambda at: {**context, "event_timestamp": at}
            )
        )
        | st.sampled_from([None, "ctx", {}]),
    }
)


def test_the_usual_config_takes_the_usual_way() -> None:
    # mapping.usual's, not the general way (compared, not named: compiled, it has no __name__)
    assert _MAPPER.map_parts != _MAPPER._parts


def _usual_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": "deal_won",
        "facebook_lead_id": 123456789012345,
        "user": {"email": "a@example.com", "phone": "06 12 34 56 78", "country": "FR"},
        "context": {"event_id": "e-1", "event_timestamp": _MS - 5000},
    }
    for key, value in changes.items():
        if key in ("event_id", "event_timestamp"):
            event["context"][key] = value
        else:
            event[key] = value
    return event


_EACH_ODD = [
    *({"event_name": v} for v in ("nope", None, 3)),
    *({"facebook_lead_id": v} for v in _ODD_LEAD_IDS),
    *({"context": v} for v in (None, "ctx", {})),
    *({"event_id": v} for v in (" e-2 ", " ", "", 5, None)),
    *({"event_timestamp": v} for v in _ODD_TIMES),
]


@pytest.mark.parametrize("changes", [{}, *_EACH_ODD], ids=repr)
def test_an_event_odd_in_one_way_gets_what_the_general_way_gives(changes: dict[str, Any]) -> None:
    event = _usual_event(**changes)
    assert _MAPPER.map_parts(event) == _MAPPER._parts(event)


@settings(max_examples=1000, deadline=None)
@given(event=_ODD_EVENT)
def test_the_usual_way_gives_what_the_general_way_gives(event: dict[str, Any]) -> None:
    """Every event, usual or not, gets from ``map_parts`` what the general way gives it."""
    assert _MAPPER.map_parts(event) == _MAPPER._parts(event)


_GENERAL = Mapper(
    _MAPPER_SETTINGS := make_settings(mapping={"deal_won": "Converted"}), clock=lambda: NOW
)
assert _GENERAL._lead is not None
_GENERAL._lead.key = None  # lead_id read by its plan's getter: the general way
_FAST = Mapper(_MAPPER_SETTINGS, clock=lambda: NOW)
_LEAD = st.one_of(
    st.sampled_from([123456789012345, "123456789012345", "12", "", None, [1], {"a": 1}]),
    st.integers(),
)


@settings(max_examples=200, deadline=None)
@given(lead=_LEAD, present=st.booleans())
def test_lead_ids_read_in_place_are_what_the_getter_reads(lead: Any, present: bool) -> None:
    event: dict[str, Any] = {
        "event_name": "deal_won",
        "context": {"event_id": "e-1", "event_timestamp": _MS},
    }
    if present:
        event["facebook_lead_id"] = lead
    assert _FAST._lead is not None and _FAST._lead.key == "facebook_lead_id"
    assert _FAST.map(event) == _GENERAL.map(event)


@settings(max_examples=100, deadline=None)
@given(
    units=st.lists(st.lists(st.binary(min_size=1, max_size=5), max_size=7), max_size=6),
    size=st.integers(min_value=1, max_value=5),
)
def test_bodies_taken_are_the_bodies_added(units: list[list[bytes]], size: int) -> None:
    added, taken = io.BytesIO(), io.BytesIO()
    adding = BodyWriter(added, batch_size=size, test_event_code=None)
    taking = BodyWriter(taken, batch_size=size, test_event_code=None)
    for unit in units:
        adding.add(unit)
        events = list(unit)
        taking.take(events)
        assert events == []  # the writer holds the only references
    adding.close()
    taking.close()
    assert taken.getvalue() == added.getvalue()


class _Writes(io.BytesIO):
    """A stream that remembers the size of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, data: Any) -> int:
        self.sizes.append(len(data))
        return super().write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)


@pytest.mark.parametrize("code", [None, "TEST123"])
def test_a_large_body_is_written_in_slices_a_pipe_takes_without_waiting(code: str | None) -> None:
    """A body of 1,000 events is about 1 MB, all a pipe holds: written whole, each waited for
    the reader to empty the pipe. The bytes are the same, in writes of 256 KB at most, however
    the events come: added, taken, or as runs joined by a worker process."""
    events = [orjson.dumps({"n": n, "hash": "ab" * 500}) for n in range(1000)]
    tail = b"]" + (b',"test_event_code":"' + code.encode() + b'"' if code else b"") + b"}\n"
    expected = b'{"data":[' + b",".join(events[:600]) + tail
    expected += b'{"data":[' + b",".join(events[600:]) + tail
    assert 600 * len(events[0]) > _SLICE  # each full body needs several slices
    joined = b"," + b",".join(events)
    bounds = [0, *(len(b"," + b",".join(events[: n + 1])) for n in range(1000))]
    ways: list[Callable[[BodyWriter], None]] = [
        lambda writer: writer.add(events),
        lambda writer: writer.take(list(events)),
        lambda writer: writer.add_joined(joined, bounds),
    ]
    for way in ways:
        out = _Writes()
        writer = BodyWriter(out, batch_size=600, test_event_code=code)
        way(writer)
        writer.close()
        assert out.getvalue() == expected
        assert max(out.sizes) <= _SLICE


_LINE = st.one_of(
    _EVENT.map(orjson.dumps),
    st.sampled_from(
        [b"", b"\r", b" ", b"{bad", b"[1]", b"5", b'{"batch": [1, {"event_name": "x"}]}']
    ),
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_LINE, max_size=6), crlf=st.booleans(), ends=st.booleans())
def test_encoding_any_lines_gives_what_reading_them_gives(
    lines: list[bytes], crlf: bool, ends: bool
) -> None:
    data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if ends and lines else b"")
    batches: list[Any] = [LineBatch("f", *piece) for piece in split_ndjson([data], "f", 3)]
    records = [(r.where, r.event, r.error) for r in read_ndjson([data], "f", 3)]
    assert encode_unit(_MAPPER, batches, True) == encode_unit(_MAPPER, list(records), True)


_DIGIT_TEXT = st.one_of(
    st.text(st.sampled_from("0123456789"), min_size=10, max_size=19),
    st.text(st.sampled_from("0123456789١٢٣²³ +-.e"), min_size=10, max_size=19),
    st.from_regex(r"[1-9][0-9]{11,16}", fullmatch=True),
)


@settings(max_examples=2000, deadline=None)
@given(text=_DIGIT_TEXT)
@example(text="123456789012345")
@example(text="012345678901234")
@example(
    text="12345678901234٥"
)  # an Arabic-Indic digit: a digit to str.isdigit, not to \d in ASCII
@example(text="12345678901²³45")
@example(text="123456789012")
def test_the_digit_shapes_are_the_regexes_shapes(text: str) -> None:
    assert lead_digits(text) == (re.fullmatch(r"[1-9][0-9]{14,16}", text) is not None)
    assert ms_digits(text) == (re.fullmatch(r"[1-9][0-9]{11,13}", text) is not None)
