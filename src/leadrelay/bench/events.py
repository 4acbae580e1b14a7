"""Realistic Commanders Act lead events for the benchmarks, generated fast and reproducibly.

Every event carries ten customer-information fields (email, phone, first and last name, birthdate,
gender, city, state, zip code, country) plus an external id. What belongs to a person is unique
(email, phone, external id) or repeats only after more than 100,000 events (first and last name,
city, zip code, birthdate), so that no cache can help; gender, state and country come from the
few values they have. Phone numbers are mostly E.164 (``+33612345678``, 70%), some spaced
(``+33 6 12 34 56 78``, 20%) and some national (``06 12 34 56 78``, 10%, read with
``user.country``).
Lead ids are 15 to 17 digits, as JSON integers or strings; timestamps are milliseconds (number or
string) or ISO-8601, all within the last three days. About 1% of the events are bad on purpose:
a lead id that is too short, an event older than Meta's 7-day window, an event name that is not
in ``[mapping]``. ``EventCounts`` says how many of each were written, so a run can be checked.
Event ids are ``bench-N`` (in order, as timestamp-based ids of web events come), or with
``random_ids`` UUIDs (as mobile apps and many CRMs send them): the store's index of event keys
takes each of the first next to the one before it, each of the second anywhere.
"""

from __future__ import annotations

import random
import time
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

PIXEL_ID: Final = "123456789012345"
TOKEN: Final = "sandbox-token"
LEAD_EVENT_SOURCE: Final = "Bench CRM"
LEAD_FIELD: Final = "facebook_lead_id"
EVENT_NAMES: Final[dict[str, str]] = {
    "lead_created": "Raw Lead",
    "lead_qualified": "Marketing Qualified Lead",
    "opportunity_created": "Sales Opportunity",
    "deal_won": "Converted",
}
BAD_EVERY: Final = 100  # one event in a hundred is bad, in turn: lead id, too old, unmapped

# Names and towns are made of syllables (accents included, as in real data), from the event's
# number through a permutation: unique for 16**5 events, and not in any order a cache could use.
_SYLLABLES: Final = (
    "ba", "ré", "lo", "mi", "ka", "nu", "vé", "so", "ti", "da", "fe", "gï", "ro", "lu", "zé", "pa",
)  # fmt: skip
_WORDS: Final = len(_SYLLABLES) ** 5
_DAYS: Final = 55 * 365  # birthdates from 1950 to 2004


def _word(n: int, salt: int, syllables: tuple[str, ...] = _SYLLABLES) -> str:
    """A made-up name, unique per ``n`` below ``_WORDS`` (for a given ``salt``)."""
    k = (n * 746_483 + salt) % _WORDS  # 746,483 is prime to 16**5: a permutation
    parts = [syllables[k % 16]]  # the digits of k in base 16, two at least: unique
    k //= 16
    while k or len(parts) < 2:
        parts.append(syllables[k % 16])
        k //= 16
    return "".join(parts).capitalize()


_PLAIN: Final = tuple(
    "".join(c for c in unicodedata.normalize("NFKD", s) if c.isascii()) for s in _SYLLABLES
)  # the same syllables without accents, for email addresses
_DOMAINS: Final = ("example.com", "Example.org", "mail.example.net", "crm.example.fr")
_GENDERS: Final = ("female", "male", "F", "M", "f", "m")


@dataclass(frozen=True, slots=True)
class _Country:
    code: str
    calling: str  # country calling code
    mobiles: tuple[str, ...]  # national prefixes of mobile ranges phonenumbers knows as valid
    digits: int  # subscriber digits after such a prefix
    groups: tuple[int, ...]  # how people group the national number (digits per group)
    trunk: str  # the national trunk prefix ("0"), written before national numbers
    states: tuple[str, ...]  # as people write them: codes and names
    zip_format: str  # the country's postal code, filled from a number


_COUNTRIES: Final = (
    _Country(
        "FR", "33", ("61", "62", "64", "65", "66", "67", "68", "75", "76", "77", "78"), 7,
        (1, 2, 2, 2, 2), "0",
        ("Île-de-France", "Auvergne-Rhône-Alpes", "Pays de la Loire", "Bretagne"), "{:05d}",
    ),
    _Country(
        "US", "1", ("415", "212", "512", "617"), 7, (3, 3, 4), "",
        ("CA", "New York", "TX", "Massachusetts", "wa"), "{:05d}",
    ),
    _Country(
        "GB", "44", ("74", "75", "78"), 8, (4, 6), "0",
        ("England", "Scotland", "Wales"), "SW{:d} {:d}AA",
    ),
    _Country(
        "DE", "49", ("151", "152", "160", "170", "171", "176", "177", "179"), 8, (3, 8), "0",
        ("Berlin", "Bayern", "Nordrhein-Westfalen"), "{:05d}",
    ),
)  # fmt: skip
_COUNTRY_WEIGHTS: Final = (40, 30, 15, 15)


@dataclass(frozen=True, slots=True)
class EventCounts:
    """How many events of each kind were generated: what a correct run must account for."""

    total: int = 0
    sendable: int = 0
    invalid_lead_id: int = 0
    too_old: int = 0
    unmapped: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by name, for the JSON results."""
        return {
            "total": self.total,
            "sendable": self.sendable,
            "invalid_lead_id": self.invalid_lead_id,
            "too_old": self.too_old,
            "unmapped": self.unmapped,
        }


def _subscriber(n: int, digits: int) -> str:
    # A multiplicative permutation keeps numbers unique while looking random.
    modulus = 10**digits
    number = (n * 7_919_317 + 1_234_567) % modulus
    if digits == 7:  # US exchange codes start with 2-9
        number = 2_000_000 + number % 8_000_000
    return str(number).zfill(digits)


def _grouped(national: str, groups: tuple[int, ...]) -> str:
    parts, at = [], 0
    for size in groups:
        parts.append(national[at : at + size])
        at += size
    return " ".join(parts)


def _phone(country: _Country, n: int, style: int) -> str:
    prefix = country.mobiles[n % len(country.mobiles)]
    national = prefix + _subscriber(n // len(country.mobiles), country.digits)
    if style < 70:  # E.164, as CRMs usually store it
        return f"+{country.calling}{national}"
    if style < 90:  # international, with the spaces people type
        return f"+{country.calling} {_grouped(national, country.groups)}"
    if country.code == "US":
        return f"({national[:3]}) {national[3:6]}-{national[6:]}"
    return country.trunk + _grouped(national, country.groups)  # national: needs user.country


def _birthdate(n: int) -> str:
    day = (n * 7_919) % _DAYS
    return time.strftime("%Y-%m-%d", time.gmtime(-631_152_000 + day * 86_400))  # from 1950-01-01


def _zip(country: _Country, n: int) -> str:
    k = (n * 7_919 + 13) % 100_000  # 100,000 codes per country, in no useful order
    if country.code == "GB":
        return country.zip_format.format(1 + k % 99, k // 99 % 10)
    return country.zip_format.format(k)


def _timestamp(seconds: float, style: int) -> int | str:
    if style < 40:
        return int(seconds * 1000)
    if style < 70:
        return str(int(seconds * 1000))
    if style < 85:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(seconds))


def generate_events(
    count: int, *, now: float, seed: int = 1, random_ids: bool = False
) -> Iterator[dict[str, Any]]:
    """``count`` events as dicts; the same ``seed`` and ``now`` give the same events (and the
    same but for their event ids with ``random_ids``)."""
    rng = random.Random(seed)
    ids = random.Random(seed + 1)  # its own: the other fields stay as without random ids
    names = tuple(EVENT_NAMES)
    for n in range(count):
        country = rng.choices(_COUNTRIES, _COUNTRY_WEIGHTS)[0]
        state = country.states[n % len(country.states)]
        first, last, city = _word(n, 1), _word(n, 2), _word(n, 4)
        local = f"{_word(n, 1, _PLAIN)}.{_word(n, 2, _PLAIN)}"
        if n % 5 == 0:  # double-barrelled
            last += "-" + _word(n, 3)
        lead = 100_000_000_000_000 + (n * 104_729) % 99_900_000_000_000_000
        at = now - rng.uniform(60, 3 * 86400)
        event: dict[str, Any] = {
            "event_name": names[n % len(names)],
            LEAD_FIELD: lead if n % 2 else str(lead),
            "user": {
                "id": f"crm-{n:08d}",
                "email": f"{local}{n}@{_DOMAINS[n % len(_DOMAINS)]}",
                "phone": _phone(country, n, rng.randrange(100)),
                "firstname": first,
                "lastname": last,
                "birthdate": _birthdate(n),
                "gender": _GENDERS[n % len(_GENDERS)],
                "city": city,
                "state": state,
                "zipcode": _zip(country, n),
                "country": country.code,
            },
            "context": {
                "event_id": str(uuid.UUID(int=ids.getrandbits(128), version=4))
                if random_ids
                else f"bench-{n}",
                "event_timestamp": _timestamp(at, rng.randrange(100)),
            },
            "crm_stage": f"stage-{n % 7}",
        }
        if n % BAD_EVERY == BAD_EVERY - 1:
            kind = (n // BAD_EVERY) % 3
            if kind == 0:
                event[LEAD_FIELD] = str(lead)[:6]
            elif kind == 1:
                event["context"]["event_timestamp"] = int((now - 9 * 86400) * 1000)
            else:
                event["event_name"] = "page_view"
        yield event


def expected_counts(count: int) -> EventCounts:
    """What ``generate_events(count)`` holds, by kind (the bad ones are at fixed positions)."""
    bad = count // BAD_EVERY
    kinds = [0, 0, 0]
    for k in range(bad):
        kinds[k % 3] += 1
    return EventCounts(count, count - bad, *kinds)


def write_events(
    path: Path, count: int, *, now: float, seed: int = 1, random_ids: bool = False
) -> EventCounts:
    """Write ``count`` generated events to ``path`` as NDJSON; return what was written."""
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with path.open("wb", buffering=1 << 20) as out:
        lines: list[bytes] = []
        for event in generate_events(count, now=now, seed=seed, random_ids=random_ids):
            lines.append(dumps(event, option=newline))
            if len(lines) == 4096:
                out.write(b"".join(lines))
                lines.clear()
        out.write(b"".join(lines))
    return expected_counts(count)


def config_text(graph_url: str = "http://127.0.0.1:9", *, batch_size: int = 1000) -> str:
    """The leadrelay config for the generated events: the prebuilt mapping does the rest."""
    rows = "\n".join(f'{ours} = "{theirs}"' for ours, theirs in EVENT_NAMES.items())
    return f'''pixel_id = "{PIXEL_ID}"
access_token = "{TOKEN}"
lead_id = "{{{{{LEAD_FIELD}}}}}"
lead_event_source = "{LEAD_EVENT_SOURCE}"
graph_url = "{graph_url}"

[mapping]
{rows}

[delivery]
batch_size = {batch_size}
'''
