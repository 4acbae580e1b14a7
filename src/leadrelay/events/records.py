"""What the readers hand out: one ``SourceRecord`` per event, and the errors they raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

MAX_ELEMENT_BYTES = 16 << 20
"""Largest single event held in memory (Commanders Act itself caps events at 32 KB)."""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One event read from an input, or the reason it could not be read.

    ``where`` names the place for messages (``leads.ndjson line 12``, ``leads.json item 3``,
    ``leads.csv row 7``, ``request item 2``; numbers are 1-based). ``event`` is the event, or
    ``None`` when ``error`` says why it could not be read (the message names the place too).
    """

    where: str
    event: dict[str, Any] | None
    error: str | None = None


class InputError(Exception):
    """The whole input is unusable (not found, unreadable, unknown format); names the file."""


class ReadError(Exception):
    """Reading stopped part-way (truncated gzip, I/O error, bad UTF-8); the message says where."""


def record(where: str, value: Any) -> SourceRecord:
    """The record for one parsed JSON value: an event only if it is an object (and not a batch
    envelope whose ``batch`` is not an array: ``batch_of`` takes those that are)."""
    if type(value) is dict:
        if "batch" in value and "event_name" not in value and type(value["batch"]) is not list:
            # '{"batch": "[...]"}' (an array sent as a JSON text) was taken for one event with
            # no event_name: the events in it were lost, and the 202 said "accepted".
            got = _kind(value["batch"])
            hint = ": the array itself, not a JSON text of it" if got == "string" else ""
            return SourceRecord(
                where, None, f'{where}: "batch" must be an array of events (got {got}{hint})'
            )
        return SourceRecord(where, value)
    return SourceRecord(where, None, f"{where} is not a JSON object (got {_kind(value)})")


def batch_of(value: Any) -> list[Any] | None:
    """The events of an HTTP Tracking API envelope ``{"batch": [...]}``, or None if not one."""
    if type(value) is dict and "event_name" not in value:
        batch = value.get("batch")
        if type(batch) is list:
            return batch
    return None


def too_large(where: str) -> SourceRecord:
    """The record for an element over ``MAX_ELEMENT_BYTES``."""
    return SourceRecord(where, None, f"{where}: larger than {MAX_ELEMENT_BYTES >> 20} MB, not read")


def json_error(exc: orjson.JSONDecodeError, doc: bytes | bytearray) -> tuple[str, int]:
    """orjson's message and where it stopped, as a byte offset in ``doc`` (orjson counts
    characters)."""
    byte_pos = len(bytes(doc).decode("utf-8", "replace")[: exc.pos].encode())
    return exc.msg, byte_pos


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    kinds = {str: "string", list: "array", dict: "object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)
