"""The dashboard of ``leadrelay serve``.

End to end in a real headless Chromium (driven by Playwright): a real ``serve`` process, a real
SQLite store, the sandbox as Meta, a known set of events (delivered, rejected by us, rejected by
Meta, filtered). The browser signs in, reads the figures on each page, opens an error, uses the
playground, and saves a screenshot of each page to ``tests/artifacts/``.

Plus, in-process (no browser): sign-in and session rules, CSRF, the pause banner, redaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from leadrelay.config import Settings, parse_config
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Incoming
from leadrelay.mapping.engine import Mapper
from leadrelay.meta.errors import ErrorKind, GraphError
from leadrelay.sandbox import SandboxOptions, SandboxServer
from leadrelay.scrub import scrub_text
from leadrelay.service.app import create_app
from leadrelay.service.dashboard import dashboard_routes, funnel_page
from leadrelay.service.dashboard.events_page import PAGE
from leadrelay.service.dashboard.playground import parse_rows
from leadrelay.service.dashboard.redact import redact_original, redact_payload
from leadrelay.service.dashboard.reports import Reports
from leadrelay.service.metrics import Metrics
from service_process import INTAKE_TOKEN, PIXEL_ID, ServiceProcess, wait_until

DASHBOARD_TOKEN = "dashboard-token-0123456789abcdef"
DELETED_LEAD = 120000000099999
SECRET_EMAIL = "secret.person@example.com"
SECRET_PHONE = "+33 6 98 76 54 32"
SECRET_IP = "203.0.113.7"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAPPING = {
    "generate_lead": "Lead",
    "lead_qualified": "Marketing Qualified Lead",
    "deal_won": "Purchase",
}


def lead(n: int) -> int:
    return 120000000000100 + n


def crm_event(name: str, lead_id: Any, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_name": name,
        "facebook_lead_id": str(lead_id),
        "context": {"event_id": key, "event_timestamp": int(time.time() * 1000)},
        "user": {"email": f"{key}@example.com", "consent_categories": ["1", "3"]},
        **extra,
    }


def known_events() -> list[dict[str, Any]]:
    """7 delivered (4 leads, 2 qualified, 1 won), 2 rejected by us for their lead id, 1 rejected
    by Meta (a deleted lead), 2 filtered (not in [mapping])."""
    refused = crm_event("lead_qualified", DELETED_LEAD, "refused-1")
    refused["user"] = {"email": SECRET_EMAIL, "phone": SECRET_PHONE, "consent_categories": ["3"]}
    refused["context"]["device"] = {"ip": SECRET_IP}
    refused["note"] = f"call back on {SECRET_PHONE} or mail {SECRET_EMAIL}"
    return [
        *(crm_event("generate_lead", lead(n), f"lead-{n}") for n in range(1, 5)),
        crm_event("lead_qualified", lead(1), "mql-1"),
        crm_event("lead_qualified", lead(2), "mql-2"),
        crm_event("deal_won", lead(1), "won-1"),
        crm_event("lead_qualified", "12345", "bad-1"),
        crm_event("lead_qualified", "crm-778", "bad-2"),
        refused,
        crm_event("page_view", lead(3), "view-1"),
        crm_event("page_view", lead(4), "view-2"),
    ]


def write_config(path: Path, graph_url: str, data_dir: Path) -> Path:
    mapping = "".join(f'{k} = "{v}"\n' for k, v in MAPPING.items())
    path.write_text(
        f'pixel_id = "{PIXEL_ID}"\naccess_token = "sandbox-token"\n'
        'lead_id = "{{facebook_lead_id}}"\nlead_event_source = "Test CRM"\n'
        f'graph_url = "{graph_url}"\n\n[mapping]\n{mapping}\n'
        f'[server]\nintake_token = "{INTAKE_TOKEN}"\ndashboard_token = "{DASHBOARD_TOKEN}"\n'
        f'data_dir = "{data_dir}"\nport = 0\n\n[store]\noriginals = "keep"\n',
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------------------- the real service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("dashboard")
    options = SandboxOptions(deleted_lead_ids=frozenset({DELETED_LEAD}))
    with SandboxServer(options) as sandbox:
        config = write_config(root / "leadrelay.toml", sandbox.url, root / "data")
        proc = ServiceProcess(config).start()
        try:
            answer = proc.post(known_events())
            assert answer.status_code == 202, answer.text
            db = root / "data" / "leadrelay.db"

            def settled() -> bool:
                with SQLiteStore(db) as store:
                    counts = store.counts()
                return counts.queued + counts.in_flight == 0 and counts.by_state["delivered"] == 7

            wait_until(settled, 20.0, "the known events to be delivered")
            yield proc
        finally:
            proc.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # In CI a missing browser is a failure (.ci/run installs both), never a silent skip.
    if os.environ.get("CI"):
        from playwright import sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("LEADRELAY_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser: Any, service: ServiceProcess) -> Iterator[Any]:
    """A signed-in tab at 1280x800 (signs in through the login form)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    tab.goto(f"{service.url}/dashboard")
    assert tab.get_by_role("heading", name="Sign in to the dashboard").is_visible()
    snap(tab, "login")
    tab.get_by_label("Token").fill(DASHBOARD_TOKEN)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(f"{service.url}/dashboard")
    yield tab
    context.close()


def snap(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def no_secrets(html: str) -> None:
    for secret in (DASHBOARD_TOKEN, INTAKE_TOKEN, SECRET_EMAIL, SECRET_IP, "98 76 54 32"):
        assert secret not in html


def row_cells(tab: Any, caption: str, first: str) -> list[str]:
    """The text of the cells of the row headed ``first`` in the table captioned ``caption``."""
    table = tab.locator("table", has=tab.locator("caption", has_text=caption))
    row = table.locator("tbody tr", has=tab.locator("th", has_text=re.compile(f"^{first}$")))
    assert row.count() == 1, f"no single row {first!r} in {caption!r}"
    return [c.strip() for c in row.locator("th, td").all_inner_texts()]


def test_event_delivery_shows_the_figures_health_and_errors(page: Any) -> None:
    assert page.get_by_role("heading", name="Event Delivery", level=1).is_visible()
    assert "rainy: 70.0% delivered (7 of 10)" in page.locator("#health").inner_text()
    stats = {
        name: page.locator(f'dd[data-stat="{name}"]').inner_text()
        for name in ("delivered", "filtered", "rejected", "queue-depth")
    }
    assert stats == {"delivered": "7", "filtered": "2", "rejected": "3", "queue-depth": "0"}
    errors = "Grouped by reason and Meta code"
    table = page.locator("table", has=page.locator("caption", has_text=errors))
    texts = [[c.strip() for c in r] for r in _rows(table)]
    by_reason = {cells[1]: cells for cells in texts}
    assert by_reason["invalid_lead_id"][0] == "rejected"
    assert by_reason["invalid_lead_id"][2] == "-"
    assert by_reason["invalid_lead_id"][3].startswith("2")
    assert "Lead ID" in by_reason["invalid_lead_id"][6]  # what to fix
    assert by_reason["meta_100_2804036"][2] == "100/2804036"
    assert by_reason["meta_100_2804036"][3].startswith("1")
    assert "lead id" in by_reason["meta_100_2804036"][6]
    assert by_reason["unmapped"][0] == "filtered"
    assert by_reason["unmapped"][3].startswith("2")
    # The chart says what it shows in words, for screen readers.
    assert page.locator("svg.chart desc").first.text_content() == (
        "delivered: 7; filtered: 2; rejected: 3"
    )
    no_secrets(page.content())
    snap(page, "delivery")


def _rows(table: Any) -> list[list[str]]:
    rows = table.locator("tbody tr")
    return [rows.nth(i).locator("th, td").all_inner_texts() for i in range(rows.count())]


def test_an_error_row_opens_the_event_with_metas_answer_and_no_pii(
    page: Any, service: ServiceProcess
) -> None:
    page.goto(f"{service.url}/dashboard")
    page.get_by_role("link", name="1 event(s): list them").click()
    assert page.get_by_role("heading", name="Events", level=1).is_visible()
    listed = _rows(page.locator("table", has=page.locator("caption", has_text="Stored events")))
    assert [[c.strip() for c in r][2:8] for r in listed] == [
        [
            "lead_qualified",
            "Marketing Qualified Lead",
            str(DELETED_LEAD),
            "rejected",
            "meta_100_2804036",
            "100/2804036",
        ]
    ]
    snap(page, "events")
    page.goto(f"{service.url}/dashboard")
    page.get_by_role("link", name="meta_100_2804036", exact=True).click()
    assert page.get_by_role("heading", name=re.compile(r"^Event #\d+$")).is_visible()
    assert "Rejected by Meta (code 100/2804036)" in page.locator("main").inner_text()
    answer = {
        k: v
        for k, v, *_ in (
            [c.strip() for c in r]
            for r in _rows(
                page.locator(
                    "table", has=page.locator("caption", has_text="Code and message from Meta")
                )
            )
        )
    }
    assert answer["Meta code"] == "100/2804036"
    assert answer["Code"] == "100"
    assert answer["Subcode"] == "2804036"
    assert answer["fbtrace_id"] not in ("", "-")
    assert f"unknown lead ID ({DELETED_LEAD})" in answer["Message"]
    html = page.content()
    no_secrets(html)
    request = page.get_by_label("Request payload").inner_text()
    sent = orjson.loads(request)["data"][0]
    assert sent["user_data"]["lead_id"] == DELETED_LEAD
    assert sent["user_data"]["em"] == [hashlib.sha256(SECRET_EMAIL.encode()).hexdigest()]
    assert sent["user_data"]["client_ip_address"] == "[redacted]"
    original = orjson.loads(page.get_by_label("Original event, redacted").inner_text())
    assert original["user"] == {
        "email": "[redacted]",
        "phone": "[redacted]",
        "consent_categories": ["3"],
    }
    assert original["facebook_lead_id"] == str(DELETED_LEAD)
    assert original["note"] == "call back on [redacted] or mail [redacted]"
    assert "this dataset's Lead Ads" in page.locator("#fix-h + p").inner_text()
    snap(page, "event")


def test_funnel_shows_stages_conversions_and_checks(page: Any, service: ServiceProcess) -> None:
    page.goto(f"{service.url}/dashboard")
    page.get_by_role("link", name="Funnel").click()
    assert page.get_by_role("heading", name="Funnel", level=1).is_visible()
    stages = "Leads per stage"
    assert row_cells(page, stages, "Lead")[1:4] == ["4", "4", "-"]
    assert row_cells(page, stages, "Marketing Qualified Lead")[1:4] == ["2", "2", "50.0%"]
    assert row_cells(page, stages, "Purchase")[1:4] == ["1", "1", "50.0%"]
    checks = "Meta's criteria"
    verdict = {name: row_cells(page, checks, name)[3] for name in ("Funnel stages", "Lead ids")}
    assert verdict == {"Funnel stages": "pass", "Lead ids": "fail"}
    volume = row_cells(page, checks, "Lead volume")
    assert volume[3] == "not enough data yet"
    assert "days of data" in volume[4]  # and why
    coverage = row_cells(page, checks, "Lead coverage")
    assert coverage[2].startswith("80.0% (4 of 5)")
    assert coverage[3] == "pass"
    assert "3 of 10" in row_cells(page, checks, "Lead ids")[2]
    no_secrets(page.content())
    snap(page, "funnel")


def test_playground_shows_the_payload_and_where_each_field_comes_from(
    page: Any, service: ServiceProcess
) -> None:
    page.goto(f"{service.url}/dashboard/playground")
    event = crm_event("lead_qualified", lead(55), "play-1", value=42)
    page.get_by_label("Commanders Act event (JSON)").fill(orjson.dumps(event).decode())
    page.get_by_label("Smart-mapping rows to try (optional)").fill("custom_data.value = {{value}}")
    page.get_by_role("button", name="Show the payload").click()
    assert "Sendable as Marketing Qualified Lead" in page.locator("main").inner_text()
    sources = "Where each field comes from"
    assert row_cells(page, sources, "user_data.lead_id")[1:3] == ["setting", "{{facebook_lead_id}}"]
    em = row_cells(page, sources, "user_data.em")
    assert em[1:4] == [
        "prebuilt",
        "=COALESCE(user.email, user.email_sha256)",
        '"play-1@example.com"',
    ]
    assert 'SHA-256 of "play-1@example.com"' in em[4]  # what the digest is of
    assert row_cells(page, sources, "custom_data.value")[1:5] == [
        "smart_mapping",
        "{{value}}",
        "42",
        "42",
    ]
    body = orjson.loads(page.get_by_label("Request body").inner_text())
    sent = body["data"][0]
    assert sent["event_name"] == "Marketing Qualified Lead"
    assert sent["user_data"]["lead_id"] == lead(55)
    assert sent["user_data"]["em"] == [hashlib.sha256(b"play-1@example.com").hexdigest()]
    assert sent["custom_data"]["value"] == 42
    snap(page, "playground")
    # Nothing was stored: the playground never saves.
    page.goto(f"{service.url}/dashboard/events")
    assert "play-1" not in page.locator("main").inner_text()


def test_playground_shows_a_bad_expression_with_its_position(
    page: Any, service: ServiceProcess
) -> None:
    page.goto(f"{service.url}/dashboard/playground")
    page.get_by_label("Smart-mapping rows to try (optional)").fill(
        "custom_data.value = =NUMBR(value)"
    )
    page.get_by_role("button", name="Show the payload").click()
    problem = page.locator(".problem").inner_text()
    assert "Line 1, custom_data.value" in problem
    assert "unknown function NUMBR; did you mean NUMBER? (at position 1)" in problem
    assert page.locator(".problem mark").inner_text() == "N"
    assert page.get_by_label("Smart-mapping rows to try (optional)").input_value() == (
        "custom_data.value = =NUMBR(value)"
    )
    snap(page, "playground-error")


def test_a_token_link_signs_in_without_keeping_the_token_and_sign_out_ends_it(
    browser: Any, service: ServiceProcess
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    try:
        tab.goto(f"{service.url}/dashboard/funnel?token={DASHBOARD_TOKEN}")
        assert tab.url == f"{service.url}/dashboard/funnel"  # not in the history
        assert tab.get_by_role("heading", name="Funnel", level=1).is_visible()
        tab.keyboard.press("Tab")
        assert tab.evaluate("document.activeElement.textContent") == "Skip to content"
        tab.get_by_role("button", name="Sign out").click()
        tab.wait_for_url(f"{service.url}/dashboard/login")
        answer = tab.goto(f"{service.url}/dashboard/funnel")
        assert answer is not None and answer.status == 401
        assert tab.get_by_role("heading", name="Sign in to the dashboard").is_visible()
    finally:
        context.close()


# --------------------------------------------------------------------- in-process, no browser


def settings_with(**server: Any) -> Settings:
    raw = {
        "pixel_id": PIXEL_ID,
        "access_token": "EAAB-secret-token-do-not-print",
        "lead_id": "{{facebook_lead_id}}",
        "lead_event_source": "CRM",
        "mapping": MAPPING,
        "server": {"intake_token": INTAKE_TOKEN, "dashboard_token": DASHBOARD_TOKEN, **server},
    }
    return parse_config(raw, source="test", env={})


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class PausedWorker:
    paused: GraphError | None = GraphError(
        ErrorKind.AUTH, 400, 190, 463, "Error validating access token", None, "AbC123", None
    )


def call(
    app: Any,
    method: str,
    path: str,
    *,
    session: str | None = None,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> httpx.Response:
    """One request to the in-process app, with the session cookie ``session`` if given."""
    sent = dict(headers or {})
    if session is not None:
        sent["Cookie"] = f"leadrelay_dashboard={session}"

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, path, headers=sent, **kw)

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> Iterator[Any]:
    settings = settings_with()
    mapper = Mapper(settings)
    with SQLiteStore(":memory:") as store:
        event = crm_event("lead_qualified", lead(1), "k-1")
        store.add([Incoming(mapper.map(event), orjson.dumps(event), clock())])
        yield create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=mapper, clock=clock
        )


PAGES = ["/dashboard", "/dashboard/funnel", "/dashboard/events", "/dashboard/events/1"]


@pytest.mark.parametrize("path", [*PAGES, "/dashboard/playground"])
def test_pages_need_a_token(app: Any, path: str) -> None:
    refused = call(app, "GET", path)
    assert refused.status_code == 401
    assert "Sign in to the dashboard" in refused.text
    for token in (DASHBOARD_TOKEN, INTAKE_TOKEN):
        shown = call(app, "GET", path, headers={"Authorization": f"Bearer {token}"})
        assert shown.status_code == 200, path
        assert DASHBOARD_TOKEN not in shown.text and INTAKE_TOKEN not in shown.text
        assert shown.headers["cache-control"] == "no-store"
        assert "script-src" not in shown.headers["content-security-policy"]  # no script at all
    wrong = call(app, "GET", path, headers={"Authorization": "Bearer not-the-token-0123456789"})
    assert wrong.status_code == 401


def test_notes_of_customer_information_left_out_do_not_show_the_value(clock: Clock) -> None:
    """A phone number without a country, an email that is no address: the note says why it was
    left out without quoting it, whatever shape it has (dashes only, words)."""
    settings = settings_with()
    mapper = Mapper(settings)
    event = crm_event("lead_qualified", lead(1), "k-2")
    event["user"] = {"phone": "06-12-34-56-78", "email": "jane at example dot com"}
    with SQLiteStore(":memory:") as store:
        (id_,) = store.add([Incoming(mapper.map(event), orjson.dumps(event), clock())])
        app = create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=mapper, clock=clock
        )
        bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
        page = call(app, "GET", f"/dashboard/events/{id_}", headers=bearer).text
    assert "Fields left out of the payload" in page and "user_data.ph" in page
    for value in ("06-12-34-56-78", "jane at example dot com", "0612345678"):
        assert value not in page


def test_an_unknown_event_is_a_404_page(app: Any) -> None:
    bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    answer = call(app, "GET", "/dashboard/events/999", headers=bearer)
    assert answer.status_code == 404
    assert "No event #999 in the store" in answer.text


def test_a_token_link_signs_in_once_and_leaves_no_token_in_the_url(app: Any, clock: Clock) -> None:
    answer = call(app, "GET", f"/dashboard/funnel?token={DASHBOARD_TOKEN}")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/funnel"
    cookie = answer.headers["set-cookie"]
    assert DASHBOARD_TOKEN not in cookie
    for flag in ("HttpOnly", "SameSite=strict", "Path=/dashboard"):
        assert flag in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert call(app, "GET", "/dashboard", session=value).status_code == 200
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert call(app, "GET", "/dashboard", session=tampered).status_code == 401
    clock.now += 13 * 3600  # sessions last 12 hours
    assert call(app, "GET", "/dashboard", session=value).status_code == 401


def test_a_wrong_token_link_or_login_is_refused_without_echoing_it(app: Any) -> None:
    wrong = "wrong-token-0123456789abcdef"
    answer = call(app, "GET", f"/dashboard?token={wrong}")
    assert answer.status_code == 401
    assert wrong not in answer.text and "set-cookie" not in answer.headers
    form = {"token": wrong, "next": "/dashboard"}
    answer = call(app, "POST", "/dashboard/login", data=form)
    assert answer.status_code == 401
    assert "That token is not right." in answer.text and wrong not in answer.text


def test_changing_the_token_ends_the_sessions(app: Any) -> None:
    form = {"token": DASHBOARD_TOKEN, "next": "https://evil.example/"}
    answer = call(app, "POST", "/dashboard/login", data=form)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard"  # never off-site
    session = answer.cookies["leadrelay_dashboard"]
    assert call(app, "GET", "/dashboard", session=session).status_code == 200
    app.state.settings = settings_with(dashboard_token="a-brand-new-token-0123456789")
    assert call(app, "GET", "/dashboard", session=session).status_code == 401


def test_a_form_posted_from_another_site_is_refused(app: Any) -> None:
    login = call(app, "POST", "/dashboard/login", data={"token": DASHBOARD_TOKEN})
    session = login.cookies["leadrelay_dashboard"]
    form = {"event": '{"event_name": "lead_qualified"}', "rows": ""}
    for headers, status in (
        ({"Origin": "https://evil.example"}, 403),
        ({"Referer": "https://evil.example/page"}, 403),
        ({}, 403),  # a browser always says where a form comes from
        ({"Origin": "http://testserver"}, 200),
    ):
        answer = call(
            app, "POST", "/dashboard/playground", data=form, session=session, headers=headers
        )
        assert answer.status_code == status, headers
    evil = call(app, "POST", "/dashboard/login", data=form, headers={"Origin": "http://evil.x"})
    assert evil.status_code == 403


def test_a_paused_delivery_is_shown_with_its_reason(clock: Clock) -> None:
    from starlette.applications import Starlette

    with SQLiteStore(":memory:") as store:
        app = Starlette(routes=dashboard_routes(store, PausedWorker(), clock=clock))
        app.state.settings = settings_with()
        app.state.mapper = Mapper(app.state.settings)
        answer = call(app, "GET", "/dashboard", headers={"Authorization": f"Bearer {INTAKE_TOKEN}"})
    assert answer.status_code == 200
    text = re.sub(r"<[^>]+>", " ", answer.text)
    assert "Delivery is paused" in text
    assert "Meta refused the requests (190/463)" in text and "access_token" in text
    assert "no data: nothing delivered or failed yet" in text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("mail jane.doe+crm@example.co.uk now", "mail [redacted] now"),
        ("call +33 6 12 34 56 78", "call [redacted]"),
        ("call 06 12 34 56 78 or (555) 123-4567", "call [redacted] or [redacted]"),
        ("lead_id 120000000000101 has 15 digits", "lead_id 120000000000101 has 15 digits"),
        ("event_time 1767800000 passed", "event_time 1767800000 passed"),
        ("on 2026-01-07 at 10:00", "on 2026-01-07 at 10:00"),
        ("price 12.50", "price 12.50"),
        ("unknown lead ID (120000000099999).", "unknown lead ID (120000000099999)."),
        # Dashes only, and other ways people write numbers and addresses:
        ("lead_id '06-12-34-56-78' is not", "lead_id '[redacted]' is not"),
        ("call 1-800-555-0199 or 0049-30-1234567", "call [redacted] or [redacted]"),
        ("lead_id 'иван@пример.рф' is not", "lead_id '[redacted]' is not"),
        ("from o'brien@example.com.", "from [redacted]."),
        ("event_timestamp '30-11-2026 10:00' is not", "event_timestamp '30-11-2026 10:00' is not"),
        ("born 07.01.1990", "born 07.01.1990"),
    ],
)
def test_messages_lose_emails_and_phone_numbers_but_keep_ids(text: str, shown: str) -> None:
    assert scrub_text(text) == shown


def test_originals_and_payloads_show_customer_information_only_as_hashes() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    original = {
        "event_name": "lead_qualified",
        "facebook_lead_id": "120000000000101",
        "user": {"email": "a@b.fr", "id": "crm-1", "consent_categories": ["3"]},
        "context": {"device": {"ip": "10.1.2.3", "user_agent": "Mozilla"}, "event_id": "e-1"},
        "contact_email": "a@b.fr",
        "work_phone_sha256": digest,
        "items": [{"comment": "reach me at a@b.fr"}],
    }
    assert redact_original(original) == {
        "event_name": "lead_qualified",
        "facebook_lead_id": "120000000000101",
        "user": {"email": "[redacted]", "id": "[redacted]", "consent_categories": ["3"]},
        "context": {"device": {"ip": "[redacted]", "user_agent": "Mozilla"}, "event_id": "e-1"},
        "contact_email": "[redacted]",
        "work_phone_sha256": digest,
        "items": [{"comment": "reach me at [redacted]"}],
    }
    payload = {
        "event_name": "Lead",
        "user_data": {
            "lead_id": 120000000000101,
            "em": digest,
            "ph": [digest],
            "client_ip_address": "10.1.2.3",
            "fbc": "fb.1.1.abc",
        },
        "custom_data": {"note": "a@b.fr"},
    }
    assert redact_payload(payload) == {
        "event_name": "Lead",
        "user_data": {
            "lead_id": 120000000000101,
            "em": digest,
            "ph": [digest],
            "client_ip_address": "[redacted]",
            "fbc": "fb.1.1.abc",
        },
        "custom_data": {"note": "[redacted]"},
    }


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/dashboard/events/999999999999999999999999", 404),  # past 64 bits
        ("/dashboard/events?after=99999999999999999999999", 200),
        ("/dashboard/events?after=%C2%B2", 200),  # "²": a digit to isdigit, not to int
        ("/dashboard/events?code=%C2%B2", 200),
    ],
)
def test_odd_ids_in_addresses_are_no_server_error(app: Any, path: str, status: int) -> None:
    answer = call(app, "GET", path, headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"})
    assert answer.status_code == status


def test_the_list_says_only_the_filters_it_applied(app: Any) -> None:
    bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    bogus = call(app, "GET", "/dashboard/events?category=bogus&code=abc", headers=bearer)
    assert "Showing all events." in re.sub(r"<[^>]+>", "", bogus.text)
    kept = call(app, "GET", "/dashboard/events?category=rejected&code=100", headers=bearer)
    assert "Showing category rejected, code 100" in re.sub(r"<[^>]+>", "", kept.text)


@pytest.mark.parametrize(("stored", "next_link"), [(PAGE, False), (PAGE + 1, True)])
def test_the_events_list_links_a_next_page_only_when_there_is_one(
    clock: Clock, stored: int, next_link: bool
) -> None:
    settings = settings_with()
    mapper = Mapper(settings)
    events = [crm_event("lead_qualified", lead(n), f"p-{n}") for n in range(stored)]
    with SQLiteStore(":memory:") as store:
        store.add([Incoming(mapper.map(e), orjson.dumps(e), clock()) for e in events])
        app = create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=mapper, clock=clock
        )
        bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
        page = call(app, "GET", "/dashboard/events", headers=bearer).text
    assert page.count('href="/dashboard/events/') == PAGE
    assert (f"Next {PAGE} events" in page) is next_link


def test_the_pages_report_covers_the_latest_events_and_is_made_once_a_minute(
    clock: Clock,
) -> None:
    """A view read every stored event (10-12 s of the serving process at 205,000): the report
    covers the events stored last, says so, and is shared by the views of the next minute."""
    settings = settings_with()
    mapper = Mapper(settings)

    def add(store: SQLiteStore, n: int, first: int) -> None:
        events = [crm_event("lead_qualified", lead(i), f"k-{i}") for i in range(first, first + n)]
        store.add([Incoming(mapper.map(e), orjson.dumps(e), clock()) for e in events])

    with SQLiteStore(":memory:") as store:
        add(store, 5, 0)
        reports = Reports(store, latest=3, fresh_s=30)  # the service's: 100,000 and 60 s
        first = reports.get(settings, clock())
        assert first.events == 3 and first.source == "the latest 3 events of the event store"
        add(store, 2, 5)
        clock.now += 29
        assert reports.get(settings, clock()) is first  # within 30 s: the same report
        assert reports.get(settings_with(), clock()) is not first  # a reload: made again
        clock.now += 31
        again = reports.get(settings, clock())
        assert again is not first and again.events == 3
        assert Reports(store, latest=10).get(settings, clock()).source == "the event store"

        app = create_app(
            settings, store=store, worker=None, metrics=Metrics(), mapper=mapper, clock=clock
        )
        bearer = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
        page = call(app, "GET", "/dashboard", headers=bearer).text
        assert "7 event(s) in the event store" in page
        funnel = call(app, "GET", "/dashboard/funnel", headers=bearer).text
        assert "leadrelay report" not in funnel  # it covers them all
    assert "leadrelay report --config" in funnel_page.render(first)


@pytest.mark.parametrize(
    ("row", "source"),
    [
        ('"custom_data.value" = "{{value}}"', "{{value}}"),  # as README's [smart_mapping]
        ("'custom_data.value' = 'as is' # a comment, as TOML allows", "as is"),
        ("custom_data.value = {{crm_stage}} # a comment after a bare row", "{{crm_stage}}"),
        ("custom_data.value = =LOWER(crm_stage) #no space, still a comment", "=LOWER(crm_stage)"),
        # A "#" inside an expression is no comment.
        ("custom_data.value = Lead #{{crm_stage}}", "Lead #{{crm_stage}}"),
        ("custom_data.value = Order # {{crm_stage}}", "Order # {{crm_stage}}"),
        ('custom_data.value = =CONCAT("Order # ", crm_stage)', '=CONCAT("Order # ", crm_stage)'),
    ],
)
def test_playground_rows_written_as_in_the_config_are_read_as_the_config_reads_them(
    row: str, source: str
) -> None:
    """A row copied from README's [smart_mapping] ("custom_data.value" = "{{value}}") sent the
    text "\"5\"" for a value of 5, and a quoted "=LOWR(id)" as a literal: the quotes were kept.
    The section's line, pasted with its rows, is skipped."""
    assert parse_rows(f"[smart_mapping]  # the section, pasted whole\n{row}\n") == (
        {"custom_data.value": source},
        [],
    )


def test_playground_rows_that_cannot_be_used_are_said() -> None:
    _, (typo,) = parse_rows('"custom_data.x" = "=LOWR(id)"')
    assert "unknown function LOWR" in typo.message
    _, (unclosed,) = parse_rows('"custom_data.x" = "=LOWER(id)')
    assert unclosed.line == 1 and "quote" in unclosed.message
