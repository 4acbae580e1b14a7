"""`leadrelay status` and `leadrelay dead-letters` on a real store file, as users run them."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import orjson

from leadrelay.config import load_config
from leadrelay.delivery.store import Incoming
from leadrelay.delivery.wiring import open_store
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Delivery, Payload, State

TOKEN = "EAAB-operate-secret"


def write_config(tmp_path: Path, lead_id: str = "{{facebook_lead_id}}") -> Path:
    path = tmp_path / "leadrelay.toml"
    path.write_text(
        f"""
pixel_id = "123456789012345"
access_token = "{TOKEN}"
lead_id = "{lead_id}"
lead_event_source = "HubSpot"
[mapping]
lead_qualified = "Marketing Qualified Lead"
[server]
data_dir = "{tmp_path / "data"}"
port = 9
"""
    )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leadrelay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "250"},
    )


def seed(config: Path) -> None:
    """Store 4 events: one delivered, one rejected by Meta, one rejected by us, one filtered."""
    settings = load_config(config)
    mapper = Mapper(settings)
    ms = int((time.time() - 600) * 1000)
    events = [
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": 123456789012345,
            "context": {"event_id": "ok-1", "event_timestamp": ms},
        },
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": 999999999999001,
            "user": {"email": "gone@example.com"},
            "context": {"event_id": "meta-no", "event_timestamp": ms},
        },
        {
            "event_name": "lead_qualified",
            "lead": "123456789012346",
            "context": {"event_id": "no-lead", "event_timestamp": ms},
        },
        {"event_name": "page_view", "context": {"event_id": "pv", "event_timestamp": ms}},
    ]
    store = open_store(settings)
    now = time.time()
    store.add([Incoming(mapper.map(e), orjson.dumps(e), now) for e in events])
    claimed = store.claim(10, now + 1)
    assert [c.payload.key for c in claimed] == ["ok-1", "meta-no"]
    ok, bad = claimed
    store.complete(
        [
            (ok.id, Delivery(ok.payload, State.DELIVERED)),
            (
                bad.id,
                Delivery(
                    bad.payload,
                    State.REJECTED,
                    reason="meta_100_2804036",
                    message="Invalid Lead ID",
                    code=100,
                    subcode=2804036,
                    fbtrace_id="AbCdEfGhIjK",
                ),
            ),
        ],
        now + 2,
    )
    store.close()


def test_status_shows_outcomes_health_and_backlog(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(config)
    proc = run("status", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Event Delivery" in out and "last week" in out
    assert "stormy" in out  # 1 delivered of 3 that reached an outcome other than filtered
    assert "meta_100_2804036" in out and "missing_lead_id" in out
    assert "not running" in out
    assert TOKEN not in out + proc.stderr


def test_status_says_what_waits_for_another_try_in_an_outage(tmp_path: Path) -> None:
    """Events an outage left queued for their next try were in no row of status: it said
    "sunny" through 4 minutes of 500s. It says how many wait, and why."""
    config = write_config(tmp_path)
    seed(config)
    settings = load_config(config)
    store = open_store(settings)
    now = time.time()
    ids = store.add(
        [
            Incoming(Mapper(settings).map(e), None, now)
            for e in (
                {
                    "event_name": "lead_qualified",
                    "facebook_lead_id": 100000000000000 + n,
                    "context": {"event_id": f"out-{n}", "event_timestamp": int(now * 1000)},
                }
                for n in range(3)
            )
        ]
    )
    store.claim(10, now)
    store.retry_later(ids, now + 60, "retries_exhausted", "500", attempts=6, now=now)
    store.close()
    proc = run("status", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "Waiting to be tried again: 3 retries_exhausted" in " ".join(proc.stdout.split())


def test_windows_longer_than_retention_count_only_what_the_store_keeps(tmp_path: Path) -> None:
    """Past retention_days deliveries are deleted and dead letters kept: a week counted whole
    showed the failures alone ("stormy: 0.0% delivered" after 397,376 deliveries)."""
    config = write_config(tmp_path)
    config.write_text(config.read_text() + "[store]\nretention_days = 3\n")
    settings = load_config(config)
    store = open_store(settings)
    old = time.time() - 5 * 86400  # a refusal kept past retention; its deliveries are gone
    refused = {"event_name": "lead_qualified", "lead": "1", "context": {"event_id": "r"}}
    store.add([Incoming(Mapper(settings, clock=lambda: old).map(refused), None, old)])
    store.close()
    proc = run("status", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "last week (the store keeps 3 days)" in proc.stdout
    assert "stormy" not in proc.stdout, proc.stdout


def test_status_without_store_says_so(tmp_path: Path) -> None:
    proc = run("status", "--config", str(write_config(tmp_path)))
    assert proc.returncode == 1
    assert "no event store" in proc.stderr


def test_dead_letters_list_reads_on_an_80_column_terminal(tmp_path: Path) -> None:
    """At 80 columns the table folded each message into a tower of ten lines: each event is
    now two lines, who and what (with Meta's code), then the message."""
    config = write_config(tmp_path)
    seed(config)
    listed = subprocess.run(
        [sys.executable, "-m", "leadrelay", "dead-letters", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"},
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    head = next(n for n, line in enumerate(lines) if "meta-no" in line)
    assert "rejected" in lines[head] and "100/2804036" in lines[head]
    assert lines[head + 1].startswith("    lead_id 999999999999001: ")
    assert max(map(len, lines)) <= 80


def test_dead_letters_list_show_and_replay_after_fix(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(config)
    listed = run("dead-letters", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert "meta-no" in listed.stdout and "100/2804036" in listed.stdout
    assert "no-lead" in listed.stdout and "missing_lead_id" in listed.stdout
    assert "ok-1" not in listed.stdout and "pv" not in listed.stdout
    only = run("dead-letters", "list", "--config", str(config), "--reason", "missing_lead_id")
    assert "no-lead" in only.stdout and "meta-no" not in only.stdout

    shown = run("dead-letters", "show", "meta-no", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "AbCdEfGhIjK" in shown.stdout and "gone@example.com" in shown.stdout
    assert "original event" in shown.stdout and "request payload" in shown.stdout

    # The user fixes the Lead Id mapping, then replays only the events we rejected.
    fixed = write_config(tmp_path, lead_id="=COALESCE(facebook_lead_id, lead)")
    replayed = run("dead-letters", "replay", "--config", str(fixed), "--reason", "missing_lead_id")
    assert replayed.returncode == 0, replayed.stderr
    assert "Queued 1 event(s) again (1 re-mapped" in replayed.stderr
    store = open_store(load_config(fixed), create=False)
    try:
        (claimed,) = store.claim(10, time.time() + 5)
        assert claimed.payload.key == "no-lead"
        assert isinstance(claimed.payload, Payload)
        assert claimed.payload.lead_id == 123456789012346
    finally:
        store.close()


def test_a_numeric_event_id_is_the_event_not_the_store_id(tmp_path: Path) -> None:
    """``show 1`` showed the event stored first (ok-1), not the event whose event_id is "1",
    and ``replay 1`` replayed that other one; a 20-digit event_id crashed both (SQLite took it
    for an id: OverflowError). An event_id names its event; ``#1`` is the store id."""
    config = write_config(tmp_path)
    seed(config)  # ok-1 is #1
    settings = load_config(config)
    mapper = Mapper(settings)
    ms = int((time.time() - 600) * 1000)
    numeric = [
        {"event_name": "lead_qualified", "facebook_lead_id": "12", "context": {"event_id": key}}
        | {"context": {"event_id": key, "event_timestamp": ms}}
        for key in ("1", "20260105142901000123", "#99")
    ]
    store = open_store(settings)
    store.add([Incoming(mapper.map(e), orjson.dumps(e), time.time()) for e in numeric])
    store.close()
    shown_as = (
        ("1", "1"), ("#1", "ok-1"), ("20260105142901000123", "20260105142901000123"),
        ("#99", "#99"),  # no 99th event: the event_id "#99"
    )  # fmt: skip
    for ref, key in shown_as:
        shown = run("dead-letters", "show", ref, "--config", str(config))
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
        assert re.search(rf"^key: {key}$", shown.stdout, re.M), (ref, shown.stdout)
    said = run("dead-letters", "show", "1", "--config", str(config)).stderr
    assert "1: the event with that event_id (#5); the other is #1 (ok-1)" in " ".join(said.split())
    replayed = run("dead-letters", "replay", "1", "20260105142901000123", "--config", str(config))
    assert replayed.returncode == 0, replayed.stderr
    assert "left as they are: 2" in replayed.stderr  # both still without a valid lead id
    assert "e.g. 1: lead_id '12'" in replayed.stderr  # the event "1", not ok-1 (delivered)
    assert "e.g. 20260105142901000123: lead_id '12'" in replayed.stderr


def test_since_must_be_readable(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seed(config)
    proc = run("dead-letters", "list", "--config", str(config), "--since", "last tuesday")
    assert proc.returncode == 1
    assert "2h, 30m, 7d" in proc.stderr


def test_status_shows_a_fleet_wide_pause_from_redis(tmp_path: Path) -> None:
    from leadrelay.delivery.redis import RedisStore
    from redis_server import running_redis

    (tmp_path / "redis").mkdir()
    with running_redis(tmp_path / "redis") as url:
        config = write_config(tmp_path)
        config.write_text(config.read_text() + f'[queue]\nurl = "{url}"\n')
        seed(config)  # the same four events, now in Redis
        store = RedisStore(url, prefix="lr:123456789012345", create=True)
        store.pause_until(time.time() + 120, "throttled: 4")
        store.close()
        proc = run("status", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "Delivery paused" in proc.stdout and "throttled: 4" in proc.stdout
    assert "meta_100_2804036" in proc.stdout


def test_send_refuses_a_redis_without_an_append_only_file_unless_told(tmp_path: Path) -> None:
    """A Redis started with its defaults keeps no AOF: send stores nothing there and says how to
    turn it on, or to accept the risk; with require_aof = false it stores, with a warning."""
    import redis

    from redis_server import running_redis

    (tmp_path / "redis").mkdir()
    events = tmp_path / "events.ndjson"
    ms = int((time.time() - 600) * 1000)
    event = {"event_name": "page_view", "context": {"event_id": "pv", "event_timestamp": ms}}
    events.write_bytes(orjson.dumps(event) + b"\n")
    with running_redis(tmp_path / "redis") as url:
        client = redis.Redis.from_url(url)
        client.config_set("appendonly", "no")
        config = write_config(tmp_path)
        base = config.read_text()
        config.write_text(base + f'[queue]\nurl = "{url}"\n')
        refused = run("send", str(events), "--config", str(config))
        stored_then = client.dbsize()
        config.write_text(base + f'[queue]\nurl = "{url}"\nrequire_aof = false\n')
        accepted = run("send", str(events), "--config", str(config))
        stored_after = client.dbsize()
        client.close()
    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())
    assert "keeps no append-only file (appendonly no)" in said
    assert "CONFIG SET appendonly yes" in said and "require_aof = false in [queue]" in said
    assert stored_then == 0
    assert accepted.returncode == 0, accepted.stderr
    assert "Redis keeps no append-only file" in accepted.stderr
    assert stored_after > 0  # the filtered event's outcome, and the store's own keys


def test_event_data_that_looks_like_markup_is_shown_as_it_is(tmp_path: Path) -> None:
    """An event id or message with square brackets ("[/oops]", "[mapping]") is the event's data:
    list and show print it, where rich took it for a style tag and list failed for every
    event."""
    config = write_config(tmp_path)
    settings = load_config(config)
    event = {
        "event_name": "lead_qualified",
        "lead": "1",
        "context": {"event_id": "[/oops]", "event_timestamp": int(time.time() * 1000)},
    }
    store = open_store(settings)
    store.add([Incoming(Mapper(settings).map(event), orjson.dumps(event), time.time())])
    store.close()
    listed = run("dead-letters", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert "[/oops]" in listed.stdout and "missing_lead_id" in listed.stdout
    shown = run("dead-letters", "show", "[/oops]", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "key: [/oops]" in shown.stdout
    missing = run("dead-letters", "show", "[/nope]", "--config", str(config))
    assert missing.returncode == 1 and "[/nope]" in missing.stderr
    # replay, as show: an id found is replayed (still no lead id here), one that names nothing
    # is an error (exit 1)
    replayed = run("dead-letters", "replay", "[/oops]", "nope", "--config", str(config))
    assert replayed.returncode == 1 and "1 still missing_lead_id" in replayed.stderr
    assert "No stored event 'nope'" in replayed.stderr


def test_report_reads_every_file_named_after_from(tmp_path: Path) -> None:
    """`report --from a.ndjson b.ndjson` stopped at b.ndjson ("unexpected extra argument"):
    --from had to be written before each file. Both are read."""
    config = write_config(tmp_path)
    ms = int(time.time() * 1000)
    names = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.ndjson"
        event = {
            "event_name": "lead_qualified",
            "facebook_lead_id": 100000000000001,
            "context": {"event_id": f"{name}-1", "event_timestamp": ms},
        }
        path.write_bytes(orjson.dumps(event) + b"\n")
        names.append(str(path))
    html = tmp_path / "r.html"
    proc = run("report", "--config", str(config), "--from", *names, "--html", str(html))
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "unexpected extra argument" not in said
    assert "2 file(s)" in said and html.exists(), said


def test_status_advice_names_where_to_read_the_message() -> None:
    """status's "what to do" said "See the example message" or "the example names it", and
    status shows no example: it names the command that lists those events with their message."""
    from leadrelay.status import fix_for

    for reason in ("oops_new_reason", "meta_100_2804050", "meta_1234", "unreadable"):
        advice = fix_for(reason)
        assert "the example" not in advice, advice
        assert f"`leadrelay dead-letters list --reason {reason}`" in advice, advice


def test_replay_of_an_event_that_is_no_dead_letter_says_why(tmp_path: Path) -> None:
    """``replay ok-1`` (delivered) printed "Queued 0 event(s) again" and nothing else."""
    config = write_config(tmp_path)
    seed(config)
    replayed = run("dead-letters", "replay", "ok-1", "--config", str(config))
    assert replayed.returncode == 0, replayed.stderr
    said = " ".join(replayed.stderr.split())
    assert "Queued 0 event(s) again" in said
    assert (
        "left as they are: 1 delivered: Meta has it (a replay never sends an event twice)" in said
    )
    limited = run("dead-letters", "list", "--config", str(config), "--limit", "-1")
    assert limited.returncode == 2  # it listed nothing, silently
    blank = run("dead-letters", "list", "--config", str(config), "--reason", "")
    assert blank.returncode == 2 and "is empty" in blank.stderr  # so did this
    assert "Invalid value for '--limit'" in limited.stderr


def test_an_event_without_a_name_is_listed_as_such() -> None:
    """``dead-letters list`` showed a bare " (yours)" for an event that had no event_name."""
    import io

    from rich.console import Console

    from leadrelay.deadletters import render_list
    from leadrelay.delivery.store import EventRecord

    record = EventRecord(
        id=3, key="nameless", state=State.REJECTED, source_event="", event_name=None,
        lead_id=None, event_time=None, received_at=1.0, updated_at=1.0, attempts=0,
        reason="missing_event_name", message="the event has no event_name", field="event_name",
        code=None, subcode=None, fbtrace_id=None, payload=None, original=None, response=None,
    )  # fmt: skip
    for width in (80, 200):
        out = io.StringIO()
        assert render_list(iter([record]), Console(file=out, width=width)) == 1
        shown = out.getvalue()
        assert "(no name)" in shown and "(yours)" not in shown, shown
