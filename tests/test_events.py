"""Reading Commanders Act events: every format, stdin, HTTP bodies, errors, streaming memory."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.events import InputError, SourceRecord, parse_body, read_events

# The two CRM updates of example E8 (an HTTP Tracking API batch) and E2 (a stage update).
A: dict[str, Any] = {
    "event_name": "lead_qualified",
    "crm_stage": "Marketing Qualified Lead",
    "facebook_lead_id": 1111111111111111,
    "user": {"id": "crm-1001", "email": "a@example.com", "consent_categories": [4]},
    "context": {"event_id": "b-0001", "event_timestamp": 1767800000000},
}
B: dict[str, Any] = {
    "event_name": "lead_converted",
    "crm_stage": "Converted",
    "facebook_lead_id": 2222222222222222,
    "value": 120,
    "currency": "EUR",
    "user": {"id": "crm-1002", "phone": "+33699887766", "consent_categories": [4]},
    "context": {"event_id": "b-0002", "event_timestamp": 1767800060000},
}
E2: dict[str, Any] = {
    "event_name": "lead_qualified",
    "crm_stage": "Marketing Qualified Lead",
    "facebook_lead_id": 1234567890123456,
    "user": {"id": "crm-88231", "email": "jane.doe@example.com", "consent_categories": [1, 3, 4]},
    "context": {"event_id": "c3f7a1e2-5b7d-4f0e-9a41-6f1d2b8e7c10", "event_timestamp": 1767709812},
}
BOM = b"\xef\xbb\xbf"


def dumps(value: Any, indent: bool = False) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)


ND = dumps(A) + b"\n" + dumps(B) + b"\n"


def seen(records: list[SourceRecord]) -> list[tuple[str, Any]]:
    """(where, event) for events, (where, error) for errors: what a user would see."""
    for r in records:
        assert (r.event is None) != (r.error is None), r
        assert r.error is None or r.error.startswith(r.where), r
    return [(r.where, r.event if r.event is not None else r.error) for r in records]


def matches(records: list[SourceRecord], expected: list[tuple[str, Any]]) -> None:
    """Events must be equal; for an error, the expected string must occur in its message."""
    got = seen(records)
    assert [w for w, _ in got] == [w for w, _ in expected], got
    for (where, value), (_, want) in zip(got, expected, strict=True):
        if isinstance(want, str):
            assert isinstance(value, str) and want in value, (where, value, want)
        else:
            assert value == want, where


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Files are named relative to the working directory, as users type them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(name: str, content: bytes) -> str:
    if name.endswith(".gz"):
        with gzip.open(name, "wb") as f:
            f.write(content)
    else:
        Path(name).write_bytes(content)
    return name


# --- every format, plain and gzipped ----------------------------------------------------------

FORMATS = [
    # (file name, content, how places are numbered, events)
    ("leads.ndjson", ND, "line", [A, B]),
    ("leads.jsonl", ND.replace(b"\n", b"\r\n"), "line", [A, B]),
    ("leads.json", b"[" + dumps(A) + b",\n" + dumps(B) + b"]", "item", [A, B]),
    ("pretty.json", dumps([A, B], indent=True), "item", [A, B]),
    ("batch.json", dumps({"batch": [A, B]}, indent=True), "item", [A, B]),
    ("one.json", dumps(E2, indent=True), "item", [E2]),
    ("pretty_objects.json", dumps(A, indent=True) + b"\n" + dumps(B, indent=True), "item", [A, B]),
    ("glued.json", dumps(A) + dumps(B), "item", [A, B]),
    ("lines.json", ND, "line", [A, B]),  # NDJSON under a .json name
    ("export", b"\n  " + ND, "line", [A, B]),  # no extension: sniffed
    ("export.txt", b"  [" + dumps(A) + b"," + dumps(B) + b"]", "item", [A, B]),
    ("bom.ndjson", BOM + ND, "line", [A, B]),
    ("bom.json", BOM + dumps([A, B]), "item", [A, B]),
]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(
    ("name", "content", "unit", "events"), FORMATS, ids=[f[0] for f in FORMATS]
)
def test_every_format(
    workdir: Path, name: str, content: bytes, unit: str, events: list[Any], gz: bool
) -> None:
    path = write(name + (".gz" if gz else ""), content)
    first_line = 2 if name == "export" else 1  # its first line is blank
    expected = [(f"{path} {unit} {n}", e) for n, e in enumerate(events, first_line)]
    assert seen(list(read_events(path))) == expected
    # A path object works too, and a small chunk size changes nothing.
    assert seen(list(read_events(Path(path), chunk_size=5))) == expected


@pytest.mark.parametrize(
    ("content", "fmt", "expected"),
    [
        (ND, "auto", [("stdin line 1", A), ("stdin line 2", B)]),
        (dumps([A, B]), "auto", [("stdin item 1", A), ("stdin item 2", B)]),
        (dumps({"batch": [A]}), "auto", [("stdin item 1", A)]),
        (b"event_name,user.id\nlead_qualified,crm-1\n", "auto",
         [("stdin row 2", {"event_name": "lead_qualified", "user": {"id": "crm-1"}})]),
        (dumps(A) + b"\n", "json", [("stdin line 1", A)]),
        (dumps(A), "ndjson", [("stdin line 1", A)]),
    ],
)  # fmt: skip
def test_stdin(content: bytes, fmt: Any, expected: list[tuple[str, Any]]) -> None:
    assert seen(list(read_events("-", fmt=fmt, stdin=io.BytesIO(content)))) == expected


@pytest.mark.parametrize("chunk_size", [1 << 16, 3])
def test_input_with_no_extension_is_ndjson_after_a_stray_line_and_one_bad_line_is_said(
    chunk_size: int,
) -> None:
    """A first line that is neither JSON nor a CSV header (an error page piped in by mistake, a
    stray line before NDJSON) is an unreadable line: the input was taken for CSV with a header of
    one column, "Internal Server Error" gave no event at all ("read 0", exit 0), and the NDJSON
    after a stray line gave one error per event ("has 15 cells but the header has 1 columns"),
    with a comma in the stray line too."""

    def read(content: bytes) -> list[SourceRecord]:
        return list(read_events("-", stdin=io.BytesIO(content), chunk_size=chunk_size))

    (page,) = read(b"Internal Server Error\n")
    assert page.event is None and page.where == "stdin line 1"
    assert "invalid JSON" in (page.error or "")
    for line in (b"garbage line\n", b"Error: upstream timed out, retrying\n"):
        stray, *rest = read(line + ND)
        assert stray.event is None and stray.where == "stdin line 1"
        assert seen(rest) == [("stdin line 2", A), ("stdin line 3", B)]
    # Two stray lines, and a blank one after a stray line, are stray lines too.
    first, second, *rest = read(b"Retrying\nRetrying again\n" + ND)
    assert first.event is None and second.event is None
    assert seen(rest) == [("stdin line 3", A), ("stdin line 4", B)]
    stray, *rest = read(b"Error, retrying\n\n" + ND)
    assert stray.event is None and seen(rest) == [("stdin line 3", A), ("stdin line 4", B)]
    # A CSV row that starts as JSON would is still a CSV row.
    assert seen(read(b"note,user.id\n[VIP] Jane,crm-1\n")) == [
        ("stdin row 2", {"note": "[VIP] Jane", "user": {"id": "crm-1"}})
    ]
    # A CSV of one column is still a CSV.
    assert seen(read(b"event_name\nlead_qualified\n")) == [
        ("stdin row 2", {"event_name": "lead_qualified"})
    ]
    assert seen(read(b"\n\nevent_name,user.id\nlead_qualified,crm-1\n")) == [
        ("stdin row 2", {"event_name": "lead_qualified", "user": {"id": "crm-1"}})
    ]


@pytest.mark.parametrize("delimiter", [";", "\t"], ids=["semicolons", "tabs"])
def test_csv_separated_by_semicolons_or_tabs_is_read_as_its_header_line_says(
    workdir: Path, delimiter: str
) -> None:
    """What a spreadsheet writes where the comma is the decimal mark (France, Germany): each row
    was one cell, named by the whole header line, and every event was refused."""
    content = delimiter.join(["event_name", "user.id", '"Nom, prénom"', "user.email"]) + "\n"
    content += delimiter.join(["lead_qualified", "crm-1", "Dupont", "a@example.com"]) + "\n"
    expected = {
        "event_name": "lead_qualified",
        "user": {"id": "crm-1", "email": "a@example.com"},
        "Nom, prénom": "Dupont",  # a comma in a quoted column's name is no delimiter
    }
    path = write("export.csv", content.encode())
    assert seen(list(read_events(path))) == [(f"{path} row 2", expected)]
    piped = read_events("-", stdin=io.BytesIO(content.encode()))
    assert seen(list(piped)) == [("stdin row 2", expected)]


def test_stdin_defaults_to_the_process_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ND)))
    assert seen(list(read_events("-"))) == [("stdin line 1", A), ("stdin line 2", B)]


def test_format_can_be_forced(workdir: Path) -> None:
    write("events.log", ND)
    assert seen(list(read_events("events.log", fmt="ndjson"))) == [
        ("events.log line 1", A),
        ("events.log line 2", B),
    ]
    write("odd.ndjson", dumps([A]))
    assert seen(list(read_events("odd.ndjson", fmt="json"))) == [("odd.ndjson item 1", A)]


def test_empty_inputs_hold_no_events(workdir: Path) -> None:
    for name in ("empty.ndjson", "empty.json", "empty.csv", "blank"):
        write(name, b" \n\r\n")
        assert list(read_events(name)) == []
    write("empty_list.json", b"[ ]")
    assert list(read_events("empty_list.json")) == []
    write("empty_batch.json", b'{"batch": []}')
    assert list(read_events("empty_batch.json")) == []


# --- inputs that cannot be read at all --------------------------------------------------------


def test_unusable_inputs_raise_before_reading(workdir: Path) -> None:
    os.mkdir("folder")
    Path("plain.json.gz").write_bytes(ND)  # not actually gzipped
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("missing.ndjson", {}, "missing.ndjson: cannot open: No such file"),
        ("folder", {}, "folder: cannot open"),
        ("plain.json.gz", {}, "plain.json.gz: cannot read after byte 0"),
        ("missing.ndjson", {"fmt": "xml"}, "unknown format 'xml'"),
    ]
    for name, options, message in cases:
        with pytest.raises(InputError) as info:
            read_events(name, **options)  # raised by the call itself, not on iteration
        assert message in str(info.value)


def test_truncated_gzip_keeps_what_was_read(workdir: Path) -> None:
    lines = b"".join(dumps({**A, "n": n}) + b"\n" for n in range(2000))
    write("cut.ndjson.gz", lines)
    whole = Path("cut.ndjson.gz").read_bytes()
    Path("cut.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    records = list(read_events("cut.ndjson.gz", chunk_size=1024))
    assert records[0] == SourceRecord("cut.ndjson.gz line 1", {**A, "n": 0})
    assert all(r.event is not None for r in records[:-1]) and len(records) > 2
    assert records[-1].event is None and records[-1].where == "cut.ndjson.gz"
    assert "cut.ndjson.gz: the file is truncated" in (records[-1].error or "")


# --- NDJSON: a bad line does not stop the rest ------------------------------------------------


def test_ndjson_bad_lines_are_reported_and_reading_goes_on(workdir: Path) -> None:
    lines = [
        dumps(A),
        b"",
        b"{not json}",
        b"   \r",
        b"42",
        b"[1, 2]",
        dumps({"batch": [A, 7]}),
        dumps(B) + b"\r",
        b'{"event_name": "cut off',
    ]
    write("mixed.ndjson", b"\n".join(lines))
    matches(
        list(read_events("mixed.ndjson", chunk_size=7)),
        [
            ("mixed.ndjson line 1", A),
            ("mixed.ndjson line 3", "mixed.ndjson line 3: invalid JSON at column 2"),
            ("mixed.ndjson line 5", "mixed.ndjson line 5 is not a JSON object (got number)"),
            ("mixed.ndjson line 6", "is not a JSON object (got array)"),
            ("mixed.ndjson line 7 item 1", A),
            ("mixed.ndjson line 7 item 2", "is not a JSON object (got number)"),
            ("mixed.ndjson line 8", B),
            ("mixed.ndjson line 9", "invalid JSON"),
        ],
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"event_name": "cut off', "column 24: unexpected end of data"),
        (b'{"event_name": 1', "column 17: unexpected end of data"),
        (b"[1,", "column 4: unexpected end of data"),
        (b"{bad", "column 2: unexpected character, expected a string key"),
    ],
)
@pytest.mark.parametrize("last", [True, False])
def test_an_invalid_line_is_told_of_the_line_without_its_newline(
    workdir: Path, line: bytes, message: str, last: bool
) -> None:
    """What is wrong with a line does not depend on the newline after it (orjson alone would
    call an open string cut by a newline 'unexpected control character')."""
    write("cut.ndjson", line if last else line + b"\n" + dumps(A) + b"\n")
    records = list(read_events("cut.ndjson"))
    assert records[0].error == f"cut.ndjson line 1: invalid JSON at {message}"
    assert len(records) == (1 if last else 2)


# --- JSON arrays: a syntax error stops the file, naming the item and the byte -----------------

a = dumps(A).decode()


def at(doc: str, marker: str, shift: int = 0) -> str:
    """The 'byte N' a message should name: where ``marker`` starts, plus ``shift``."""
    return f"at byte {doc.encode().index(marker.encode()) + shift};"


ARRAY_ERRORS = [
    (f'[{a}, {{"b": }}, {a}]', "item 2: invalid JSON", ("}, " + a, 0)),
    (f'[{a} {{"b": 1}}]', "item 2: expected ',' or ']' after item 1, found '{'", ('{"b"', 0)),
    (f'[{a}, {{"b": "x}}', "item 2: the input ends inside it (truncated?)", None),
    (f"[{a},", "item 2: the input ends inside the list (truncated?)", None),
    (f"[{a}", "item 2: the input ends inside the list (truncated?)", None),
    (f"[{a},]", "item 2: expected a value, found ']'", (",]", 1)),
    (f"[{a}, nul]", "item 2: invalid JSON (unexpected end of data)", ("nul", 3)),
    (f'{{"batch": [{a}, {{"b" 1}}]}}', "item 2: invalid JSON", ('{"b" 1', 5)),
]


@pytest.mark.parametrize(("doc", "message", "where"), ARRAY_ERRORS)
def test_array_syntax_error_stops_with_a_clear_error(
    workdir: Path, doc: str, message: str, where: tuple[str, int] | None
) -> None:
    write("leads.json", doc.encode())
    for chunk_size in (1 << 16, 7):
        records = list(read_events("leads.json", chunk_size=chunk_size))
        matches(records, [("leads.json item 1", A), ("leads.json item 2", message)])
        if where is not None:
            assert at(doc, *where) in (records[1].error or "")


def test_array_values_that_are_not_objects_are_skipped_not_fatal(workdir: Path) -> None:
    write("mixed.json", f'[1, "x", null, true, [{a}], {{}}, {a}]'.encode())
    matches(
        list(read_events("mixed.json")),
        [
            ("mixed.json item 1", "mixed.json item 1 is not a JSON object (got number)"),
            ("mixed.json item 2", "(got string)"),
            ("mixed.json item 3", "(got null)"),
            ("mixed.json item 4", "(got boolean)"),
            ("mixed.json item 5", "(got array)"),
            ("mixed.json item 6", {}),
            ("mixed.json item 7", A),
        ],
    )


def test_batch_envelope_other_keys_are_ignored(workdir: Path) -> None:
    doc = {"batch": [A, B], "meta": {"note": 'has "}]" and {"batch": [1]}'}, "n": [1, [2]]}
    write("batch.json", dumps(doc, indent=True) + b"\n" + dumps(E2))
    expected = [("batch.json item 1", A), ("batch.json item 2", B), ("batch.json item 3", E2)]
    for chunk_size in (1 << 16, 7, 1):
        assert seen(list(read_events("batch.json", chunk_size=chunk_size))) == expected
    # "batch" not first: the envelope is read whole, with the same result.
    write("late.json", dumps({"source": "crm", "batch": [A, B]}, indent=True))
    assert seen(list(read_events("late.json"))) == [
        ("late.json item 1", A),
        ("late.json item 2", B),
    ]


# --- chunk boundaries -------------------------------------------------------------------------

TRICKY: list[dict[str, Any]] = [
    {"event_name": 'q"uote', "s": 'br}ace{ [bra]cket \\ back\\\\slash " end'},
    {"k": "\\", "l": '\\"', "m": "},{", "n": [{"a": "]"}, {"b": "[["}]},
    {"unicode": "é€😀", "esc": "\u0000\n\t", "e": [], "o": {}},
    {"event_name": '{"batch": [', "nested": {"a": {"b": {"c": [[], {}]}}}, "x": -1.5e3},
    {"s": "\\\\\\", "t": "}\\", "u": "\\}"},
]


def _documents() -> list[tuple[str, bytes, str]]:
    compact = [dumps(e) for e in TRICKY]
    ascii_pretty = [json.dumps(e, indent=4, ensure_ascii=True).encode() for e in TRICKY]
    return [
        ("array.json", b"[" + b",".join(compact) + b"]", "item"),
        ("spaced.json", b"[ " + b" ,\n\t".join(ascii_pretty) + b" ]\n", "item"),
        ("batch.json", b'{ "batch" :[' + b", ".join(compact) + b'], "z": "]}"}', "item"),
        ("objects.json", b"\n".join(ascii_pretty), "item"),
        ("lines.ndjson", b"\r\n".join(compact), "line"),
    ]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1 << 16])
def test_elements_and_strings_spanning_chunks(workdir: Path, chunk_size: int) -> None:
    for name, content, unit in _documents():
        write(name, content)
        expected = [(f"{name} {unit} {n}", e) for n, e in enumerate(TRICKY, 1)]
        assert seen(list(read_events(name, chunk_size=chunk_size))) == expected, name


_text = st.text(st.characters(codec="utf-8"), max_size=8)  # no lone surrogates
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


# A top-level "batch" key makes an object an envelope of events, or a refusal when it is not an
# array (see records.py and the envelope tests): not one event as a whole parse reads it.
_key = _text.filter(lambda key: key != "batch")


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(st.dictionaries(_key, _json, max_size=5), max_size=6),
    chunk_size=st.integers(1, 40),
    indent=st.sampled_from([None, 1]),
    ascii_only=st.booleans(),
    separator=st.sampled_from([",", ", ", ",\n", " ,\r\n  "]),
)
def test_streamed_array_reads_like_a_whole_parse(
    events: list[dict[str, Any]],
    chunk_size: int,
    indent: int | None,
    ascii_only: bool,
    separator: str,
) -> None:
    text = "[" + separator.join(
        json.dumps(e, indent=indent, ensure_ascii=ascii_only) for e in events
    )
    body = (text + "]").encode()
    records = list(read_events("-", stdin=io.BytesIO(body), chunk_size=chunk_size))
    assert [r.event for r in records] == orjson.loads(body)


# --- CSV --------------------------------------------------------------------------------------

CSV = (
    "\ufeffevent_name,user.email,user.consent_categories.0,user.consent_categories.1,"
    "items.0.product.id,items.0.quantity,items.1.product.id,context.event_timestamp,value\r\n"
    "lead_qualified,jane@example.com,1,4,SKU-1,2,,1767709812000,\r\n"
    ',,,,,,,,\r\n'
    'lead_converted,"Doe, Jane",,4,,,SKU-2,"2026-01-08T09:15:00.000+01:00",480.0\r\n'
    'note,"two\r\nlines"\r\n'
    "too,many,cells,1,2,3,4,5,6,7\r\n"
    "last,,,,,,,0\r\n"
)  # fmt: skip


@pytest.mark.parametrize("chunk_size", [1 << 16, 5])
def test_csv_nesting_lists_and_strings(workdir: Path, chunk_size: int) -> None:
    write("leads.csv", CSV.encode())
    matches(
        list(read_events("leads.csv", chunk_size=chunk_size)),
        [
            ("leads.csv row 2", {
                "event_name": "lead_qualified",
                "user": {"email": "jane@example.com", "consent_categories": ["1", "4"]},
                "items": [{"product": {"id": "SKU-1"}, "quantity": "2"}],
                "context": {"event_timestamp": "1767709812000"},
            }),
            # row 3 is all empty cells: skipped
            ("leads.csv row 4", {
                "event_name": "lead_converted",
                "user": {"email": "Doe, Jane", "consent_categories": ["4"]},
                "items": [{"product": {"id": "SKU-2"}}],
                "context": {"event_timestamp": "2026-01-08T09:15:00.000+01:00"},
                "value": "480.0",
            }),
            ("leads.csv row 5", {"event_name": "note", "user": {"email": "two\r\nlines"}}),
            ("leads.csv row 6", "leads.csv row 6: has 10 cells but the header has 9 columns"),
            ("leads.csv row 7", {"event_name": "last", "context": {"event_timestamp": "0"}}),
        ],
    )  # fmt: skip


def test_csv_that_is_not_utf8_stops_with_the_byte(workdir: Path) -> None:
    write("latin1.csv", "event_name,user.city\nlead,Paris\nlead,Besançon\n".encode("latin-1"))
    matches(
        list(read_events("latin1.csv", chunk_size=8)),
        [
            ("latin1.csv row 2", {"event_name": "lead", "user": {"city": "Paris"}}),
            ("latin1.csv", "latin1.csv: not UTF-8 text at byte 42 (from a spreadsheet, save it as"),
        ],
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("user,user.email", "columns 'user' and 'user.email' conflict"),
        ("user.email,user", "columns 'user.email' and 'user' conflict"),
        ("items.0.id,items.name", "columns 'items.0.id' and 'items.name' conflict"),
        ("event_name,a.b, a.b", "column 'a.b' appears twice"),
        ("event_name,,value", "column 2 of the header has no name"),
        ("user..email", "column 'user..email' has an empty name part"),
        ("0.event_name", "column '0.event_name' cannot start with a list index"),
    ],
)
def test_csv_header_problems_raise_naming_the_columns(
    workdir: Path, header: str, message: str
) -> None:
    write("bad.csv", f"{header}\nx,y,z\n".encode())
    with pytest.raises(InputError) as info:
        read_events("bad.csv")
    assert str(info.value).startswith("bad.csv: ") and message in str(info.value)


# --- HTTP bodies ------------------------------------------------------------------------------

BODIES = [
    (dumps(A), None, [("request", A)]),
    (BOM + dumps(A, indent=True), "application/json", [("request", A)]),
    (dumps([A, B]), "application/json", [("request item 1", A), ("request item 2", B)]),
    (dumps({"batch": [A, B]}), "application/json; charset=utf-8",
     [("request item 1", A), ("request item 2", B)]),
    (dumps({"batch": [A], "sent_at": 1}), None, [("request item 1", A)]),
    (dumps({"sent_at": 1, "batch": [B]}), None, [("request item 1", B)]),
    (ND, "application/x-ndjson", [("request line 1", A), ("request line 2", B)]),
    (ND.replace(b"\n", b"\r\n"), "application/jsonl",
     [("request line 1", A), ("request line 2", B)]),
    (dumps(A), "Application/X-NDJSON; charset=utf-8", [("request line 1", A)]),
    (ND, "application/json", [("request line 1", A), ("request line 2", B)]),  # several objects
    (ND.rstrip(), None, [("request line 1", A), ("request line 2", B)]),
    (dumps(A) + dumps(B), None, [("request item 1", A), ("request item 2", B)]),
    (dumps(A, indent=True) + b"\n" + dumps(B, indent=True), None,
     [("request item 1", A), ("request item 2", B)]),
    (b"", None, [("request", "request: the body is empty")]),
    (b" \r\n", "application/x-ndjson", [("request", "the body is empty")]),
    (b'{"event_name": x}', None, [("request item 1", "request item 1: invalid JSON")]),
    (b"42", None, [("request", "request is not a JSON object (got number)")]),
    (dumps([A, "x"]), None, [("request item 1", A), ("request item 2", "(got string)")]),
    (ND + b"oops\n" + dumps(B), "application/x-ndjson",
     [("request line 1", A), ("request line 2", B), ("request line 3", "invalid JSON"),
      ("request line 4", B)]),
    (dumps([A]) + b"]", None, [("request item 1", A), ("request item 2", "found ']'")]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "content_type", "expected"), BODIES)
def test_parse_body(body: bytes, content_type: str | None, expected: list[tuple[str, Any]]) -> None:
    matches(parse_body(body, content_type=content_type), expected)


def test_parse_body_label_names_the_place() -> None:
    records = parse_body(dumps([A, 1]), label="POST /events")
    assert seen(records) == [
        ("POST /events item 1", A),
        ("POST /events item 2", "POST /events item 2 is not a JSON object (got number)"),
    ]


# --- big inputs -------------------------------------------------------------------------------


def _write_big(name: str, size: int, *, array: bool) -> int:
    """A file of about ``size`` bytes of ~600-byte events; returns how many events."""
    events = [dumps({**E2, "n": n, "pad": "x" * 400}) for n in range(1000)]
    block = (b",\n" if array else b"\n").join(events)
    count = 0
    with open(name, "wb") as f:
        f.write(b"[" if array else b"")
        while f.tell() < size:
            f.write((b",\n" if array and count else b"") + block + (b"" if array else b"\n"))
            count += len(events)
        f.write(b"]" if array else b"")
    return count


@pytest.mark.parametrize("name", ["big.json", "big.ndjson"])
def test_big_input_is_streamed_in_little_memory(workdir: Path, name: str) -> None:
    limit = 20 << 20
    count = _write_big(name, 50 << 20, array=name.endswith(".json"))
    assert os.path.getsize(name) > 2.5 * limit  # reading it whole could not stay under the limit
    tracemalloc.start()
    try:
        n = 0
        for record in read_events(name):
            assert record.event is not None
            n += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == count
    assert peak < limit, f"peak {peak / 2**20:.1f} MB"


def test_element_over_16_mb_is_an_error_not_a_memory_blowup(workdir: Path) -> None:
    big = b'{"event_name": "huge", "blob": "' + b"x" * (17 << 20) + b'"}'
    write("huge.json", b"[" + dumps(A) + b",\n" + big + b",\n" + dumps(B) + b"]")
    matches(
        list(read_events("huge.json")),
        [("huge.json item 1", A), ("huge.json item 2", "huge.json item 2: larger than 16 MB")],
    )
    write("huge.ndjson", dumps(A) + b"\n" + big + b"\n" + dumps(B) + b"\n")
    matches(
        list(read_events("huge.ndjson")),
        [
            ("huge.ndjson line 1", A),
            ("huge.ndjson line 2", "huge.ndjson line 2: larger than 16 MB"),
            ("huge.ndjson line 3", B),
        ],
    )
