"""Shared fixtures: a base config users would write, built through the real config loader."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadrelay.bench.events import generate_events
from leadrelay.config import Settings, parse_config
from leadrelay.summary import Tally
from redis_server import running_redis

NOW = 1767800000.0  # 2026-01-07T15:33:20Z: the fixed clock of the mapping fixtures

BASE: dict[str, Any] = {
    "pixel_id": "123456789012345",
    "access_token": "EAAB-secret-token-do-not-print",
    "lead_id": "{{facebook_lead_id}}",
    "lead_event_source": "In-house CRM",
    "mapping": {"lead_qualified": "Marketing Qualified Lead"},
}


def make_settings(**overrides: Any) -> Settings:
    """Settings from the base config with top-level keys replaced."""
    return parse_config({**BASE, **overrides}, source="test", env={})


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the session (the store tests flush it per test); started only
    when a test asks for it."""
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


def write_every_reader(
    folder: Path, *, seed: int, odd_lines: dict[int, bytes] | None = None
) -> list[str]:
    """Generated events in every input the readers take: NDJSON with bad lines (invalid JSON, a
    blank line, a batch envelope, an array) and no newline at the end, a JSON array and a CSV
    file. ``odd_lines`` replaces more NDJSON lines, by index. Returns the three paths."""
    events = list(generate_events(230, now=time.time(), seed=seed))
    ndjson = folder / "a.ndjson"
    lines = [orjson.dumps(e) for e in events[:200]]
    lines[5] = b"{not json"
    lines[9] = b""
    lines[17] = orjson.dumps({"batch": events[200:203]})
    lines[40] = b"[1, 2]"
    for index, line in (odd_lines or {}).items():
        lines[index] = line
    ndjson.write_bytes(b"\n".join(lines))
    array = folder / "b.json"
    array.write_bytes(orjson.dumps(events[203:220]))
    csv = folder / "c.csv"
    rows = ["event_name,facebook_lead_id,user.email,context.event_timestamp,context.event_id"]
    for n, e in enumerate(events[220:]):
        rows.append(
            f"{e['event_name']},{e['facebook_lead_id']},{e['user']['email']},"
            f"{e['context']['event_timestamp']},csv-{n}"
        )
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return [str(ndjson), str(array), str(csv)]


def tally_counts(tally: Tally) -> tuple[object, ...]:
    """What a summary shows of ``tally``: the counts and the first examples of each problem."""
    return (
        tally.read,
        tally.mapped,
        dict(tally.filtered),
        dict(tally.rejected),
        dict(tally.notes),
        {k: [(e.where, e.key, e.field, e.message) for e in v] for k, v in tally.examples.items()},
    )
