"""What ``send`` hands the store: the same events, originals and tally on one core as on several,
and the file intake's chunks whether events come one at a time or a piece at a time."""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import make_settings, tally_counts, write_every_reader
from leadrelay.bench.events import EVENT_NAMES
from leadrelay.config import Settings
from leadrelay.delivery.encoded import EncodedPayload, request_body, storable
from leadrelay.delivery.intake import ChunkedIntake
from leadrelay.delivery.sqlite_rows import encode_row
from leadrelay.delivery.store import Added, Incoming
from leadrelay.events import InputError
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Filtered, Payload
from leadrelay.send_input import read_into_store
from leadrelay.summary import Tally


class _Chunks:
    """A store that only records the chunks it was given."""

    def __init__(self) -> None:
        self.chunks: list[list[Incoming]] = []

    def add_new(self, items: Sequence[Incoming]) -> Added:
        self.chunks.append(list(items))
        return Added(list(range(len(items))), [True] * len(items))


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        mapping=dict(EVENT_NAMES),
        delivery={"batch_size": 7},
    )


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    return write_every_reader(
        tmp_path, seed=5, odd_lines={41: b'{"event_name": "lead_qualified", "user": {"email": 7}}'}
    )


def _send_side(
    settings: Settings, files: list[str], jobs: int, report: bool = False
) -> tuple[object, ...]:
    store = _Chunks()
    tally = Tally(report=io.BytesIO() if report else None)
    intake = ChunkedIntake(store, size=settings.delivery.batch_size, max_age_s=60)
    read_into_store(files, settings, jobs, tally, intake, threading.Event(), None)
    # Each stored outcome, the bytes the store keeps of it and a request carries (None: not a
    # payload, or unencodable), the original as kept (the line as read, for NDJSON), and with a
    # report where it was read.
    stored = [
        (
            i.outcome,
            None if (kept := storable(i.outcome)) is None else kept.body,
            i.original,
            tally.read_at.get(id(i)),
        )
        for chunk in store.chunks
        for i in chunk
    ]
    return [len(c) for c in store.chunks], stored, tally_counts(tally)


@pytest.mark.parametrize("report", [False, True])
def test_one_core_stores_and_counts_exactly_what_several_cores_do(
    settings: Settings, inputs: list[str], report: bool
) -> None:
    """The mapping processes of ``--jobs 2`` hand the store what one core does: the same
    payloads, encoded there (``EncodedPayload``: the same bytes), the same originals byte for
    byte, the same tally, and with a report the same place for each event."""
    one = _send_side(settings, inputs, 1, report)
    two = _send_side(settings, inputs, 2, report)
    assert one == two
    sizes, stored, (read, mapped, filtered, rejected, _, _) = one
    assert sizes[:-1] == [7] * (len(sizes) - 1)  # full chunks, then what was left
    # 225 good events (the envelope's 3 instead of its line), 3 bad lines, the blank one skipped
    assert read == 228
    assert rejected["unreadable"] == 2  # "{not json" and "[1, 2]"
    assert len(stored) == read - rejected["unreadable"]
    assert any(type(o) is Filtered for o, *_ in stored) == bool(filtered)
    assert all(original is not None for *_, original, _ in stored)
    assert mapped == sum(1 for o, *_ in stored if isinstance(o, Payload))
    assert all(body for o, body, *_ in stored if isinstance(o, Payload))
    assert all(type(o) is EncodedPayload for o, *_ in two[1] if isinstance(o, Payload))
    wheres = [where for *_, where in stored]
    assert all(wheres) if report else not any(wheres)
    if report:
        assert wheres[0] == f"{inputs[0]} line 1"


def test_one_core_stores_each_payload_as_the_bytes_the_general_mapping_encodes(
    settings: Settings, inputs: list[str]
) -> None:
    _, stored, _ = _send_side(settings, inputs, 1)
    mapper = Mapper(settings)
    encoded = [(o, orjson.loads(e)) for o, _, e, _ in stored if type(o) is EncodedPayload]
    assert encoded  # the one-core reader encodes its payloads once, as the store keeps them
    for outcome, event in encoded:
        general = mapper.map(event)
        assert type(general) is Payload
        assert outcome == general
        assert request_body(outcome) == orjson.dumps(general.data)


def test_one_core_leaves_data_that_is_not_plain_json_for_the_store_to_call_unencodable(
    settings: Settings, inputs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    made = Mapper.__init__

    def making(self: Mapper, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        real = self.map_parts

        def with_a_set(event: Mapping[str, Any]) -> object:
            found = real(event)
            if isinstance(found, tuple):
                found[5]["custom_data"]["odd"] = {1}  # a set: orjson cannot encode it
            return found

        self.map_parts = self.map_body = with_a_set  # type: ignore[assignment]

    monkeypatch.setattr(Mapper, "__init__", making)
    _, stored, _ = _send_side(settings, inputs, 1)
    payloads = [o for o, *_ in stored if isinstance(o, Payload)]
    assert payloads
    assert all(type(o) is Payload and o.data["custom_data"]["odd"] == {1} for o in payloads)
    row = encode_row(Incoming(payloads[0], None, 0.0), "keep")
    assert row[1][1] == "rejected" and row[1][9] == "unencodable"


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_stop_stores_every_event_read_so_far(
    settings: Settings, inputs: list[str], jobs: int
) -> None:
    """Told to stop (delivery paused, SIGTERM) in the middle of a piece: every event counted as
    read is in the store (an unreadable one is only counted), and reading stops there."""
    stop = threading.Event()

    class Stopping(_Chunks):
        def add(self, items: Sequence[Incoming]) -> list[int]:
            stop.set()  # after the first chunk
            return super().add(items)

    store = Stopping()
    tally = Tally()
    intake = ChunkedIntake(store, size=7, max_age_s=60)
    read_into_store(inputs, settings, jobs, tally, intake, stop, None)
    stored = sum(len(chunk) for chunk in store.chunks)
    assert 7 <= stored < 230
    assert stored == tally.read - tally.rejected["unreadable"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_file_that_cannot_be_opened_stops_the_send_after_the_files_before_it(
    settings: Settings, inputs: list[str], tmp_path: Path, jobs: int
) -> None:
    """Every event of the files before it is counted and stored, none of those after it, on
    one core as on several (the mapping processes' units of the first file come back first)."""
    store = _Chunks()
    tally = Tally()
    intake = ChunkedIntake(store, size=7, max_age_s=60)
    files = [inputs[0], str(tmp_path / "nope.ndjson"), inputs[1]]
    with pytest.raises(InputError, match=r"nope\.ndjson: cannot open"):
        read_into_store(files, settings, jobs, tally, intake, threading.Event(), None)
    intake.flush()  # as send does on its way out
    stored = [i for chunk in store.chunks for i in chunk]
    # The first file: 200 lines, one blank, one a batch of three, two that cannot be read.
    assert tally.read == 201 and tally.rejected["unreadable"] == 2
    assert len(stored) == 199
    assert stored[-1].original == Path(inputs[0]).read_bytes().split(b"\n")[-1]


@pytest.mark.parametrize(
    ("size", "puts", "chunks", "left"),
    [
        (3, [[1, 2], [3, 4, 5, 6, 7]], [3, 3], 1),
        (3, [[1, 2, 3]], [3], 0),
        (5, [[1], [2], []], [], 2),
        (2, [[1, 2, 3, 4, 5]], [2, 2], 1),
    ],
)
def test_events_put_in_pieces_are_stored_in_the_chunks_put_one_by_one_would_make(
    size: int, puts: list[list[int]], chunks: list[int], left: int
) -> None:
    def item(n: int) -> Incoming:
        return Incoming(Filtered(f"k{n}", "lead_created", "unmapped", "no"), None, 0.0)

    by_piece, one_by_one = _Chunks(), _Chunks()
    pieces = ChunkedIntake(by_piece, size=size, max_age_s=60)
    single = ChunkedIntake(one_by_one, size=size, max_age_s=60)
    for put in puts:
        pieces.put_many([item(n) for n in put])
        for n in put:
            single.put(item(n))
    assert [len(c) for c in by_piece.chunks] == chunks
    assert by_piece.chunks == one_by_one.chunks
    pieces.flush()
    single.flush()
    assert by_piece.chunks == one_by_one.chunks
    assert pieces.stored == single.stored == sum(chunks) + left


@pytest.mark.parametrize("jobs", [1, 2])
def test_each_line_is_kept_as_read_without_its_newline(
    settings: Settings, tmp_path: Path, jobs: int
) -> None:
    """The stored original is the line's bytes (spacing, key order and a CR as sent), not the
    newline that ended it, for the input's last line (no newline) as for the others."""
    base = orjson.loads(Path(write_every_reader(tmp_path, seed=7)[0]).read_bytes().split(b"\n")[0])
    lines = [
        orjson.dumps({**base, "context": {**base["context"], "event_id": "spaced"}}).replace(
            b",", b", "
        ),
        orjson.dumps({**base, "context": {**base["context"], "event_id": "crlf"}}) + b"\r",
        orjson.dumps({**base, "context": {**base["context"], "event_id": "last"}}),
    ]
    path = tmp_path / "lines.ndjson"
    path.write_bytes(b"\n".join(lines))  # no newline after the last line
    store = _Chunks()
    intake = ChunkedIntake(store, size=7, max_age_s=60)
    read_into_store([str(path)], settings, jobs, Tally(), intake, threading.Event(), None)
    intake.flush()
    assert [i.original for chunk in store.chunks for i in chunk] == lines
