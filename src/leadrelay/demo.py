"""``leadrelay demo``: a realistic lead funnel through the real send path, against the sandbox.

The events are generated fresh (Meta accepts only the last 7 days), written to an NDJSON file
beside a config, and sent with exactly the code ``leadrelay send`` runs, so what the demo shows is
what users get. A few bad events show how problems are reported.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from leadrelay.config import load_config
from leadrelay.send import SendOptions, run_send

PIXEL_ID = "123456789012345"
TOKEN = "sandbox-token"
DELETED_LEAD = 999999999999001
STAGES = (
    ("lead_created", "Raw Lead", 1.0),
    ("lead_qualified", "Marketing Qualified Lead", 0.55),
    ("opportunity_created", "Sales Opportunity", 0.5),
    ("deal_won", "Converted", 0.4),
)
FIRST = ("Jane", "Paul", "Éloïse", "Marc", "Sofia", "Ahmed", "Léa", "John", "Mary", "Noah")
LAST = ("Doe", "Martin", "O'Brien", "Dubois", "Rossi", "Benali", "Smith", "Müller")
CITIES = (
    ("Paris", "75011", "FR", "+33 6 12 34 {:02d} {:02d}"),
    ("Lyon", "69002", "FR", "06 98 76 {:02d} {:02d}"),
    ("New York", "10001", "US", "(212) 555-{:02d}{:02d}"),
    ("London", "SW1A 1AA", "GB", "+44 20 7946 {:02d}{:02d}"),
)


def config_text(graph_url: str, data_dir: Path) -> str:
    """The demo config, as a user would write it."""
    return f'''pixel_id = "{PIXEL_ID}"
access_token = "{TOKEN}"
lead_id = "{{{{facebook_lead_id}}}}"
lead_event_source = "Demo CRM"
consent_category = "4"
graph_url = "{graph_url}"

[mapping]
lead_created = "Raw Lead"
lead_qualified = "Marketing Qualified Lead"
opportunity_created = "Sales Opportunity"
deal_won = "Converted"

[delivery]
batch_size = 100

[server]
data_dir = "{data_dir}"

[smart_mapping]
"custom_data.value" = "{{{{value}}}}"
"custom_data.currency" = "{{{{currency}}}}"
'''


def funnel_events(leads: int, now: float, rng: random.Random) -> list[dict[str, Any]]:
    """A funnel of stage changes for ``leads`` leads over the last few days, plus bad events."""
    events: list[dict[str, Any]] = []
    for n in range(leads):
        lead_id = 120000000000000 + n * 7919 + rng.randrange(1000)
        city, zipcode, country, phone = CITIES[n % len(CITIES)]
        user = {
            "id": f"crm-{10000 + n}",
            "email": f"{FIRST[n % len(FIRST)]}.{LAST[n % len(LAST)]}{n}@Example.com ".lower(),
            "phone": phone.format(n % 100, (n * 7) % 100),
            "firstname": FIRST[n % len(FIRST)],
            "lastname": LAST[n % len(LAST)],
            "city": city,
            "zipcode": zipcode,
            "country": country,
            "consent_categories": ["1", "3", "4"],
        }
        at = now - rng.uniform(3600, 5 * 86400)
        for i, (ours, _fb, keep) in enumerate(STAGES):
            if i and rng.random() > keep:
                break
            event: dict[str, Any] = {
                "event_name": ours,
                "facebook_lead_id": str(lead_id) if n % 2 else lead_id,
                "user": user,
                "context": {
                    "event_id": f"demo-{n}-{i}",
                    "event_timestamp": int(at * 1000)
                    if i % 2
                    else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                },
            }
            if ours == "deal_won":
                event.update(value=round(rng.uniform(200, 2000), 2), currency="EUR")
            events.append(event)
            at = min(now - 60, at + rng.uniform(600, 86400))
    ctx = {"event_timestamp": int((now - 3600) * 1000)}
    events += [
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": "12345",
            "user": {"consent_categories": ["4"]},
            "context": {**ctx, "event_id": "bad-short-id"},
        },
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": 123456789012399,
            "user": {"consent_categories": ["4"]},
            "context": {
                "event_id": "bad-too-old",
                "event_timestamp": int((now - 9 * 86400) * 1000),
            },
        },
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": DELETED_LEAD,
            "user": {"email": "gone@example.com", "consent_categories": ["4"]},
            "context": {**ctx, "event_id": "bad-deleted-lead"},
        },
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": 123456789012398,
            "user": {"consent_categories": ["1"]},
            "context": {**ctx, "event_id": "no-consent"},
        },
        {
            "event_name": "page_view",
            "user": {"consent_categories": ["4"]},
            "context": {**ctx, "event_id": "page-view"},
        },
    ]
    rng.shuffle(events)
    return events


def run_demo(*, err: Console, out: Console, leads: int = 200, workdir: Path | None = None) -> int:
    """Run the demo; 0 when it ran as designed (its bad events rejected), else send's code."""
    from leadrelay.sandbox import SandboxOptions, SandboxServer

    folder = workdir or Path(tempfile.mkdtemp(prefix="leadrelay-demo-"))
    options = SandboxOptions(
        access_tokens=frozenset({TOKEN}),
        pixel_ids=frozenset({PIXEL_ID}),
        deleted_lead_ids=frozenset({DELETED_LEAD}),
    )
    with SandboxServer(options) as sandbox:
        sandbox.state.script("http_503")  # one outage, to show a retry
        config = folder / "config.toml"
        config.write_text(config_text(sandbox.url, folder / "data"), encoding="utf-8")
        events = folder / "events.ndjson"
        now = time.time()
        events.write_bytes(
            b"".join(
                orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE)
                for e in funnel_events(leads, now, random.Random(7))
            )
        )
        report = folder / "report.ndjson"
        err.print(f"Sandbox Graph API at {sandbox.url}; config {config}; events {events}")
        settings = load_config(config, env={})
        code = run_send(settings, SendOptions(files=[str(events)], report=report), err=err)
        received = sandbox.state.received()
    if received:
        out.print("One of the events Meta received:")
        out.print_json(orjson.dumps(received[0]).decode())
    err.print(f"Per-event report: {report}")
    if code == 2:
        err.print("The bad events were rejected, as intended: `leadrelay send` exits 2 then.")
        code = 0
    err.print(f"Try: leadrelay preview / send --dry-run with --config {config} on {events}")
    return code
