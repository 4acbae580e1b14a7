"""Replaying dead letters on a real SQLite store: what goes back to Meta is what should."""

from __future__ import annotations

import time
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson

from conftest import make_settings
from leadrelay.deadletters import dead_letters, replay
from leadrelay.delivery.store import Incoming, Store
from leadrelay.delivery.wiring import open_store
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Delivery, Payload, State


def _dead_store(tmp_path: Path, event: dict[str, Any], received_at: float, **store: Any) -> Store:
    """A store holding ``event`` as received at ``received_at``, dead after its retries ran out."""
    settings = make_settings(server={"data_dir": str(tmp_path)}, store=store)
    outcome = Mapper(settings, clock=lambda: received_at).map(event)
    assert isinstance(outcome, Payload)
    db = open_store(settings)
    db.add([Incoming(outcome, orjson.dumps(event), received_at)])
    (claimed,) = db.claim(10, received_at + 1)
    dead = Delivery(claimed.payload, State.DEAD, 6, "retries_exhausted", "gave up")
    db.complete([(claimed.id, dead)], received_at + 2)
    return db


def _replayed(db: Store, tmp_path: Path) -> dict[str, Any]:
    """Replay every dead letter with the same config; the payload the queue now sends."""
    settings = make_settings(server={"data_dir": str(tmp_path)})
    result = replay(db, settings, list(dead_letters(db)))
    assert result.queued == 1, result
    (claimed,) = db.claim(10, time.time() + 5)
    assert isinstance(claimed.payload, Payload)
    return claimed.payload.data


def test_an_event_without_a_time_keeps_the_time_it_was_received(tmp_path: Path) -> None:
    """Its event_time is the first send's, not the time of the replay, and its event_id (made
    from its content: it has no time of its own) the one it was first sent with, so Meta can
    tell a resend."""
    received = time.time() - 3 * 3600
    event = {"event_name": "lead_qualified", "facebook_lead_id": 123456789012345}
    db = _dead_store(tmp_path, event, received)
    try:
        data = _replayed(db, tmp_path)
    finally:
        db.close()
    assert data["event_time"] == int(received)
    content = sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]
    assert data["event_id"] == f"123456789012345:Marketing Qualified Lead:{content}"


def test_a_redacted_original_is_not_mapped_again(tmp_path: Path) -> None:
    """Under originals = "redact" the customer information kept is "[redacted]": mapped again it
    would send a hash of that word, or nothing. The payload as it was goes instead."""
    received = time.time() - 600
    event = {
        "event_name": "lead_qualified",
        "facebook_lead_id": 123456789012345,
        "user": {"email": "Anne@Example.com", "firstname": "Anne"},
        "context": {"event_id": "e-1", "event_timestamp": int(received * 1000)},
    }
    db = _dead_store(tmp_path, event, received, originals="redact")
    try:
        (record,) = dead_letters(db)
        assert record.original is not None and record.original["user"]["email"] == "[redacted]"
        sent_before = record.payload
        data = _replayed(db, tmp_path)
    finally:
        db.close()
    assert sent_before is not None and data == sent_before
    assert data["user_data"]["em"] == [sha256(b"anne@example.com").hexdigest()]
    assert data["user_data"]["fn"] == [sha256(b"anne").hexdigest()]


def test_a_replay_that_still_fails_records_the_new_reason(tmp_path: Path) -> None:
    """The replay said "still invalid_lead_id" while the store kept missing_lead_id and a message
    naming the old config: status and dead-letters list --reason invalid_lead_id missed it."""
    settings = make_settings(server={"data_dir": str(tmp_path)})
    event = {"event_name": "lead_qualified", "fb_lead": "6234", "context": {"event_id": "short"}}
    db = open_store(settings)
    try:
        db.add([Incoming(Mapper(settings).map(event), orjson.dumps(event), time.time())])
        (record,) = dead_letters(db)
        assert record.reason == "missing_lead_id"
        fixed = make_settings(
            server={"data_dir": str(tmp_path)}, lead_id="=COALESCE(facebook_lead_id, fb_lead)"
        )
        result = replay(db, fixed, [record])
        assert result.skipped == {"still invalid_lead_id": 1}
        (again,) = dead_letters(db, reason="invalid_lead_id")
        assert again.id == record.id and "6234" in (again.message or "")
    finally:
        db.close()


def test_an_event_now_past_meta_s_window_is_left_as_it_is(tmp_path: Path) -> None:
    """A dead letter received 7 days ago (fine then) was mapped as at that time, queued again
    ("Queued 1 event(s) again") and expired at once. It is left as it is, saying why, whether
    its original is mapped again or its payload is sent as it was."""
    received = time.time() - 7 * 86400 + 30
    event = {
        "event_name": "lead_qualified",
        "facebook_lead_id": 123456789012345,
        "context": {"event_id": "old-1", "event_timestamp": int(received * 1000)},
    }
    for originals in ("keep", "drop"):
        folder = tmp_path / originals
        db = _dead_store(folder, event, received, originals=originals)
        try:
            settings = make_settings(server={"data_dir": str(folder)})
            result = replay(db, settings, list(dead_letters(db)), now=received + 7 * 86400)
            assert (result.queued, dict(result.skipped)) == (0, {"too old now": 1}), originals
            assert result.examples[0].startswith("old-1: event_time ")
            assert "days old" in result.examples[0]
            assert db.counts().queued == 0
        finally:
            db.close()
