"""The `leadrelay` command as users run it: a real process, real files, stdout and stderr."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

TOKEN = "EAAB-cli-secret-token"


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "leadrelay.toml"
    path.write_text(
        f"""
pixel_id = "123456789012345"
access_token = "${{TEST_META_TOKEN}}"
lead_id = "{{{{facebook_lead_id}}}}"
lead_event_source = "HubSpot"
consent_category = "4"
test_event_code = "TEST123"
graph_url = "http://127.0.0.1:9"
{extra}
[mapping]
lead_qualified = "Marketing Qualified Lead"
deal_won = "Converted"

[delivery]
batch_size = 2
"""
    )
    return path


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "leadrelay", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={"TEST_META_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def events(now: float) -> list[dict[str, Any]]:
    ms = int((now - 3600) * 1000)
    ok = [
        {
            "event_name": name,
            "facebook_lead_id": 123456789012345 + i,
            "user": {"email": f"u{i}@example.com", "consent_categories": [4]},
            "context": {"event_id": f"ok-{i}", "event_timestamp": ms},
        }
        for i, name in enumerate(["lead_qualified", "deal_won", "lead_qualified"])
    ]
    return [
        *ok,
        {"event_name": "page_view", "context": {"event_id": "pv"}},
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": "123",
            "user": {"consent_categories": ["4"]},
            "context": {"event_id": "short-lead"},
        },
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": 123456789012399,
            "user": {"consent_categories": [1]},
            "context": {"event_id": "no-consent"},
        },
    ]


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(i) + b"\n" for i in items)


def test_dry_run_prints_only_request_bodies(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    src = tmp_path / "events.ndjson"
    src.write_bytes(ndjson(events(time.time())) + b"{not json\n")
    report = tmp_path / "report.ndjson"
    proc = run("send", str(src), "--config", str(cfg), "--dry-run", "--report", str(report))
    assert proc.returncode == 2, proc.stderr.decode()
    bodies = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert [len(b["data"]) for b in bodies] == [2, 1]
    assert all(b["test_event_code"] == "TEST123" for b in bodies)
    sent = [e for b in bodies for e in b["data"]]
    assert [e["event_id"] for e in sent] == ["ok-0", "ok-1", "ok-2"]
    assert [e["event_name"] for e in sent] == [
        "Marketing Qualified Lead",
        "Converted",
        "Marketing Qualified Lead",
    ]
    assert all(e["action_source"] == "system_generated" for e in sent)
    assert all(
        e["custom_data"] == {"lead_event_source": "HubSpot", "event_source": "crm"} for e in sent
    )
    err = proc.stderr.decode()
    assert "invalid_lead_id" in err and "short-lead" in err and "line 5" in err
    assert "unreadable" in err and "line 7" in err
    assert err.count("line 7") == 1, err  # once: "events.ndjson line 7: (record): events..."
    assert "consent" in err and "unmapped" in err
    assert TOKEN not in err and TOKEN.encode() not in proc.stdout
    rows = [orjson.loads(line) for line in report.read_bytes().splitlines()]
    outcomes = sorted(r["outcome"] for r in rows)
    assert outcomes == [
        "filtered",
        "filtered",
        "mapped",
        "mapped",
        "mapped",
        "rejected",
        "rejected",
    ]


def test_dry_run_from_stdin_and_clean_exit(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    good = events(time.time())[:3]
    proc = run("send", "-", "--config", str(cfg), "--dry-run", stdin=ndjson(good))
    assert proc.returncode == 0, proc.stderr.decode()
    assert sum(len(orjson.loads(x)["data"]) for x in proc.stdout.splitlines()) == 3


def test_a_dry_run_from_stdin_reads_in_its_own_process_and_says_so(tmp_path: Path) -> None:
    """As a send does: mapping processes take whole units, which a quiet producer would hold."""
    cfg = write_config(tmp_path)
    good = events(time.time())[:3]
    proc = run("send", "-", "--config", str(cfg), "--dry-run", "--jobs", "2", stdin=ndjson(good))
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"jobs = 2 is for files only" in proc.stderr.replace(b"\n", b" ")
    assert sum(len(orjson.loads(x)["data"]) for x in proc.stdout.splitlines()) == 3


def test_dry_run_csv_with_dotted_columns(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    ms = int((time.time() - 60) * 1000)
    src = tmp_path / "export.csv"
    src.write_text(
        "event_name,facebook_lead_id,user.email,user.consent_categories,context.event_timestamp\n"
        f"lead_qualified,98765432109876543,A@B.example,4,{ms}\n"
    )
    proc = run("send", str(src), "--config", str(cfg), "--dry-run")
    assert proc.returncode == 0, proc.stderr.decode()
    (body,) = proc.stdout.splitlines()
    assert b'"lead_id":98765432109876543' in body


def test_validate_reports_every_problem_without_the_token(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        f'pixel_id = "abc"\naccess_token = "{TOKEN}"\nlead_id = "=TRIM("\n'
        '[mapping]\nx = "Lead"\n[smart_mapping]\n"user_data.email" = "{{user.email}}"\n'
    )
    proc = run("validate", "--config", str(cfg))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    for key in ("pixel_id", "lead_id", "lead_event_source", 'smart_mapping."user_data.email"'):
        assert key in err
    assert TOKEN not in err


@pytest.mark.parametrize(("version", "warned"), [("v20.0", True), ("v25.0", False)])
def test_validate_warns_of_an_api_version_past_its_end(
    version: str, warned: bool, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, extra=f'api_version = "{version}"\n')
    proc = run("validate", "--config", str(cfg))
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "OK" in err
    assert ("v20.0 ended on 2026-09-24" in err and "2635" in err) is warned, err


@pytest.mark.parametrize(("limit", "floors"), [(5, ["5 s", "60 s"]), (30, ["60 s"]), (600, [])])
def test_validate_warns_of_a_max_retry_s_that_leaves_no_room_for_a_throttle(
    limit: int, floors: list[str], tmp_path: Path
) -> None:
    """With max_retry_s at 5, every throttled batch went dead at its first answer (leadrelay
    waits 5 s at least), and validate said nothing."""
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text() + f"max_retry_s = {limit}\n")
    proc = run("validate", "--config", str(cfg))
    err = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 0 and "OK" in err
    said = [f for f in ("5 s", "60 s") if f"leaves no room for the {f} leadrelay waits" in err]
    assert said == floors, err


def test_preview_explains_each_field(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra='default_country = "FR"\n')
    event = events(time.time())[0]
    event["user"]["phone"] = "06 12 34 56 78"
    event["user"]["birthdate"] = "12/04/1985"
    src = tmp_path / "one.json"
    src.write_bytes(orjson.dumps(event))
    proc = run("preview", str(src), "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "Sendable" in out and "Marketing Qualified Lead" in out
    assert "user_data.ph" in out and "prebuilt" in out and "setting" in out
    assert "user_data.db" in out and "YYYY" in out  # why the birthdate was left out
    # What each digest is of: the value as normalized (a national number with its country code).
    assert "SHA-256 of 33612345678" in " ".join(out.replace("│", " ").split())


def test_preview_of_a_file_of_several_events_says_it_shows_the_first(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    src = tmp_path / "two.ndjson"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events(time.time())[:2]))
    proc = run("preview", str(src), "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr.decode()
    err = " ".join(proc.stderr.decode().split())
    assert "holds more than one event: this is the first" in err  # it said nothing


@pytest.mark.parametrize("bad", ["nope.ndjson"])
def test_missing_input_file_is_an_input_error(tmp_path: Path, bad: str) -> None:
    cfg = write_config(tmp_path)
    proc = run("send", str(tmp_path / bad), "--config", str(cfg), "--dry-run")
    assert proc.returncode == 1
    assert bad in proc.stderr.decode()


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_send_from_a_missing_file_or_a_directory_says_only_that(
    tmp_path: Path, jobs: str, kind: str
) -> None:
    """No note about pipes with --jobs 2: such an input is an input error, nothing more."""
    cfg = write_config(tmp_path)
    source = tmp_path / "nope.ndjson"
    if kind == "directory":
        source.mkdir()
    proc = run("send", str(source), "--config", str(cfg), "--jobs", jobs)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "nope.ndjson: cannot open" in err and "pipe" not in err, err


def test_dry_run_on_two_processes_prints_the_same_bodies(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    src = tmp_path / "events.ndjson"
    src.write_bytes(ndjson(events(time.time()) * 50))
    one = run("send", str(src), "--config", str(cfg), "--dry-run")
    two = run("send", str(src), "--config", str(cfg), "--dry-run", "--jobs", "2")
    assert one.returncode == two.returncode == 2
    assert one.stdout == two.stdout and len(one.stdout.splitlines()) == 75


# What a dry run has no use for: sending (HTTP client, Graph client), the store, the structured
# logs, asyncio and the progress bar (no terminal here). Importing them was most of its start-up.
DELIVERY_STACK = [
    "asyncio",
    "httpx",
    "leadrelay.delivery",
    "leadrelay.logs",
    "leadrelay.meta.client",
    "leadrelay.send_input",
    "rich.progress",
    "sqlite3",
    "structlog",
]

IN_PROCESS = """
import os, runpy, sys
import orjson
out, sys.argv = sys.argv[1], ["leadrelay", *sys.argv[2:]]
sys.stdout = open(os.devnull, "w")
try:
    runpy.run_module("leadrelay", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
with open(out, "wb") as f:
    f.write(orjson.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_dry_run_does_not_load_the_delivery_stack(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    src = tmp_path / "events.ndjson"
    src.write_bytes(ndjson(events(time.time())[:3]))
    script = tmp_path / "in_process.py"
    script.write_text(IN_PROCESS)
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(out),
            "send",
            str(src),
            "--config",
            str(cfg),
            "--dry-run",
        ],
        capture_output=True,
        timeout=60,
        env={"TEST_META_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    seen = orjson.loads(out.read_bytes())
    assert seen["code"] == 0, proc.stderr.decode()
    assert "leadrelay.mapping.engine" in seen["modules"]  # it did map
    assert [m for m in DELIVERY_STACK if m in seen["modules"]] == []


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_dry_run_whose_input_fails_says_what_it_did_first(tmp_path: Path, jobs: str) -> None:
    """A dry run whose second file turns out not to be gzip printed only the error, though it
    had printed the first file's bodies: as a send does, it gives the summary, then the error."""
    cfg = write_config(tmp_path)
    src = tmp_path / "events.ndjson"
    src.write_bytes(ndjson(events(time.time())))
    fake = tmp_path / "more.gz"
    fake.write_bytes(b"not gzip at all\n")
    proc = run("send", str(src), str(fake), "--config", str(cfg), "--dry-run", "-j", jobs)
    err = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 1, err
    assert "│ read │ │ 6 │" in err and "│ mapped │ ready to send │ 3 │" in err, err
    assert "Input error" in err and "more.gz" in err
    assert err.index("│ read") < err.index("Input error")
    assert proc.stdout.strip()  # the first file's bodies
