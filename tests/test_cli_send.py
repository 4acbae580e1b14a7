"""`leadrelay send` delivering over real HTTP to the sandbox, as users run it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadrelay.config import load_config
from leadrelay.delivery.wiring import open_store
from leadrelay.outcome import State
from leadrelay.sandbox import SandboxOptions, SandboxServer
from processes import descendants
from processes import running as still_running
from sending import config

TOKEN = "sandbox-token-cli-send-0123"
DELETED = 999999999999001


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    options = SandboxOptions(
        access_tokens=frozenset({TOKEN}), deleted_lead_ids=frozenset({DELETED})
    )
    with SandboxServer(options) as server:
        yield server


def events(n: int, *, bad: tuple[int, ...] = ()) -> bytes:
    ms = int((time.time() - 600) * 1000)
    out = []
    for i in range(n):
        lead = DELETED if i in bad else 100000000000000 + i
        out.append(
            {
                "event_name": "lead_qualified",
                "facebook_lead_id": lead,
                "user": {"email": f"u{i}@example.com"},
                "context": {"event_id": f"e{i}", "event_timestamp": ms},
            }
        )
    return b"".join(orjson.dumps(e) + b"\n" for e in out)


def run(
    cfg: Path, src: Path, *extra: str, token: str = TOKEN, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leadrelay", "send", str(src), "--config", str(cfg), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TOKEN": token, "PATH": "/usr/bin:/bin", "COLUMNS": "200", **(env or {})},
    )


def test_send_logs_text_or_json_lines_as_leadrelay_log_format_says(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """README: commands log text, or JSON lines with LEADRELAY_LOG_FORMAT=json (send ignored it,
    and logged text whatever it said)."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(20))
    logged = {}
    for fmt in ("", "json"):
        (folder := tmp_path / (fmt or "text")).mkdir()
        cfg = config(folder, sandbox.url)
        proc = run(cfg, src, "-vv", env={"LEADRELAY_LOG_FORMAT": fmt})
        assert proc.returncode == 0, proc.stderr
        logged[fmt] = [line for line in proc.stderr.splitlines() if line.startswith("{")]
    assert logged[""] == []
    records = [orjson.loads(line) for line in logged["json"]]
    assert records and all("event" in r and "level" in r for r in records)
    assert TOKEN not in "".join(logged["json"])


def report_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_send_delivers_everything_and_isolates_the_bad_lead(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(500, bad=(123,)))
    sandbox.state.script("http_500")
    report = tmp_path / "report.ndjson"
    proc = run(config(tmp_path, sandbox.url), src, "--report", str(report), "-v")
    assert proc.returncode == 2, proc.stderr
    received = sandbox.state.received()
    assert len(received) == 499
    assert len({e["event_id"] for e in received}) == 499
    rows = {r["event_id"]: r for r in report_rows(report)}
    assert len(rows) == 500
    bad = rows["e123"]
    assert (bad["outcome"], bad["code"], bad["subcode"]) == ("rejected", 100, 2804036)
    assert bad["fbtrace_id"]
    outcomes = [r["outcome"] for r in rows.values()]
    assert outcomes.count("delivered_after_retry") == 50  # the first batch met the 500
    # the report says what the summary says (it had "delivered" for the 49 split ones too)
    assert outcomes.count("delivered") == 400
    assert outcomes.count("delivered_after_split") == 49
    # the batch of e123 was split to find it: its 49 others were sent twice, not at once
    assert re.search(r"│ delivered +│ immediately +│ +400 │", proc.stderr), proc.stderr
    assert re.search(r"│ delivered +│ after retry +│ +50 │", proc.stderr)
    assert re.search(
        r"│ delivered +│ after its batch was split for a refused event +│ +49 │", proc.stderr
    )
    assert "100/2804036" in proc.stderr and "graph error" in proc.stderr
    assert TOKEN not in proc.stderr and TOKEN not in report.read_text()


def test_a_store_that_is_not_ours_is_said_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "leadrelay.db") as db:  # another program's database
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(3))
    result = run(config(tmp_path, "http://127.0.0.1:9"), src)
    assert result.returncode == 1, result.stderr
    assert "Store error:" in result.stderr and "not a leadrelay store" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_auth_failure_stops_and_says_what_to_fix(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(120))
    wrong = "EAAB-wrong-token-value"
    cfg = config(tmp_path, sandbox.url, batch_size=1000)  # one request holds them all
    report = tmp_path / "report.ndjson"
    proc = run(cfg, src, "--report", str(report), token=wrong)
    assert proc.returncode == 1, proc.stderr
    assert "Delivery stopped" in proc.stderr and "access_token" in proc.stderr
    assert "run the same send again" in proc.stderr  # it reads the rest: deliver would not
    assert "190" in proc.stderr
    assert wrong not in proc.stderr
    assert sandbox.state.received() == []
    # One request met the refusal, and no other went out with the refused token; each event
    # is in the report once, not sent.
    assert sandbox.state.errors_by_code["190"] == sandbox.state.requests == 1
    rows = report_rows(report)
    assert sorted(r["event_id"] for r in rows) == sorted(f"e{i}" for i in range(120))
    assert {r["outcome"] for r in rows} == {"not_sent"}, rows[0]
    # Nothing read is lost: every event waits in the store for the fixed token.
    monkeypatch.setenv("TOKEN", TOKEN)
    with open_store(load_config(cfg), create=False) as store:
        assert store.counts().queued == 120
        assert len({r.key for r in store.events(states=[State.QUEUED], limit=200)}) == 120
    assert run(cfg, src).returncode == 0
    assert sorted(e["event_id"] for e in sandbox.state.received()) == sorted(
        f"e{i}" for i in range(120)
    )


@pytest.mark.parametrize(
    ("where", "version", "code"),
    [("/graph", "v25.0", "2500"), ("", "v20.0", "2635")],  # a path in graph_url; an old version
    ids=["path in graph_url", "version past its end"],
)
def test_an_endpoint_meta_refuses_stops_delivery_and_names_the_settings(
    where: str,
    version: str,
    code: str,
    sandbox: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Meta answers a wrong path (2500) or an old version (2635) for every request, whatever the
    # events: isolating "bad" events would dead-letter them all, one request each.
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(120))
    cfg = config(tmp_path, sandbox.url + where, batch_size=1000)  # one request holds them all
    cfg.write_text(f'api_version = "{version}"\n' + cfg.read_text())
    report = tmp_path / "report.ndjson"
    proc = run(cfg, src, "--report", str(report))
    assert proc.returncode == 1, proc.stderr
    assert "Delivery stopped" in proc.stderr and f"({code})" in proc.stderr
    assert "graph_url" in proc.stderr and "api_version" in proc.stderr
    assert sandbox.state.errors_by_code == {code: 1}  # one request, not one per event
    rows = report_rows(report)
    assert {r["outcome"] for r in rows} == {"not_sent"}
    # The rows say what was refused: the endpoint, not the token (they said "the access token
    # or permission" for an old api_version).
    assert all("graph_url or api_version" in r["message"] for r in rows), rows[0]
    assert not any("token" in r["message"] for r in rows)
    monkeypatch.setenv("TOKEN", TOKEN)
    with open_store(load_config(cfg), create=False) as store:
        assert store.counts().queued == 120  # nothing rejected: all wait for the fixed config


def test_interrupted_send_resumes_without_losing_or_repeating(tmp_path: Path) -> None:
    options = SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=150)
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(1500))
    cfg = config(tmp_path, "http://127.0.0.1:1")  # replaced below, once the sandbox has a port
    with SandboxServer(options) as server:
        cfg = config(tmp_path, server.url)
        cmd = [sys.executable, "-m", "leadrelay", "send", str(src), "--config", str(cfg)]
        env = {"TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while server.state.events_received < 300 and time.time() < deadline:
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        first = server.state.events_received
        assert 300 <= first < 1500, first
        report = tmp_path / "again.ndjson"
        again = run(cfg, src, "--report", str(report))
        assert again.returncode == 0, again.stderr
        ids = [e["event_id"] for e in server.state.received()]
    assert set(ids) == {f"e{i}" for i in range(1500)}
    # At-least-once: only the batches in flight at the kill may arrive twice (4 x 50 events).
    assert len(ids) - 1500 <= 200
    assert "not sent again" in again.stderr


def test_send_with_two_mapping_processes(sandbox: SandboxServer, tmp_path: Path) -> None:
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(300, bad=(7,)))
    proc = run(config(tmp_path, sandbox.url), src, "--jobs", "2")
    assert proc.returncode == 2, proc.stderr
    ids = sorted(e["event_id"] for e in sandbox.state.received())
    assert ids == sorted(f"e{i}" for i in range(300) if i != 7)


def stored_states(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(data_dir / "leadrelay.db") as db:
        return dict(db.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall())


def _stored(data_dir: Path) -> int:
    try:
        return sum(stored_states(data_dir).values())
    except sqlite3.OperationalError:  # not created yet
        return 0


def _ignore_sigint() -> None:  # as a shell starts a background job
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _sending(
    cfg: Path, src: Path, until: Callable[[], bool], *extra: str, **popen: Any
) -> subprocess.Popen[bytes]:
    """``leadrelay send src`` (stderr piped), once ``until()`` holds (a minute at most)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "leadrelay", "send", str(src), "--config", str(cfg), *extra],
        env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **popen,
    )
    deadline = time.time() + 60
    while not until() and time.time() < deadline:
        time.sleep(0.02)
    return proc


def _received(server: SandboxServer, n: int) -> Callable[[], bool]:
    return lambda: server.state.events_received >= n


@pytest.mark.parametrize(
    ("sigint_ignored", "stop"),
    [(False, signal.SIGTERM), (True, signal.SIGTERM)],
    ids=["sigterm", "sigterm-in-background"],
)
def test_sigterm_stops_a_send_cleanly_and_it_resumes(
    tmp_path: Path, sigint_ignored: bool, stop: signal.Signals
) -> None:
    """Stopped while Meta is slow: the batches in flight finish, what was read is stored,
    delivered or queued (exit 143), and the next run delivers the rest, each event once."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(3000))
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=150)) as server:
        cfg = config(tmp_path, server.url)
        background = _ignore_sigint if sigint_ignored else None
        proc = _sending(cfg, src, _received(server, 300), preexec_fn=background)
        proc.send_signal(stop)
        stderr = proc.communicate(timeout=60)[1].decode()
        assert proc.returncode == 143, stderr
        assert "Stopped" in stderr and "run the same send again" in stderr
        assert "not sent yet" in stderr and "stored by an earlier run" not in stderr.split("(or")[0]
        sent = [e["event_id"] for e in server.state.received()]
        states = stored_states(tmp_path / "data")
        assert 300 <= len(sent) < 3000
        assert len(set(sent)) == len(sent)  # nothing sent twice
        assert sum(states.values()) == 3000, states
        # The batches in flight were let finish: what Meta took is stored delivered.
        assert states["delivered"] == len(sent)
        again = run(cfg, src)
        assert again.returncode == 0, again.stderr
        ids = [e["event_id"] for e in server.state.received()]
    assert sorted(ids) == sorted(f"e{i}" for i in range(3000))
    assert stored_states(tmp_path / "data") == {"delivered": 3000}


def test_ctrl_c_stops_a_send_says_what_it_did_and_it_resumes(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while Meta is slow: exit
    130 with the summary and what to do next, every event read stored, and the next run
    delivers the rest; only the batches cut off in flight may arrive twice."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(3000))
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=150)) as server:
        cfg = config(tmp_path, server.url)
        proc = _sending(cfg, src, _received(server, 300), start_new_session=True)
        os.killpg(proc.pid, signal.SIGINT)
        stderr = proc.communicate(timeout=60)[1].decode()
        assert proc.returncode == 130, stderr
        assert "leadrelay delivery" in stderr  # the summary table
        assert "Stopped (Ctrl-C)" in stderr and "run the same send again" in stderr
        sent = {e["event_id"] for e in server.state.received()}
        states = stored_states(tmp_path / "data")
        assert 300 <= len(sent) < 3000
        assert sum(states.values()) == 3000, states
        assert states.get("delivered", 0) <= len(sent)
        again = run(cfg, src)
        assert again.returncode == 0, again.stderr
        ids = [e["event_id"] for e in server.state.received()]
    assert set(ids) == {f"e{i}" for i in range(3000)}
    assert len(ids) - 3000 <= 200  # at most the 4 batches of 50 in flight at the Ctrl-C
    assert stored_states(tmp_path / "data") == {"delivered": 3000}


def test_a_second_ctrl_c_cuts_the_batches_in_flight_short(tmp_path: Path) -> None:
    """Ctrl-C while Meta takes longer to answer than the drain timeout (20 s): the send waits
    for the batches in flight, and says so; a second Ctrl-C stops the wait. The send ends with
    the summary and exit 130, no traceback; the batches cut off stay stored, queued, and the
    next run delivers them. Each event read has its report row: those cut off are "queued" (they
    had none, nor a line of the summary but "queued in the store (or stored by an earlier
    run)")."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(3000))
    report = tmp_path / "report.ndjson"
    slow = SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=30_000)
    with SandboxServer(slow) as server:
        cfg = config(tmp_path, server.url)
        proc = _sending(cfg, src, lambda: server.state.requests >= 4, "--report", str(report))
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)  # the send is waiting for the batches in flight
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=15)[1].decode()  # not the drain timeout's 20 s
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr and "never" not in stderr, stderr
        assert "Ctrl-C again" in stderr  # the first one said what a second would do
        assert "leadrelay delivery" in stderr  # the summary table
        assert "Stopped (Ctrl-C)" in stderr and "run the same send again" in stderr
        states = stored_states(tmp_path / "data")
        assert sum(states.values()) <= 3000  # what was read (reading stops at a Ctrl-C)
        assert states.get("queued", 0) >= 200, states  # the 4 batches of 50 cut off, at least
        assert states.get("delivered", 0) == 0, states  # Meta answered no request
        said = " ".join(stderr.split())
        read = int(re.search(r"│ read │ │ (\d+) │", said).group(1))  # type: ignore[union-attr]
        rows = report_rows(report)
        assert len(rows) == read and len({r["event_id"] for r in rows}) == read
        assert {r["outcome"] for r in rows} == {"queued"}
        queued = "queued in the store: the next send (or serve) delivers it"
        assert f"│ not sent yet │ {queued} │ {read} │" in said
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}))) as server:
        again = run(config(tmp_path, server.url), src)
        assert again.returncode == 0, again.stderr
        assert {e["event_id"] for e in server.state.received()} == {f"e{i}" for i in range(3000)}
    assert stored_states(tmp_path / "data") == {"delivered": 3000}


def test_a_send_started_with_ctrl_c_ignored_runs_on(tmp_path: Path) -> None:
    """A script's background job (``leadrelay send ... &``) ignores SIGINT: a Ctrl-C meant for
    the script leaves the send to finish, every event delivered once."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(3000))
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=100)) as server:
        cfg = config(tmp_path, server.url)
        proc = _sending(cfg, src, _received(server, 300), preexec_fn=_ignore_sigint)
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=60)[1].decode()
        assert proc.returncode == 0, stderr
        ids = [e["event_id"] for e in server.state.received()]
    assert sorted(ids) == sorted(f"e{i}" for i in range(3000))
    assert stored_states(tmp_path / "data") == {"delivered": 3000}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_while_a_pipe_is_quiet_stores_what_was_read_and_ends(
    tmp_path: Path, jobs: str
) -> None:
    """Events read from a pipe whose producer then goes quiet wait in memory for a full batch
    (or batch_max_age_s). A Ctrl-C stores them, queued, at once: the reader, blocked on the
    pipe, never would. And the send ends (130, its summary said): it used to wait for the
    blocked reader at exit, until a third Ctrl-C aborted it ("Fatal Python error"). With
    ``--jobs 2`` the same: a pipe is read and mapped in the sending process (the mapping
    processes held what they were given until they had a full unit: nothing was delivered,
    and a Ctrl-C lost it)."""
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}))) as server:
        cfg = config(tmp_path, server.url)
        quick = "retry_base_s = 0.01"
        cfg.write_text(cfg.read_text().replace(quick, quick + "\nbatch_max_age_s = 60"))
        err = (tmp_path / "stderr").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadrelay", "send", "-", "--config", str(cfg), "-j", jobs],
            env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(events(70))  # a batch of 50 goes out; 20 wait for more
            proc.stdin.flush()
            deadline = time.time() + 60
            while server.state.events_received < 50 and time.time() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)  # the producer stays open and quiet
            data = tmp_path / "data"
            deadline = time.time() + 20
            while _stored(data) < 70 and time.time() < deadline:
                time.sleep(0.05)
            assert stored_states(data) == {"delivered": 50, "queued": 20}
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # a second press, as a user would
                proc.wait(timeout=20)
            stderr = (tmp_path / "stderr").read_text()
            assert proc.returncode == 130, stderr
            assert "Stopped (Ctrl-C)" in stderr and "Fatal" not in stderr, stderr
            assert "Traceback" not in stderr, stderr
            said = "reading standard input or a pipe: every input is read and mapped in this"
            assert (said in stderr) == (jobs != "1"), stderr
        finally:
            if proc.poll() is None:
                proc.kill()  # still reading the pipe: the user gives up on it
            proc.wait()
            proc.stdin.close()
            err.close()


def stored_keys(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "leadrelay.db") as db:
        return [key for (key,) in db.execute("SELECT key FROM events")]


def test_sigterm_while_a_large_file_is_still_read_stops_the_reader_and_it_resumes(
    tmp_path: Path,
) -> None:
    """SIGTERM lands while the send is still reading a large file: the reader stops where it is,
    every event it read is stored (the batches in flight delivered, the rest queued), exit 143;
    the same send again reads the rest, and every event ends delivered or rejected, sent once."""
    n = 40_000
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(n, bad=(n - 1,)))  # the last lead is deleted: Meta rejects it
    data = tmp_path / "data"
    options = SandboxOptions(
        access_tokens=frozenset({TOKEN}), deleted_lead_ids=frozenset({DELETED}), keep_events=n
    )
    with SandboxServer(options) as server:
        # Meta is slow for the first batches only, so what is read piles up past what send keeps
        # in memory and reaches the store while the reader is still near the start of the file.
        server.state.script(*["slow:1000"] * 4)
        cfg = config(tmp_path, server.url, batch_size=1000)
        proc = _sending(cfg, src, lambda: _stored(data) > 0)
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=60)[1].decode()
        assert proc.returncode == 143, stderr
        assert "Stopped (SIGTERM)" in stderr and "run the same send again" in stderr
        sent = [e["event_id"] for e in server.state.received()]
        states = stored_states(data)
        read = sum(states.values())
        # The reader stopped before the end of the file, and all it read (the file up to there,
        # in order) is stored: the batches in flight finished delivered, the rest waits queued.
        assert 0 < read < n, states
        assert sorted(stored_keys(data)) == sorted(f"e{i}" for i in range(read))
        assert len(set(sent)) == len(sent)
        assert states == {"delivered": len(sent), "queued": read - len(sent)}, states
        assert len(sent) > 0 and read - len(sent) > 0
        again = run(cfg, src)
        assert again.returncode == 2, again.stderr  # the last event, not read before, rejected
        ids = [e["event_id"] for e in server.state.received()]
    # Nothing lost, nothing sent twice (the batches in flight at the stop were let finish).
    assert sorted(ids) == sorted(f"e{i}" for i in range(n - 1))
    assert sorted(stored_keys(data)) == sorted(f"e{i}" for i in range(n))
    assert stored_states(data) == {"delivered": n - 1, "rejected": 1}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_pipe_is_stored_as_it_is_read(tmp_path: Path, stop: signal.Signals) -> None:
    """A pipe cannot be read again: its events are stored as they are read, so a send ended
    while its producer is still there (and idle) has lost none it read, and it ends at once
    (its reader waits on the pipe: SIGTERM ends it as it always did)."""
    data = events(3000)
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=300)) as server:
        cfg = config(tmp_path, server.url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadrelay", "send", "-", "--config", str(cfg)],
            env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.flush()  # and the producer stays, writing nothing more
        deadline = time.time() + 60
        while time.time() < deadline and (
            server.state.events_received < 300 or _stored(tmp_path / "data") < 3000
        ):
            time.sleep(0.05)  # until the send has read it all, while Meta is still slow
        proc.send_signal(stop)
        try:
            assert proc.wait(timeout=20) == -stop
        finally:
            proc.stdin.close()
        sent = {e["event_id"] for e in server.state.received()}
    states = stored_states(tmp_path / "data")
    assert 300 <= len(sent) < 3000
    assert sum(states.values()) == 3000, states
    assert states.get("delivered", 0) <= len(sent)


def test_sigterm_to_the_process_group_ends_a_send_with_two_jobs_at_once(tmp_path: Path) -> None:
    """systemd and timeout signal the whole group, mapping processes included: with --jobs N the
    send ends at once, as any program does; what it stored is consistent and the next run
    delivers the rest, each event once but for the batches that were in flight."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(3000))
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=150)) as server:
        cfg = config(tmp_path, server.url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadrelay", "send", str(src), "--config", str(cfg), "-j", "2"],
            env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 60
        while server.state.events_received < 300 and time.time() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == -signal.SIGTERM
        sent = {e["event_id"] for e in server.state.received()}
        assert stored_states(tmp_path / "data").get("delivered", 0) <= len(sent) < 3000
        again = run(cfg, src, "--jobs", "2")
        assert again.returncode == 0, again.stderr
        ids = [e["event_id"] for e in server.state.received()]
    assert set(ids) == {f"e{i}" for i in range(3000)}
    assert len(ids) - 3000 <= 200  # at most the 4 batches of 50 in flight at the kill
    assert stored_states(tmp_path / "data") == {"delivered": 3000}


@pytest.mark.parametrize(
    ("stop", "group", "code"),
    [(signal.SIGKILL, False, -9), (signal.SIGTERM, False, -15), (signal.SIGINT, True, 130)],
    ids=["kill-9", "kill", "ctrl-c"],
)
def test_mapping_processes_end_with_the_send_however_it_ends(
    tmp_path: Path, stop: signal.Signals, group: bool, code: int
) -> None:
    """``--jobs 2``: ended by a signal to it alone, or by Ctrl-C (the whole process group), a
    send leaves nothing behind: not its mapping processes, nor the fork server and resource
    tracker they kept alive (they waited on their queue for good when the send was killed)."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(100_000))
    cfg = config(tmp_path, "http://127.0.0.1:9")
    command = ["send", str(src), "--config", str(cfg), "--dry-run", "-j", "2"]
    out = tmp_path / "bodies.ndjson"  # a file: the send never meets a closed pipe
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadrelay", *command],
            env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
            stdout=sink,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    below: set[int] = set()
    try:
        deadline = time.time() + 60
        while out.stat().st_size < 1 << 16 and time.time() < deadline:
            time.sleep(0.01)  # until mapping has begun
        below = descendants(proc.pid)
        assert len(below) >= 3, below  # the fork server, the resource tracker, the mapping
        if group:
            os.killpg(proc.pid, stop)
        else:
            proc.send_signal(stop)
        assert proc.wait(timeout=30) == code
        deadline = time.time() + 20
        while (alive := {p for p in below if still_running(p)}) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive, f"left running: {alive}"
    except BaseException:  # nothing left behind by a failure either (only then: pids get reused)
        for pid in {proc.pid, *below}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        raise


def test_events_whose_retries_ran_out_make_the_send_fail(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A send that left events undelivered (three 500s: max_attempts) does not exit 0."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(30))
    sandbox.state.script("http_500", "http_500", "http_500")
    report = tmp_path / "report.ndjson"
    proc = run(config(tmp_path, sandbox.url), src, "--report", str(report))
    assert proc.returncode == 2, proc.stderr
    assert sandbox.state.received() == []
    assert {r["reason"] for r in report_rows(report)} == {"retries_exhausted"}
    assert "retries_exhausted" in proc.stderr
    # Three requests, three transient errors (two of them retried: the summary does not say 3
    # retries).
    counts = {
        cells[0]: cells[-1]
        for line in proc.stderr.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) >= 2
    }
    assert (counts["requests"], counts["transient errors"]) == ("3", "3")


def test_a_send_from_a_pipe_stopped_by_meta_says_to_deliver_what_is_stored(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Standard input cannot be read again: the advice is deliver, for what was stored."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "leadrelay",
            "send",
            "-",
            "--config",
            str(config(tmp_path, sandbox.url)),
        ],
        input=events(20),
        capture_output=True,
        timeout=120,
        env={"TOKEN": "EAAB-wrong-token-value", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert "run leadrelay deliver to send what is queued" in stderr
    assert "run the same send again" not in stderr


def test_a_send_again_after_fixing_the_config_sends_what_meta_never_saw(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Events filtered (no [mapping] row) or refused by our rules (no lead id where the config
    looked) are sent by the next send of the same file once the config maps them; what Meta
    took is not sent again."""
    ms = int((time.time() - 600) * 1000)
    rows = [
        {"event_name": "lead_qualified", "facebook_lead_id": 100000000000000 + i,
         "context": {"event_id": f"q{i}", "event_timestamp": ms}}
        for i in range(10)
    ] + [
        {"event_name": "deal_won", "facebook_lead_id": 100000000000100 + i,
         "context": {"event_id": f"w{i}", "event_timestamp": ms}}
        for i in range(5)
    ] + [
        {"event_name": "lead_qualified", "lead": str(100000000000200 + i),
         "context": {"event_id": f"l{i}", "event_timestamp": ms}}
        for i in range(3)
    ] + [
        {"event_name": "lead_qualified", "facebook_lead_id": DELETED,
         "context": {"event_id": "gone", "event_timestamp": ms}},
    ]  # fmt: skip
    src = tmp_path / "events.ndjson"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in rows))
    cfg = config(tmp_path, sandbox.url)
    first = run(cfg, src)
    assert first.returncode == 2, first.stderr  # the three without facebook_lead_id, and gone
    assert sorted(e["event_id"] for e in sandbox.state.received()) == sorted(
        f"q{i}" for i in range(10)
    )
    refusals = sandbox.state.errors_by_code["100/2804036"]  # of the requests that held gone
    fixed = cfg.read_text().replace(
        'lead_qualified = "Marketing Qualified Lead"',
        'lead_qualified = "Marketing Qualified Lead"\ndeal_won = "Converted"',
    )
    cfg.write_text(fixed.replace("{{facebook_lead_id}}", "=COALESCE(facebook_lead_id, lead)"))
    second = run(cfg, src)
    received = [e["event_id"] for e in sandbox.state.received()]
    assert sorted(received) == sorted(
        [f"q{i}" for i in range(10)] + [f"w{i}" for i in range(5)] + [f"l{i}" for i in range(3)]
    )  # each once
    # Meta refused gone: that is for a replay to decide, not for a send again; but it never
    # reached Meta, and the send says so (it exited 0, gone counted "not sent again").
    assert sandbox.state.errors_by_code["100/2804036"] == refusals
    said = " ".join(second.stderr.split())
    assert second.returncode == 2, second.stderr
    assert "│ delivered │ by an earlier run (not sent again) │ 10 │" in said
    assert "│ rejected by Meta │ 100/2804036 (an earlier run) │ 1 │" in said


def test_a_report_or_data_dir_that_cannot_be_written_is_said_in_one_line(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(3))
    cfg = config(tmp_path, sandbox.url)
    (tmp_path / "a-folder").mkdir()
    to_folder = run(cfg, src, "--dry-run", "--report", str(tmp_path / "a-folder"))
    assert to_folder.returncode == 1 and "Traceback" not in to_folder.stderr
    assert "--report" in to_folder.stderr and "cannot be written" in to_folder.stderr
    (tmp_path / "a-file").write_text("")
    text = cfg.read_text().replace(str(tmp_path / "data"), str(tmp_path / "a-file" / "data"))
    cfg.write_text(text)
    no_dir = run(cfg, src)
    assert no_dir.returncode == 1 and "Traceback" not in no_dir.stderr, no_dir.stderr
    assert "server.data_dir" in no_dir.stderr and "cannot be created" in no_dir.stderr
    assert no_dir.stderr.startswith("Store error:")  # not the input's fault ("Input error")


def test_a_send_again_says_what_became_of_each_event_and_exits_2_for_those_meta_never_got(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Run again on the same file, a send counted every event found stored "not sent again:
    stored by an earlier run", those that never reached Meta (retries ran out, refused) among
    them, exited 0 and wrote an empty report. Each is now counted as what it is, with its row,
    and those Meta never got give exit code 2 (dead-letters replays them)."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(150, bad=(77,)))
    cfg = config(tmp_path, sandbox.url)
    cfg.write_text(cfg.read_text().replace("[delivery]\n", "[delivery]\nconcurrency = 1\n"))
    sandbox.state.script(*["http_500"] * 3)  # the first batch of 50: its retries run out
    first = run(cfg, src, "--report", str(tmp_path / "first.ndjson"))
    assert first.returncode == 2, first.stderr
    # what Meta said of those it never took, where they were read, and what to do (the summary
    # had no example, then one with no line)
    said = " ".join(first.stderr.split())
    gave_up = f"not delivered retries_exhausted, e.g.: {src} line 1 (event_id e0): gave up after 3"
    assert gave_up in said, said
    assert f"{src} line 78 (event_id e77): Invalid Lead ID" in said, said
    # Every row of the first run says where its event was read (delivered ones too).
    rows = report_rows(tmp_path / "first.ndjson")
    assert {r["event_id"]: r["where"] for r in rows} == {
        f"e{n}": f"{src} line {n + 1}" for n in range(150)
    }
    assert "`dead-letters replay` queues them again and `leadrelay deliver` sends them" in said
    report = tmp_path / "again.ndjson"
    again = run(cfg, src, "--report", str(report))
    said = " ".join(again.stderr.split())
    assert again.returncode == 2, again.stderr
    assert "│ delivered │ by an earlier run (not sent again) │ 99 │" in said, said
    assert "│ not delivered │ retries_exhausted (an earlier run) │ 50 │" in said, said
    assert "│ rejected by Meta │ 100/2804036 (an earlier run) │ 1 │" in said, said
    rows = report_rows(report)
    assert sorted(r["event_id"] for r in rows) == sorted(f"e{i}" for i in range(150))
    outcomes = {(r["where"], r["outcome"]) for r in rows}
    assert outcomes == {("an earlier run", s) for s in ("delivered", "dead", "rejected")}
    assert len(sandbox.state.received()) == 99  # none sent again


def test_an_event_id_twice_in_the_files_is_said_to_be_one_and_has_its_row(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """An event id that comes again later in the files (a CRM export with a stage sent twice)
    was counted "not sent again: stored by an earlier run" on a fresh store, with no row. It is
    now "the event_id of an event before it in this run", each with a row; the first is sent."""
    once = events(120)
    lines = once.splitlines(keepends=True)
    src = tmp_path / "events.ndjson"
    src.write_bytes(once + b"".join(lines[:3]) + lines[110])  # near and far behind the first
    report = tmp_path / "report.ndjson"
    proc = run(config(tmp_path, sandbox.url), src, "--report", str(report))
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 0, proc.stderr
    assert "│ not sent again │ the event_id of an event before it in this run │ 4 │" in said
    assert "earlier run" not in said
    rows = report_rows(report)
    assert len(rows) == 124
    twice = sorted(r["event_id"] for r in rows if r["outcome"] == "duplicate")
    assert twice == ["e0", "e1", "e110", "e2"]
    # Each repeat's row says its own line (its event_id is the first one's).
    where = {r["event_id"]: r["where"] for r in rows if r["outcome"] == "duplicate"}
    assert where == {e: f"{src} line {n}" for e, n in (("e0", 121), ("e1", 122), ("e2", 123))} | {
        "e110": f"{src} line 124"
    }
    assert all(r["event_name"] for r in rows if r["outcome"] == "duplicate")
    assert sorted(e["event_id"] for e in sandbox.state.received()) == sorted(
        f"e{i}" for i in range(120)
    )


def test_an_event_id_an_earlier_run_sent_for_another_stage_is_said_not_sent(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A CRM that gives a deal's stage changes one event_id (deal-42 qualified, then deal-42
    won): the second send counted the won stage "delivered by an earlier run" and exited 0, and
    Meta never got it (Meta tells events apart by event_id and event_name; the store by
    event_id). It is "not sent", exit 2, with its row and what to do."""
    cfg = config(tmp_path, sandbox.url)
    cfg.write_text(cfg.read_text().replace("[delivery]", 'deal_won = "Converted"\n[delivery]'))
    first, second = (orjson.loads(line) for line in events(2).splitlines())
    second["context"]["event_id"] = "e0"  # the deal's id, again
    second["event_name"] = "deal_won"
    qualified, won = tmp_path / "qualified.ndjson", tmp_path / "won.ndjson"
    qualified.write_bytes(orjson.dumps(first) + b"\n")
    won.write_bytes(orjson.dumps(second) + b"\n")
    assert run(cfg, qualified).returncode == 0
    report = tmp_path / "report.ndjson"
    proc = run(cfg, won, "--report", str(report))
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "│ not sent │ its event_id came before for another stage │ 1 │" in said, said
    assert "delivered │ by an earlier run" not in said
    assert "Converted has the event_id of a Marketing Qualified Lead event read before;" in said
    assert "if [mapping] names this event" not in said  # another of the user's events
    (row,) = report_rows(report)
    assert (row["outcome"], row["reason"], row["where"]) == (
        "not_sent",
        "event_id_reused",
        f"{won} line 1",
    )
    assert [e["event_name"] for e in sandbox.state.received()] == ["Marketing Qualified Lead"]
    again = run(cfg, qualified)  # the same stage again: "delivered by an earlier run", as before
    assert again.returncode == 0 and "by an earlier run" in " ".join(again.stderr.split())


@pytest.mark.parametrize("between", [0, 2500])
def test_an_event_id_read_before_in_the_run_for_another_stage_is_said_not_sent(
    sandbox: SandboxServer, tmp_path: Path, between: int
) -> None:
    """The same within one send (both stages in one export): the second stage was a
    "duplicate", exit 0, and never reached Meta. ``between``: events read between the two (the
    first one still in memory, or delivered and stored by then)."""
    cfg = config(tmp_path, sandbox.url)
    cfg.write_text(cfg.read_text().replace("[delivery]", 'deal_won = "Converted"\n[delivery]'))
    lines = events(between + 2).splitlines()
    won = orjson.loads(lines[-1])
    won["context"]["event_id"] = "e0"  # the deal's id, again
    won["event_name"] = "deal_won"
    again = orjson.loads(lines[0])  # the first stage sent again: a duplicate, as before
    src = tmp_path / "deals.ndjson"
    src.write_bytes(b"\n".join([*lines[:-1], orjson.dumps(won), orjson.dumps(again)]) + b"\n")
    report = tmp_path / "report.ndjson"
    proc = run(cfg, src, "--report", str(report))
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "│ not sent │ its event_id came before for another stage │ 1 │" in said, said
    assert "Converted has the event_id of a Marketing Qualified Lead event" in said
    rows = {(r["outcome"], r["reason"]): r for r in report_rows(report)}
    reused = rows["not_sent", "event_id_reused"]
    assert (reused["where"], reused["event_name"]) == (f"{src} line {between + 2}", "Converted")
    assert rows["duplicate", "same_event_id"]["where"] == f"{src} line {between + 3}"
    sent = [(e["event_id"], e["event_name"]) for e in sandbox.state.received()]
    assert len(sent) == between + 1
    assert ("e0", "Marketing Qualified Lead") in sent


def stages(*specs: tuple[str, str, int]) -> bytes:
    """Events (event_id, our event name, lead id), as a CRM's export gives them."""
    ms = int((time.time() - 600) * 1000)
    return b"".join(
        orjson.dumps(
            {
                "event_name": name,
                "facebook_lead_id": lead,
                "context": {"event_id": event_id, "event_timestamp": ms},
            }
        )
        + b"\n"
        for event_id, name, lead in specs
    )


def test_another_stage_is_not_sent_whatever_became_of_the_first(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Review: a second stage whose event_id an earlier run left queued (a refused token) was
    counted as the first stage, delivered, exit 0; after a first stage Meta refused, the second
    took its place (and its dead letter) when read later, and was not sent when read right
    behind it; and a first stage behind another stage's refusal in one chunk was a duplicate.
    One rule: another stage is not sent, exit 2; the first one is as it was."""
    cfg = config(tmp_path, sandbox.url)
    cfg.write_text(cfg.read_text().replace("[delivery]", 'deal_won = "Converted"\n[delivery]'))
    lead = 100000000000042
    first = tmp_path / "first.ndjson"
    first.write_bytes(stages(("q", "lead_qualified", lead), ("m", "lead_qualified", DELETED)))
    assert run(cfg, first, token="wrong-token").returncode == 1  # q and m left queued
    assert run(cfg, first).returncode == 2  # q delivered, m refused by Meta (a dead letter)
    queued = tmp_path / "queued.ndjson"
    queued.write_bytes(stages(("w", "lead_qualified", lead)))
    assert run(cfg, queued, token="wrong-token").returncode == 1  # w left queued
    second = tmp_path / "second.ndjson"
    second.write_bytes(
        stages(
            ("q", "deal_won", lead),  # q delivered as qualified
            ("q", "lead_qualified", lead),  # and that stage again: delivered before
            ("m", "deal_won", lead),  # m refused by Meta as qualified: no place taken
            ("w", "deal_won", lead),  # w queued as qualified: this run sends that one
            ("n", "lead_qualified", DELETED),  # refused by Meta in this run...
            ("n", "deal_won", lead),  # ...right behind it
        )
    )
    report = tmp_path / "report.ndjson"
    proc = run(cfg, second, "--report", str(report))
    assert proc.returncode == 2, proc.stderr
    rows = {(r["event_id"], r["event"]): r for r in report_rows(report)}
    reused = sorted(k for k, r in rows.items() if r["reason"] == "event_id_reused")
    assert reused == [("m", "deal_won"), ("n", "deal_won"), ("q", "deal_won"), ("w", "deal_won")]
    assert rows["q", "lead_qualified"]["where"] == "an earlier run"
    assert rows["q", "lead_qualified"]["outcome"] == "delivered"
    env = {"TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    dead = subprocess.run(
        [sys.executable, "-m", "leadrelay", "dead-letters", "list", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert dead.stdout.count("Marketing Qualified Lead") == 2 and "Converted" not in dead.stdout
    sent = sorted((e["event_id"], e["event_name"]) for e in sandbox.state.received())
    assert ("m", "Converted") not in sent and ("n", "Converted") not in sent
    assert sent.count(("w", "Marketing Qualified Lead")) == 1 and ("w", "Converted") not in sent


def test_an_event_meta_has_resent_after_a_mapping_rename_says_what_to_do(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A file sent again after [mapping] renamed its Facebook event name: not sent (Meta has
    the event under its old name), and the message says so besides the CRM's event ids."""
    cfg = config(tmp_path, sandbox.url)
    src = tmp_path / "leads.ndjson"
    src.write_bytes(stages(("r", "lead_qualified", 100000000000001)))
    assert run(cfg, src).returncode == 0
    cfg.write_text(cfg.read_text().replace('"Marketing Qualified Lead"', '"Qualified Lead"'))
    proc = run(cfg, src)
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "if [mapping] names this event Qualified Lead since Marketing Qualified Lead" in said
    assert len(sandbox.state.received()) == 1


def test_a_stage_behind_a_filtered_event_of_its_deal_is_sent(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Review: a CRM that sends unmapped "updated" events under the deal's id got no stage of
    the deal sent after one ("not sent", event_id_reused). Meta never saw the filtered event:
    the stage takes its place, and is sent."""
    cfg = config(tmp_path, sandbox.url)
    cfg.write_text(cfg.read_text().replace("[delivery]", 'deal_won = "Converted"\n[delivery]'))
    src = tmp_path / "deals.ndjson"
    lead = 100000000000042
    src.write_bytes(stages(("x", "deal_updated", lead), ("x", "deal_won", lead)))
    proc = run(cfg, src)
    assert proc.returncode == 0, proc.stderr
    assert [(e["event_id"], e["event_name"]) for e in sandbox.state.received()] == [
        ("x", "Converted")
    ]


def test_an_event_refused_by_our_rules_is_sent_once_the_config_is_fixed_even_renamed(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Review: a config fixed after our rules refused an event (its lead_id setting), that also
    renamed the event's Facebook name, made the event "another stage": not sent, exit 2, with
    advice to change the CRM's event ids. It is the same event of the CRM: delivered."""
    cfg = config(tmp_path, sandbox.url)
    text = cfg.read_text()
    src = tmp_path / "leads.ndjson"
    src.write_bytes(stages(("g", "lead_qualified", 100000000000001)))
    cfg.write_text(text.replace('lead_id = "{{facebook_lead_id}}"', 'lead_id = "{{nope}}"'))
    assert run(cfg, src).returncode == 2  # missing_lead_id
    cfg.write_text(text.replace('"Marketing Qualified Lead"', '"Qualified Lead"'))
    proc = run(cfg, src)
    assert proc.returncode == 0, proc.stderr
    sent = [(e["event_id"], e["event_name"]) for e in sandbox.state.received()]
    assert sent == [("g", "Qualified Lead")]


def test_a_send_stopped_by_a_refused_token_has_a_row_for_every_event_it_read(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """After Meta refused the token, the events read and not sent were "not sent yet: queued in
    the store" in the summary, with no row (5 rows for 40 events in a review). Each has one."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(400))
    report = tmp_path / "report.ndjson"
    proc = run(config(tmp_path, sandbox.url), src, "--report", str(report), token="wrong-token")
    assert proc.returncode == 1, proc.stderr
    said = " ".join(proc.stderr.split())
    read = int(re.search(r"│ read │ │ (\d+) │", said).group(1))  # type: ignore[union-attr]
    rows = report_rows(report)
    assert len(rows) == read and len({r["event_id"] for r in rows}) == read
    assert {r["outcome"] for r in rows} <= {"not_sent", "queued"}
    assert "queued in the store: the next send (or serve) delivers it" in said
    assert "kill -HUP" not in said  # a service's advice: a send stops, it does not reload
    # The same send again, as the summary says: the events it finds queued are its own, and
    # their rows say where they were read (they said null).
    again = tmp_path / "again.ndjson"
    second = run(config(tmp_path, sandbox.url), src, "--report", str(again))
    assert second.returncode == 0, second.stderr
    rows = report_rows(again)
    assert len(rows) == 400
    assert {r["event_id"]: r["where"] for r in rows} == {
        f"e{n}": f"{src} line {n + 1}" for n in range(400)
    }


def test_a_batch_still_in_flight_when_reading_ends_is_delivered_once_as_this_runs(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Meta answers the last batch after more than the drain timeout (20 s) that a stop gives
    the batches in flight. Reading had ended, nothing stopped the send: the batch was cut
    short anyway, put back, sent a second time, and its events were counted as another run's
    ("not delivered: queued in the store before this run", "not sent again: stored by an earlier
    run"), with no report row. It is waited for, sent once, and this run's."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(3000))  # the first batch is in flight as reading ends
    cfg = config(tmp_path, sandbox.url)
    cfg.write_text(cfg.read_text().replace("max_attempts = 3", "max_attempts = 3\ntimeout_s = 40"))
    sandbox.state.script("slow:21000")
    report = tmp_path / "report.ndjson"
    proc = run(cfg, src, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert "cut short" not in proc.stderr
    assert sandbox.state.requests == 60  # batches of 50
    said = " ".join(proc.stderr.split())
    assert "│ delivered │ immediately │ 3000 │" in said
    assert "earlier run" not in said and "before this run" not in said
    rows = report_rows(report)
    assert sorted(r["event_id"] for r in rows) == sorted(f"e{i}" for i in range(3000))
    assert {r["outcome"] for r in rows} == {"delivered"}


def test_every_report_row_has_the_same_fields_in_the_same_order(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A data team loads the report into a table: each kind of row had its own fields (a
    duplicate had no event_name, a queued one no reason, a rejected one no code), so the
    columns depended on which rows came first. Every row has them all, null where they do not
    apply."""
    good = events(30, bad=(7,)).splitlines(keepends=True)  # e7: a lead Meta refuses
    unmapped = orjson.loads(good[1]) | {"event_name": "lead_lost"}
    unmapped["context"] = {**unmapped["context"], "event_id": "lost-1"}
    no_lead = orjson.loads(good[2]) | {"facebook_lead_id": "12"}
    no_lead["context"] = {**no_lead["context"], "event_id": "short-1"}
    src = tmp_path / "events.ndjson"
    src.write_bytes(
        b"".join(good)
        + good[0]  # e0 again
        + orjson.dumps(unmapped) + b"\n"
        + orjson.dumps(no_lead) + b"\n"
        + b"{not json\n"
    )  # fmt: skip
    report = tmp_path / "report.ndjson"
    proc = run(config(tmp_path, sandbox.url), src, "--report", str(report))
    assert proc.returncode == 2, proc.stderr
    rows = report_rows(report)
    outcomes = {"delivered_after_split", "rejected", "filtered", "duplicate"}  # one batch, split
    assert {r["outcome"] for r in rows} == outcomes
    assert {r["reason"] for r in rows if r["outcome"] == "rejected"} >= {"unreadable"}
    assert len(rows) == 34
    fields = [
        "where", "event_id", "event", "lead_id", "event_name", "outcome", "reason", "field",
        "message", "attempts", "code", "subcode", "fbtrace_id",
    ]  # fmt: skip
    assert {tuple(r) for r in rows} == {tuple(fields)}
    meta = [r for r in rows if r["event_id"] == "e7"]
    assert meta[0]["code"] == 100 and meta[0]["where"] == f"{src} line 8"
    assert all(r["where"] for r in rows)  # every row says where its event was read


def test_a_deliver_stopped_by_a_second_ctrl_c_says_to_deliver_again(tmp_path: Path) -> None:
    """``deliver`` cut short by a second Ctrl-C counted the events of the batches it cut as
    "not sent yet: queued in the store" (200 of the 2,970 left queued), and said to "run the
    same send again", which reads files it never had. It counts what it delivered, and says
    to run deliver again; that delivers everything once."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(400))
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}))) as server:
        refused = run(config(tmp_path, server.url), src, token="wrong-token")
        assert refused.returncode == 1, refused.stderr
    assert stored_states(tmp_path / "data") == {"queued": 400}  # the token was refused
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}))) as server:
        cfg = config(tmp_path, server.url)
        paused = subprocess.run(
            [sys.executable, "-m", "leadrelay", "deliver", "--config", str(cfg)],
            env={"TOKEN": "wrong-token", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert paused.returncode == 1, paused.stderr
        # the batch the pause held, alone, was "not sent: paused_auth 50" of 400 left queued
        assert "paused_auth" not in paused.stderr and "Delivery stopped" in paused.stderr
    slow = SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=30_000)
    with SandboxServer(slow) as server:
        cfg = config(tmp_path, server.url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadrelay", "deliver", "--config", str(cfg)],
            env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 60
        while server.state.requests < 4 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        said = " ".join(proc.communicate(timeout=15)[1].decode().split())
        assert proc.returncode == 130, said
        assert "not sent yet" not in said and "same send" not in said
        assert "what it did not deliver stays queued in the store" in said
        assert "run leadrelay deliver again to send what is queued" in said
    with SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}))) as server:
        cfg = config(tmp_path, server.url)
        proc2 = subprocess.run(
            [sys.executable, "-m", "leadrelay", "deliver", "--config", str(cfg)],
            env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc2.returncode == 0, proc2.stderr
        assert sorted(e["event_id"] for e in server.state.received()) == sorted(
            f"e{i}" for i in range(400)
        )


@pytest.mark.parametrize("second", ["missing.ndjson", "a-folder"])
def test_an_input_that_cannot_be_opened_is_said_before_anything_is_sent(
    sandbox: SandboxServer, tmp_path: Path, second: str
) -> None:
    """A send of two files, the second misspelt (or a folder), delivered the first, then said
    "Input error" alone: the user took it that nothing was sent. Nothing is, dry run or not."""
    src = tmp_path / "events.ndjson"
    src.write_bytes(events(100))
    (tmp_path / "a-folder").mkdir()
    cfg = config(tmp_path, sandbox.url)
    for extra in ((), ("--dry-run",)):
        proc = run(cfg, src, str(tmp_path / second), *extra)
        assert proc.returncode == 1, proc.stderr
        assert f"{tmp_path / second}: cannot open:" in " ".join(proc.stderr.split())
        assert proc.stdout == ""
    assert sandbox.state.requests == 0
    assert not (tmp_path / "data").exists() or stored_states(tmp_path / "data") == {}
