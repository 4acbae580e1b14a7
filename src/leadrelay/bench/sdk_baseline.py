"""The alternative users would otherwise write: Meta's official SDK (``facebook-business``).

It does the same work as ``leadrelay send --dry-run`` on the benchmark events, the way the SDK's
documentation shows it: read the NDJSON, map the event name, check the lead id and the 7-day
window, turn the timestamp into seconds, build ``UserData`` / ``CustomData`` / ``Event``, let
``normalize()`` normalize and hash, JSON-encode the request bodies in batches of 1000. The SDK
cannot read national phone numbers ("06 12 34 56 78") nor ISO dates of birth, so the phone goes
through ``phonenumbers`` (with ``user.country``) and the birthdate loses its dashes first, as a
user would have to write it; ``external_id`` is hashed by hand because the SDK sends it as given.

Run as ``python -m leadrelay.bench.sdk_baseline EVENTS.ndjson`` (request bodies on stdout, a
JSON line of counts on stderr). ``facebook-business`` is an optional dependency: ``missing()``
says whether it is installed, and the harness reports the ratio as unavailable when it is not.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import phonenumbers

from leadrelay.bench.events import EVENT_NAMES, LEAD_EVENT_SOURCE, LEAD_FIELD

PACKAGE: Final = "facebook_business"
INSTALL: Final = (
    "install it with: pip install 'leadrelay[bench]' (or pip install facebook-business)"
)
INSTALL_HINT: Final = (
    f"the official SDK is not installed, so the transform ratio is unavailable; {INSTALL}"
)
BATCH: Final = 1000
OUTPUT_MARK: Final = b'"action_source": "system_generated"'
"""Once per server event in the output (``json.dumps`` puts a space after each colon)."""
MAX_AGE_S: Final = 7 * 86400


def command(events: Path) -> list[str]:
    """The command that runs this baseline on ``events`` (NDJSON) with this Python."""
    return [sys.executable, "-m", "leadrelay.bench.sdk_baseline", str(events)]


def missing() -> str | None:
    """None when the SDK can be imported, else a message saying how to install it."""
    return None if importlib.util.find_spec(PACKAGE) is not None else INSTALL_HINT


def _seconds(value: Any) -> int:
    if isinstance(value, str) and not value.isdigit():
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp())
    number = int(value)
    return number // 1000 if number >= 100_000_000_000 else number


def _phone(value: str, country: str | None) -> str:
    number = phonenumbers.parse(value, country)
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))[1:]


def _sdk(module: str, name: str) -> Any:
    # Imported by name so that leadrelay neither needs the SDK nor its (missing) type stubs.
    return getattr(importlib.import_module(f"{PACKAGE}.adobjects.serverside.{module}"), name)


def run(path: str, out: Any) -> dict[str, int]:
    """Turn the events of ``path`` into request bodies written to ``out``; return the counts."""
    ActionSource = _sdk("action_source", "ActionSource")
    CustomData = _sdk("custom_data", "CustomData")
    Event = _sdk("event", "Event")
    Gender = _sdk("gender", "Gender")
    UserData = _sdk("user_data", "UserData")
    genders = {"f": Gender.FEMALE, "female": Gender.FEMALE, "m": Gender.MALE, "male": Gender.MALE}
    counts = {"read": 0, "mapped": 0, "filtered": 0, "rejected": 0}
    now = time.time()
    batch: list[dict[str, Any]] = []
    with open(path, "rb") as lines:
        for line in lines:
            counts["read"] += 1
            event = orjson.loads(line)
            name = EVENT_NAMES.get(event.get("event_name"))
            if name is None:
                counts["filtered"] += 1
                continue
            try:
                lead_id = int(event[LEAD_FIELD])
                if not 10**14 <= lead_id < 10**17:
                    raise ValueError("lead_id must have 15 to 17 digits")
                context = event.get("context", {})
                event_time = _seconds(context["event_timestamp"])
                if event_time <= now - MAX_AGE_S or event_time > now + 60:
                    raise ValueError("event_time outside Meta's window")
                user = event.get("user", {})
                country = user.get("country")
                user_data = UserData(
                    emails=[user["email"]],
                    phones=[_phone(user["phone"], country)],
                    first_names=[user["firstname"]],
                    last_names=[user["lastname"]],
                    dates_of_birth=[user["birthdate"].replace("-", "")],
                    genders=[genders[user["gender"].lower()]],
                    cities=[user["city"]],
                    states=[user["state"]],
                    zip_codes=[user["zipcode"]],
                    country_codes=[country],
                    external_ids=[hashlib.sha256(user["id"].encode()).hexdigest()],
                    lead_id=lead_id,
                )
                custom_data = CustomData(
                    custom_properties={
                        "lead_event_source": LEAD_EVENT_SOURCE,
                        "event_source": "crm",
                    }
                )
                server_event = Event(
                    event_name=name,
                    event_time=event_time,
                    action_source=ActionSource.SYSTEM_GENERATED,
                    user_data=user_data,
                    custom_data=custom_data,
                    event_id=context.get("event_id") or f"{lead_id}:{name}:{event_time}",
                )
                batch.append(server_event.normalize())
            except (KeyError, ValueError, TypeError, phonenumbers.NumberParseException):
                counts["rejected"] += 1
                continue
            counts["mapped"] += 1
            if len(batch) == BATCH:
                out.write(json.dumps({"data": batch}) + "\n")
                batch = []
    if batch:
        out.write(json.dumps({"data": batch}) + "\n")
    out.flush()
    return counts


def main(argv: list[str] | None = None) -> int:
    """``python -m leadrelay.bench.sdk_baseline EVENTS``: bodies on stdout, counts on stderr."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m leadrelay.bench.sdk_baseline EVENTS.ndjson", file=sys.stderr)
        return 2
    problem = missing()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 3
    counts = run(args[0], sys.stdout)
    print(json.dumps(counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
