"""The benchmark harness runs, checks its runs and reports sane numbers (no timing assertions)."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from leadrelay.bench import BenchOptions, run, scaleout, sdk_baseline
from leadrelay.bench.events import expected_counts, generate_events
from leadrelay.bench.harness import _pace, parse_args
from leadrelay.bench.intake import percentile
from leadrelay.bench.measure import Counter, can_pin, measure, usable_cores
from leadrelay.bench.pace import NOT_ASKED, NOT_INSTALLED, Pace, around, with_ratio
from leadrelay.bench.report import render
from redis_server import redis_server_binary


def _sane(figures: dict[str, Any]) -> None:
    assert figures["ok"] is True, figures.get("stderr_tail")
    assert figures["events_per_s"] > 0 and figures["wall_s"] > 0
    assert figures["peak_rss_mb"] > 0


@pytest.mark.timeout(300)
def test_a_quick_run_measures_everything_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results" / "latest.json"
    results = run(
        BenchOptions(
            events=300,
            e2e_events=400,
            intake_events=300,
            scaleout_events=300,
            slow_ms=300,
            pace_events=300,  # the transform's events: its file is used
            workers=2,
            repeat=2,
            json=out,
            workdir=tmp_path / "w",
        )
    )
    transform, e2e = results["transform"], results["e2e"]
    _sane(transform["leadrelay"])
    assert transform["leadrelay"]["output_events"] == transform["expected"]["sendable"] == 297
    runs = transform["leadrelay"]["runs"]
    assert len(runs) == 2 and transform["leadrelay"]["events_per_s"] == max(runs)
    if "leadrelay_workers" in transform:  # on a machine with a second core
        _sane(transform["leadrelay_workers"])
    if sdk_baseline.missing() is None:
        _sane(transform["sdk"])
        assert transform["ratio"] > 0
    else:
        assert transform["ratio"] is None and "pip install" in transform["ratio_unavailable"]
    _sane(e2e)
    assert e2e["sandbox_received"] == e2e["expected"]["sendable"] == 396
    assert e2e["sandbox_cpu_s"] > 0
    assert e2e["stored_outcomes"] == {"delivered": 396, "rejected": 3, "filtered": 1}
    random_ids = results["e2e_random_ids"]
    _sane(random_ids)
    assert random_ids["event_ids"] == "random (UUID)" and e2e["event_ids"] == "in order (bench-N)"
    assert random_ids["stored_outcomes"] == e2e["stored_outcomes"]
    slow = results["e2e_slow"]
    _sane(slow)
    assert slow["sandbox_slow_ms"] == 300 and slow["stored_outcomes"] == e2e["stored_outcomes"]
    assert "vs_sdk" not in slow  # the sandbox's pace, not leadrelay's
    # with a --report: a row per event, each saying where it was read
    assert (slow["report_rows"], slow["report_rows_without_where"]) == (400, 0)
    assert "report_rows" not in e2e
    jobs = results.get("e2e_jobs")
    if len(usable_cores()) > 1:  # send --jobs 2 on both cores, mapping processes included
        assert jobs is not None
        _sane(jobs)
        assert jobs["jobs"] == 2 and jobs["cores_used"]["send"] == usable_cores()
        assert jobs["stored_outcomes"] == e2e["stored_outcomes"]
        assert jobs["sandbox_received"] == 396
    else:
        assert jobs is None
    intake = results["intake"]
    for figures, sdk_pace in (
        (e2e, e2e["sdk_pace"]),
        (random_ids, random_ids["sdk_pace"]),
        *((batch, intake["sdk_pace"]) for batch in intake["batches"].values()),
    ):
        _check_against_sdk(figures, sdk_pace)
    assert not (tmp_path / "w" / "pace.ndjson").exists()
    if sdk_baseline.missing() is None:  # on the core send and serve ran on
        assert e2e["sdk_pace"]["core"] == e2e["cores_used"]["send"]
        assert intake["sdk_pace"]["core"] == intake["cores_used"]["serve"]
    assert results["machine"]["cpu"] and results["machine"]["python"].startswith("CPython")
    assert orjson.loads(out.read_bytes()) == orjson.loads(orjson.dumps(results))
    _check_intake(results["intake"])
    # Last: without redis-server this skips (locally) or fails (in CI), the rest having passed.
    _check_scaleout(results["scaleout"])


def _check_against_sdk(figures: dict[str, Any], pace: dict[str, Any]) -> None:
    """With the SDK installed, the rate is also a ratio to the SDK's pace taken around it."""
    if sdk_baseline.missing() is not None:
        assert pace == {"available": False, "reason": NOT_INSTALLED}
        assert figures["vs_sdk"] is None
        return
    assert pace["events"] == 300 and pace["before"] > 0 and pace["after"] > 0
    assert pace["events_per_s"] == max(pace["before"], pace["after"]) and "failed" not in pace
    assert figures["vs_sdk"] == round(figures["events_per_s"] / pace["events_per_s"], 2)


def _check_intake(intake: dict[str, Any]) -> None:
    assert intake["ok"] is True
    for size, requests in (("100", 3), ("1000", 1)):
        figures = intake["batches"][size]
        assert figures["ok"] is True, figures.get("errors")
        assert figures["requests"] == requests and figures["answers"] == {"202": requests}
        assert figures["accepted"] == figures["stored"] == 300
        assert figures["stored_outcomes"] == {"queued": 297, "rejected": 2, "filtered": 1}
        assert figures["events_per_s"] > 0 and figures["peak_rss_mb"] > 0
        assert figures["serve_cpu_us_per_event"] is None or figures["serve_cpu_us_per_event"] >= 0
        assert 0 < figures["latency_ms"]["p50"] <= figures["latency_ms"]["p99"]


def _check_scaleout(figures: dict[str, Any]) -> None:
    if not figures["available"]:
        redis_server_binary()
    assert figures["ok"] is True
    assert [v["sandbox_slow_ms"] for v in figures["variants"]] == [0, 300]
    for variant in figures["variants"]:
        for workers, run_ in variant["workers"].items():
            assert run_["ok"] is True, run_.get("log_tail")
            assert run_["workers"] == int(workers) and run_["accepted_at_intake"] == 300
            assert run_["sandbox_received"] == run_["distinct_event_ids"] == 297
            assert run_["stored_delivered"] == 297 and run_["events_per_s"] > 0
        assert variant["ratio"] > 0


def test_without_redis_server_the_scale_out_is_unavailable_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scaleout, "redis_binary", lambda: None)
    results = run(BenchOptions(scaleout_events=10, json=None, only="scaleout"))
    figures = results["scaleout"]
    assert figures["available"] is False and "apt-get install -y redis-server" in figures["reason"]
    assert "ok" not in figures and set(results) == {"machine", "scaleout", "load_average_at_end"}


@pytest.mark.parametrize(
    ("argv", "intake", "scale_out", "slow", "pace"),
    [
        (["--quick"], 2_000, 2_000, 300, 0),
        ([], 200_000, 100_000, 300, 200_000),
        (["--quick", "--intake-events", "50", "--slow-ms", "0"], 50, 2_000, 0, 0),
        (["--quick", "--pace-events", "5000"], 2_000, 2_000, 300, 5_000),
        (["--pace-events", "0"], 200_000, 100_000, 300, 0),
    ],
)
def test_quick_keeps_the_service_measurements_small(
    argv: list[str], intake: int, scale_out: int, slow: int, pace: int
) -> None:
    options = parse_args(argv)
    assert (
        options.intake_events,
        options.scaleout_events,
        options.slow_ms,
        options.pace_events,
    ) == (intake, scale_out, slow, pace)


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([], 0.5, 0.0),
        ([3.0], 0.99, 3.0),
        ([4.0, 1.0, 3.0, 2.0], 0.5, 2.0),
        ([*range(1, 101)], 0.99, 99),
    ],
)
def test_latency_percentiles_are_nearest_rank(
    values: list[float], share: float, expected: float
) -> None:
    assert percentile(values, share) == expected


def test_without_the_sdk_the_ratio_is_explicitly_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk_baseline, "missing", lambda: sdk_baseline.INSTALL_HINT)
    results = run(BenchOptions(events=100, workers=1, repeat=1, json=None, only="transform"))
    transform = results["transform"]
    assert transform["sdk"] == {"available": False, "reason": sdk_baseline.INSTALL_HINT}
    assert transform["ratio"] is None
    assert "facebook-business" in transform["ratio_unavailable"]
    _sane(transform["leadrelay"])
    assert "e2e" not in results


def test_without_the_sdk_end_to_end_has_no_ratio_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sdk_baseline, "missing", lambda: sdk_baseline.INSTALL_HINT)
    results = run(BenchOptions(e2e_events=200, slow_ms=0, json=None, only="e2e"))
    for key in ("e2e", "e2e_random_ids"):
        _sane(results[key])
        assert results[key]["sdk_pace"] == {"available": False, "reason": NOT_INSTALLED}
        assert results[key]["vs_sdk"] is None


@pytest.mark.parametrize("missing", [None, sdk_baseline.INSTALL_HINT])
def test_without_pace_runs_end_to_end_has_no_ratio_and_says_why(
    monkeypatch: pytest.MonkeyPatch, missing: str | None
) -> None:
    # Not asked for is what it says, whether or not the SDK is there.
    monkeypatch.setattr(sdk_baseline, "missing", lambda: missing)
    results = run(BenchOptions(e2e_events=200, slow_ms=0, pace_events=0, json=None, only="e2e"))
    assert results["e2e"]["sdk_pace"] == {"available": False, "reason": NOT_ASKED}
    assert results["e2e"]["vs_sdk"] is None


class _Scripted(Pace):
    """A pace whose SDK runs give these rates in turn (None: a failed run), noted in ``order``."""

    def __init__(self, folder: Path, order: list[str], *rates: float | None) -> None:
        super().__init__(folder / "p.ndjson", 100, time.time(), 0, written=True)
        self._rates = iter(rates)
        self._order = order

    def once(self) -> float | str:
        self._order.append("sdk")
        rate = next(self._rates)
        return "exit code 1" if rate is None else rate


@pytest.mark.parametrize(
    ("before", "after", "pace", "ratio", "moved"),
    [
        (12_000.0, 8_000.0, 12_000, 3.33, 0.333),  # the faster run counts, as the transform's best
        (8_000.0, 10_000.0, 10_000, 4.0, 0.2),
        (10_000.0, 10_000.0, 10_000, 4.0, 0.0),
        (12_000.0, None, None, None, None),  # a failed run: no pace, no ratio
        (None, 9_000.0, None, None, None),
    ],
)
def test_the_ratio_is_over_the_faster_sdk_run_around_the_measurement(
    tmp_path: Path,
    before: float | None,
    after: float | None,
    pace: int | None,
    ratio: float | None,
    moved: float | None,
) -> None:
    order: list[str] = []

    def measurement() -> dict[str, Any]:
        order.append("measured")
        return {"events_per_s": 40_000}

    figures, sdk_pace = around(_Scripted(tmp_path, order, before, after), measurement)
    assert order == ["sdk", "measured", "sdk"]
    assert sdk_pace["events_per_s"] == pace
    assert (sdk_pace["before"], sdk_pace["after"]) == (
        None if before is None else round(before),
        None if after is None else round(after),
    )
    assert with_ratio(figures, sdk_pace)["vs_sdk"] == ratio
    assert sdk_pace["moved"] == moved
    assert sdk_pace.get("failed") == (None if pace else ["exit code 1"])


def test_a_failed_sdk_run_is_said_around_its_own_measurement_only(tmp_path: Path) -> None:
    pace = _Scripted(tmp_path, [], None, 9_000.0, 9_000.0, 9_000.0)
    assert around(pace, dict)[1]["failed"] == ["exit code 1"]
    assert "failed" not in around(pace, dict)[1]


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("import sys; sys.exit(1)", "exit code 1, 0 of 99 server events out"),
        (f"print({sdk_baseline.OUTPUT_MARK!r}.decode())", "exit code 0, 1 of 99 server events out"),
    ],
)
def test_an_sdk_run_that_fails_or_drops_events_gives_no_pace_and_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, said: str
) -> None:
    monkeypatch.setattr(sdk_baseline, "command", lambda path: [sys.executable, "-c", script])
    pace = Pace(tmp_path / "p.ndjson", 100, time.time(), usable_cores()[0], written=False)
    failure = pace.once()
    assert isinstance(failure, str) and failure.startswith(said)
    assert len((tmp_path / "p.ndjson").read_bytes().splitlines()) == 100  # written first


def _sdk_standing_in(monkeypatch: pytest.MonkeyPatch, runs: list[Path]) -> None:
    """An SDK that is there: a program printing a server event per sendable event of its input
    (and noting which file it read), so that the pace runs where the real SDK is missing."""
    monkeypatch.setattr(sdk_baseline, "missing", lambda: None)
    # One event in a hundred is bad (see bench.events): the rest come out as server events.
    script = (
        "import sys; n = len(open(sys.argv[1], 'rb').read().splitlines()); "
        f"print(*[{sdk_baseline.OUTPUT_MARK!r}.decode()] * (n - n // 100), sep='\\n')"
    )

    def command(path: Path) -> list[str]:
        runs.append(path)
        return [sys.executable, "-c", script, str(path)]

    monkeypatch.setattr(sdk_baseline, "command", command)


def test_the_pace_is_taken_on_send_s_core_around_each_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[Path] = []
    _sdk_standing_in(monkeypatch, runs)
    options = BenchOptions(
        events=300, e2e_events=300, pace_events=300, slow_ms=0, json=None, only="e2e"
    )
    results = run(options)
    # Two runs around each end-to-end run (no transform here); --jobs 2 needs a second core.
    timed = ["e2e", "e2e_random_ids"] + (["e2e_jobs"] if len(usable_cores()) > 1 else [])
    assert len(runs) == 2 * len(timed) and {path.name for path in runs} == {"pace.ndjson"}
    assert [key for key in results if key.startswith("e2e")] == timed
    for key in ("e2e", "e2e_random_ids"):
        sdk_pace = results[key]["sdk_pace"]
        assert sdk_pace["core"] == results[key]["cores_used"]["send"]
        assert "failed" not in sdk_pace and sdk_pace["events_per_s"] > 0
        assert results[key]["vs_sdk"] == round(
            results[key]["events_per_s"] / sdk_pace["events_per_s"], 2
        )
    # With the transform in the same run and as many events, the pace reads its file.
    pace = _pace(BenchOptions(events=300, pace_events=300), tmp_path, time.time())
    assert isinstance(pace, Pace) and pace.path == tmp_path / "transform.ndjson"
    other = _pace(BenchOptions(events=300, pace_events=500), tmp_path, 0.0)
    assert isinstance(other, Pace) and other.path == tmp_path / "pace.ndjson"


def _rendered(results: dict[str, Any]) -> str:
    console = Console(record=True, width=250)
    render({"machine": {"cpu": "x", "cores": 2, "python": "CPython 3.11"}, **results}, console)
    return console.export_text()


_E2E = {"events": 1_000, "events_per_s": 40_000, "wall_s": 0.03, "peak_rss_mb": 60.0, "ok": True}


def _intake(sdk_pace: dict[str, Any]) -> dict[str, Any]:
    batch = {**_E2E, "vs_sdk": 5.0, "latency_ms": {"p50": 1.0, "p99": 2.0}}
    return {"clients": 8, "events": 1_000, "sdk_pace": sdk_pace, "batches": {"100": batch}}


def test_the_table_shows_the_ratio_and_says_why_one_is_missing() -> None:
    steady = {"before": 10_000, "after": 9_000, "events_per_s": 10_000, "moved": 0.1}
    moving = {"before": 6_000, "after": 8_000, "events_per_s": 8_000, "moved": 0.25}
    text = _rendered(
        {
            "e2e": {**_E2E, "sdk_pace": steady, "vs_sdk": 4.0},
            "e2e_random_ids": {**_E2E, "vs_sdk": None, "sdk_pace": {"failed": ["no [/tmp/x]"]}},
            "intake": _intake(moving),
        }
    )
    assert "4.00x" in text and "5.00x" in text
    # SDK output is shown as it is, never read as markup.
    assert "No SDK pace for end to end with random ids: no [/tmp/x]" in text
    assert "The SDK's pace moved 25% around intake (6,000 then 8,000 events/s)" in text
    assert "moved 10%" not in text  # up to 10%: steady enough, nothing said


def test_the_table_says_once_that_the_sdk_is_missing_and_nothing_when_not_asked() -> None:
    missing = {"available": False, "reason": NOT_INSTALLED}
    paced = {
        "e2e": {**_E2E, "sdk_pace": missing, "vs_sdk": None},
        "e2e_random_ids": {**_E2E, "sdk_pace": missing, "vs_sdk": None},
        "intake": _intake(missing),
    }
    text = _rendered(paced)
    assert "No SDK pace for end to end, end to end with random ids and intake: " in text
    assert "pip install 'leadrelay[bench]'" in text  # not eaten as markup
    transform = {"events": 100, "sdk": {"available": False}, "ratio_unavailable": "no SDK"}
    assert "No SDK pace" not in _rendered({**paced, "transform": transform})  # said there
    asked_not = {"available": False, "reason": NOT_ASKED}
    assert "SDK pace" not in _rendered({"e2e": {**_E2E, "sdk_pace": asked_not, "vs_sdk": None}})


def test_the_command_prints_a_table_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    command = [sys.executable, "-m", "leadrelay.bench", "--quick", "--only", "transform"]
    proc = subprocess.run(
        [*command, "--events", "150", "--workers", "1", "--json", str(out)],
        capture_output=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"leadrelay, 1 core" in proc.stdout and b"transform" in proc.stdout
    assert orjson.loads(out.read_bytes())["transform"]["events"] == 150


def test_generated_events_are_realistic_and_unique() -> None:
    events = list(generate_events(3000, now=time.time()))
    users = [e["user"] for e in events]
    assert len({u["email"] for u in users}) == len({u["phone"] for u in users}) == 3000
    # No cache can help: what is a person's is unique (names, towns) or nearly so.
    assert len({u["firstname"] for u in users}) == len({u["lastname"] for u in users}) == 3000
    assert len({u["city"] for u in users}) == 3000
    assert len({u["zipcode"] for u in users}) > 2900 and len({u["birthdate"] for u in users}) > 2700
    assert all(len(u) == 11 for u in users)  # ten customer-information fields and an id
    phones = collections.Counter(
        "e164" if " " not in p and p.startswith("+") else "spaced" if p[0] == "+" else "national"
        for p in (u["phone"] for u in users)
    )
    assert phones["e164"] > phones["spaced"] > phones["national"] > 0
    stamps = collections.Counter(type(e["context"]["event_timestamp"]).__name__ for e in events)
    assert stamps["int"] and stamps["str"]
    assert any("T" in str(e["context"]["event_timestamp"]) for e in events)
    bad_names = sum(e["event_name"] == "page_view" for e in events)
    short_leads = sum(len(str(e["facebook_lead_id"])) < 15 for e in events)
    assert (short_leads, bad_names) == (10, 10) == (expected_counts(3000).invalid_lead_id, 10)


def test_random_ids_are_uuids_and_change_nothing_else() -> None:
    now = time.time()
    plain = list(generate_events(500, now=now, seed=3))
    randomized = list(generate_events(500, now=now, seed=3, random_ids=True))
    assert list(generate_events(500, now=now, seed=3, random_ids=True)) == randomized
    ids = [e["context"].pop("event_id") for e in randomized]
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    assert len(set(ids)) == 500 and ids != sorted(ids)
    assert [e["context"].pop("event_id") for e in plain] == [f"bench-{n}" for n in range(500)]
    assert plain == randomized


def test_a_marker_cut_across_pieces_is_counted_once() -> None:
    counter = Counter(b"abc")
    for piece in (b"xxab", b"cab", b"c", b"abcab", b"", b"c"):
        counter(piece)
    assert counter.count == 4 and counter.bytes == 14  # "xxabcabcabcabc"


@pytest.mark.skipif(not can_pin() or len(usable_cores()) < 2, reason="needs two cores to pin")
def test_a_measured_program_has_its_core_and_the_harness_reads_elsewhere() -> None:
    # The program runs on the core it was given; the harness reads its output on the other
    # cores while it runs (reading must not take the program's core), and then is as it was.
    before = os.sched_getaffinity(0)
    first = usable_cores()[0]
    report = (
        "import os, sys, time; time.sleep(0.2); print(sorted(os.sched_getaffinity(0)),"
        " sorted(os.sched_getaffinity(os.getppid())), flush=True);"
        f" sys.stdout.write('x' * {3 << 20}); sys.stdout.flush()"
    )
    out = bytearray()
    run = measure([sys.executable, "-c", report], cores=[first], consume=out.extend)
    assert run.returncode == 0
    line, _, rest = bytes(out).partition(b"\n")
    assert line.decode() == f"{[first]} {sorted(before - {first})}"
    assert rest == b"x" * (3 << 20)  # every byte, through the wider pipe
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_program_s_peak_memory_is_its_own_not_the_harness_s() -> None:
    # A child reports the high-water mark of whoever started it, from before its exec, as its
    # ru_maxrss: the harness holding 150 MB would have every program use at least that much.
    ballast = bytearray(150 << 20)
    ballast[::4096] = b"z" * len(ballast[::4096])  # touched: resident
    holds_30_mb = (
        "import time; x = bytearray(30 << 20); x[::4096] = b'y' * len(x[::4096]); time.sleep(0.3)"
    )
    run = measure([sys.executable, "-c", holds_30_mb], cores=None)
    assert run.returncode == 0
    assert 30 < run.peak_rss_mb < 100, run.peak_rss_mb
    del ballast


def test_a_failed_measurement_leaves_no_process_nor_thread_behind(tmp_path: Path) -> None:
    threads = threading.active_count()
    pid_file = tmp_path / "pid"
    runs_on = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()));"
        " print('x', flush=True); time.sleep(60)"
    )

    def refuse(chunk: bytes) -> None:
        raise ValueError("cannot count that")

    with pytest.raises(ValueError, match="cannot count"):
        measure([sys.executable, "-c", runs_on], cores=None, consume=refuse)
    assert threading.active_count() == threads
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # ended and reaped
