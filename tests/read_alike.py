"""What this install makes of odd values and events: every customer-information field's
normalized value (or its error) for 20,000 generated values in eight regions, and the payload of
3,000 generated events. ``test_compiled`` compares a compiled build's with pure Python's (this
file run by the other interpreter, printing JSON)."""

from __future__ import annotations

import random
import sys
from typing import Any

import orjson

# Letters and marks where lowercasing, stripping and digits differ between implementations:
# final sigma, dotted I, sharp s, ligatures, titlecase, wide and Arabic-Indic digits, spaces
# that are not ASCII, combining accents, other scripts, emoji.
_POOLS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    " \t\n.-_@+()/',\"#&!?:;",
    "éèêëàâäîïôöùûüçñÉÈÊÀÂÎÔÛÇÑßøØåÅæÆœŒ",
    "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρσςτυφχψωΐΰ",
    "İıŉǅǈǋﬁﬂﬀẞ",
    "\u00a0\u2003\u200b\u2028\u3000\ufeff",
    "０１２３４５６７８９٠١٢٣٤٥٦٧٨٩",
    "\u0301\u0308\u0327",
    "АБВГДЕЖЗабвгдежз中文日本語한국어😀👍",
)
_SHAPES = ("{w}@{w}.{w}", "+{d} {d}", "0{d}", "{w} {w}", "{d}-{d}-{d}", "{d}/{d}/{d}", "{w}", "{d}")
_REAL = (
    "+33 6 12 34 56 78",
    "06 12 34 56 78",
    "(650) 555-1212",
    "+44 7911 123456",
    "04/03/1990",
    "19900304",
    "Femme",
    "Île-de-France",
    "California",
    "São Paulo",
    "SW1A 1AA",
    "94103-1234",
    "ΠΑΠΑΔΟΠΟΥΛΟΣ",
    "İstanbul",
    "Straße",
)
REGIONS = (None, "FR", "US", "GB", "DE", "GR", "TR", "BR")


def values(count: int = 20_000, seed: int = 31) -> list[str]:
    """Odd values, the same for the same arguments."""
    rng = random.Random(seed)

    def word(n: int) -> str:
        return "".join(rng.choice(rng.choice(_POOLS)) for _ in range(n))

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    out = []
    for n in range(count):
        if n % 5 == 4:
            out.append(rng.choice(_REAL) + rng.choice(("", " ", word(1))))
            continue
        shape = rng.choice(_SHAPES)
        value = shape.replace("{w}", word(rng.randint(1, 10)), 1).replace("{w}", word(3))
        out.append(value.replace("{d}", digits(rng.randint(1, 6))))
    return out


def read_alike() -> dict[str, Any]:
    """This install's readings: ``build``, ``fields`` (field -> a reading per value) and
    ``events`` (each event's payload, or its outcome's class and reason)."""
    from leadrelay.bench.events import config_text, generate_events
    from leadrelay.compiled import build_name
    from leadrelay.config import parse_config
    from leadrelay.mapping.engine import Mapper
    from leadrelay.meta.normalize import HASHED_FIELDS, normalizer

    texts = values()
    fields: dict[str, list[str]] = {}
    for field in sorted(HASHED_FIELDS):
        normalize = normalizer(field, default_country="FR")
        readings = []
        for n, text in enumerate(texts):
            try:
                readings.append(normalize(text, REGIONS[n % len(REGIONS)]))
            except Exception as exc:  # its kind and words are what is compared
                readings.append(f"{type(exc).__name__}: {exc}")
        fields[field] = readings
    import tomllib

    raw = tomllib.loads(config_text("http://127.0.0.1:9"))
    mapper = Mapper(parse_config(raw, source="read_alike", env={}), clock=lambda: 1767800000.0)
    events, bodies = [], []
    for event in generate_events(3_000, now=1767800000.0, seed=7):
        outcome = mapper.map_parts(event)
        if isinstance(outcome, tuple):
            events.append(orjson.dumps(outcome[5]).decode())
        else:
            events.append(f"{type(outcome).__name__}: {getattr(outcome, 'reason', '')}")
        # as the readers encode it (compiled, written as the fields are read: usual.usual_body)
        found = mapper.map_body(event)
        if isinstance(found, tuple):
            body = found[5]
            bodies.append((body if type(body) is bytes else orjson.dumps(body)).decode())
    return {"build": build_name(), "fields": fields, "events": events, "bodies": bodies}


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(read_alike()).decode())
