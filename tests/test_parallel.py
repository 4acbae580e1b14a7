"""Mapping on several cores gives exactly what one core gives: same items, order and bytes."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from conftest import make_settings, tally_counts, write_every_reader
from leadrelay.bench.events import EVENT_NAMES
from leadrelay.config import Settings
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.parallel import dry_run_parallel
from leadrelay.send import dry_run, payloads
from leadrelay.summary import Tally


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        mapping=dict(EVENT_NAMES),
        test_event_code="TEST42",
        delivery={"batch_size": 7},
    )


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    return write_every_reader(tmp_path, seed=3)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_dry_run_output_is_identical_whatever_the_number_of_workers(
    settings: Settings, inputs: list[str], workers: int
) -> None:
    expected, expected_tally = io.BytesIO(), Tally(dry_run=True)
    dry_run(settings, payloads(inputs, Mapper(settings), expected_tally), expected, expected_tally)
    out, tally = io.BytesIO(), Tally(dry_run=True)
    dry_run_parallel(inputs, settings, out, tally, workers=workers, unit_events=11)
    assert out.getvalue() == expected.getvalue()
    assert tally_counts(tally) == tally_counts(expected_tally)
    bodies = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert all(len(b["data"]) <= 7 and b["test_event_code"] == "TEST42" for b in bodies)
    # 200 lines, one blank, one a batch of three; 17 in the array, 10 in the CSV
    assert tally.rejected["unreadable"] == 2 and tally.read == 228


def test_the_per_event_report_is_identical_too(settings: Settings, inputs: list[str]) -> None:
    expected_report, report = io.BytesIO(), io.BytesIO()
    expected_tally = Tally(report=expected_report, dry_run=True)
    dry_run(
        settings, payloads(inputs, Mapper(settings), expected_tally), io.BytesIO(), expected_tally
    )
    tally = Tally(report=report, dry_run=True)
    dry_run_parallel(inputs, settings, io.BytesIO(), tally, workers=2, unit_events=13)
    assert report.getvalue() == expected_report.getvalue()
    rows = [orjson.loads(line) for line in report.getvalue().splitlines()]
    assert len(rows) == 228 and sum(r["outcome"] == "mapped" for r in rows) == tally.mapped
