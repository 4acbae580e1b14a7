"""The sandbox over real HTTP: Meta's validation, error shapes, faults and the inspection pages."""

from __future__ import annotations

import copy
import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from leadrelay.sandbox import SandboxOptions, SandboxServer

NOW = 1_767_225_600
PIXEL = "123456789012345"
EVENTS = f"/v25.0/{PIXEL}/events"
TOKEN = "sandbox-token"
DELETED_LEAD = 1_111_111_111_111_111
DAY = 86400


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def event(i: int = 0) -> dict[str, Any]:
    return {
        "event_name": "Marketing Qualified Lead",
        "event_time": NOW - 60,
        "action_source": "system_generated",
        "user_data": {"lead_id": 1_234_567_890_123_450 + i, "em": [sha(f"user{i}@example.com")]},
        "custom_data": {"event_source": "crm", "lead_event_source": "AcmeCRM"},
    }


def batch(n: int = 3) -> list[dict[str, Any]]:
    return [event(i) for i in range(n)]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    options = SandboxOptions(deleted_lead_ids=frozenset({DELETED_LEAD}), clock=lambda: NOW)
    with SandboxServer(options) as server:
        yield server


@pytest.fixture(scope="module")
def client(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=5) as http:
        yield http


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest) -> None:
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").state.reset()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert len(error["fbtrace_id"]) == 11
    return error


def test_valid_batch_is_accepted_and_kept(sandbox: SandboxServer, client: httpx.Client) -> None:
    events = batch(3)
    response = client.post(EVENTS, json={"data": events, "partner_agent": "leadrelay"})

    assert response.status_code == 200
    body = response.json()
    assert body["events_received"] == 3
    assert body["messages"] == []
    assert len(body["fbtrace_id"]) == 11
    assert sandbox.state.received() == events
    assert (sandbox.state.requests, sandbox.state.events_received) == (1, 3)
    inspected = client.get("/_sandbox/received", params={"limit": 2}).json()
    assert inspected["events"] == events[1:]
    assert inspected["events_received"] == 3


def test_events_meta_does_not_use_are_accepted_with_warnings(client: httpx.Client) -> None:
    plain = event(1)
    del plain["custom_data"]
    web = event(2) | {"action_source": "website"}

    response = client.post(EVENTS, json={"data": [event(0), plain, web]})

    assert response.status_code == 200
    messages = response.json()["messages"]
    assert any("event_source" in m and "data[1]" in m for m in messages)
    assert any("lead_event_source" in m and "1 of 3" in m for m in messages)
    assert any("system_generated" in m and "data[2]" in m for m in messages)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(ev: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            ev = ev[part]
        ev[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(ev: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            ev = ev[part]
        del ev[last]

    return mutate


# (mutation of data[1], subcode, blamed field after ["data", "1"])
EVENT_RULES = {
    "event_name missing": (_drop("event_name"), 2804001, ["event_name"]),
    "event_name empty": (_set("event_name", ""), 2804001, ["event_name"]),
    "event_time float": (_set("event_time", NOW - 60.0), 2804001, ["event_time"]),
    "event_time string": (_set("event_time", str(NOW)), 2804001, ["event_time"]),
    "event_time too old": (_set("event_time", NOW - 8 * DAY), 2804003, ["event_time"]),
    "event_time in ms": (_set("event_time", NOW * 1000), 2804004, ["event_time"]),
    "event_time far ahead": (_set("event_time", NOW + 8 * DAY), 2804004, ["event_time"]),
    "action_source missing": (_drop("action_source"), 2804001, ["action_source"]),
    "action_source unknown": (_set("action_source", "crm"), 2804001, ["action_source"]),
    "user_data missing": (_drop("user_data"), 2804001, ["user_data"]),
    "user_data without customer info": (_set("user_data", {"foo": 1}), 2804050, ["user_data"]),
    "lead_id string": (
        _set("user_data.lead_id", "1234567890123456"),
        2804036,
        ["user_data", "lead_id"],
    ),
    "lead_id float": (
        _set("user_data.lead_id", 1234567890123456.0),
        2804036,
        ["user_data", "lead_id"],
    ),
    "lead_id 14 digits": (
        _set("user_data.lead_id", 12345678901234),
        2804036,
        ["user_data", "lead_id"],
    ),
    "lead_id 18 digits": (_set("user_data.lead_id", 10**17), 2804036, ["user_data", "lead_id"]),
    "lead_id deleted": (_set("user_data.lead_id", DELETED_LEAD), 2804036, ["user_data", "lead_id"]),
    "em unhashed": (_set("user_data.em", "jane@example.com"), 2804007, ["user_data", "em"]),
    "ph uppercase hex": (_set("user_data.ph", sha("1").upper()), 2804007, ["user_data", "ph"]),
    "em list with a bad item": (
        _set("user_data.em", [sha("a"), "x"]),
        2804007,
        ["user_data", "em"],
    ),
    "country not a string": (_set("user_data.country", 33), 2804007, ["user_data", "country"]),
    "custom_data not an object": (_set("custom_data", "crm"), 2804001, ["custom_data"]),
}


@pytest.mark.parametrize("rule", EVENT_RULES)
def test_a_bad_event_rejects_the_whole_request(
    rule: str, sandbox: SandboxServer, client: httpx.Client
) -> None:
    mutate, subcode, blamed = EVENT_RULES[rule]
    events = batch(3)
    mutate(events[1])

    response = client.post(EVENTS, json={"data": events})

    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["error_subcode"], error["is_transient"]) == (100, subcode, False)
    assert error["type"] == "OAuthException"
    assert error["error_data"]["blame_field_specs"] == [["data", "1", *blamed]]
    assert f"data[1].{'.'.join(blamed)}" in error["message"]
    assert error["error_user_title"] and error["error_user_msg"]
    # All or nothing: the valid events 0 and 2 are not kept either.
    assert sandbox.state.received() == []
    assert sandbox.state.events_received == 0
    assert sandbox.state.errors_by_code == {f"100/{subcode}": 1}


def test_unhashed_contact_info_is_not_echoed(client: httpx.Client) -> None:
    events = batch(1)
    events[0]["user_data"]["em"] = "jane.doe@example.com"

    response = client.post(EVENTS, json={"data": events})

    assert response.status_code == 400
    assert "jane" not in response.text
    assert "20-character string" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "data is required"),
        ({"data": {"event_name": "x"}}, "array"),
        ({"data": []}, "got 0"),
        ({"data": [event(0)] * 1001}, "got 1001"),
        ({"data": batch(1), "test_event_code": 5}, "test_event_code"),
    ],
    ids=["missing", "not a list", "empty", "too many", "test_event_code not a string"],
)
def test_bad_data_array(body: dict[str, Any], words: str, client: httpx.Client) -> None:
    response = client.post(EVENTS, json=body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == 100
    assert "error_subcode" not in error
    assert words in error["message"]


def test_a_failure_keeps_only_what_came_before(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    first = batch(2)
    second = batch(2)
    second[0]["user_data"]["lead_id"] = DELETED_LEAD

    assert client.post(EVENTS, json={"data": first}).status_code == 200
    assert client.post(EVENTS, json={"data": second}).status_code == 400

    assert sandbox.state.received() == first
    assert sandbox.state.errors_by_code == {"100/2804036": 1}


@pytest.mark.parametrize(
    "send",
    [
        lambda c, url: c.post(
            url, json={"data": batch(1)}, headers={"Authorization": f"Bearer {TOKEN}"}
        ),
        lambda c, url: c.post(url, params={"access_token": TOKEN}, json={"data": batch(1)}),
        lambda c, url: c.post(url, json={"data": batch(1), "access_token": TOKEN}),
        lambda c, url: c.post(
            url, data={"access_token": TOKEN, "data": orjson.dumps(batch(1)).decode()}
        ),
        lambda c, url: c.post(
            url,
            files={"access_token": (None, TOKEN), "data": (None, orjson.dumps(batch(1)))},
        ),
        lambda c, url: c.post(  # the SDK's shape: a list of JSON-encoded events
            url,
            data={
                "access_token": TOKEN,
                "data": orjson.dumps([orjson.dumps(event(0)).decode()]).decode(),
            },
        ),
    ],
    ids=[
        "bearer header",
        "query param",
        "body field",
        "urlencoded form",
        "multipart form",
        "sdk form",
    ],
)
def test_token_and_body_shapes_meta_accepts(
    send: Callable[[httpx.Client, str], httpx.Response], sandbox: SandboxServer
) -> None:
    with httpx.Client(base_url=sandbox.url) as bare:
        response = send(bare, EVENTS)

    assert response.status_code == 200, response.text
    assert sandbox.state.received() == [event(0)]


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, 104), ({"Authorization": "Bearer not-the-token"}, 190)],
    ids=["missing", "wrong"],
)
def test_a_missing_token_is_104_and_a_wrong_one_190(
    headers: dict[str, str], code: int, sandbox: SandboxServer
) -> None:
    # Graph: 104 "An access token is required to request this resource."; 190 for a bad one.
    with httpx.Client(base_url=sandbox.url, headers=headers) as bare:
        response = bare.post(EVENTS, json={"data": batch(1)})

    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["type"]) == (code, "OAuthException")
    assert "error_subcode" not in error
    assert "not-the-token" not in response.text
    assert sandbox.state.received() == []
    assert sandbox.state.errors_by_code == {str(code): 1}


@pytest.mark.parametrize("pixel", ["12345", "12345678901234x", "1234567890123456789"])
def test_unknown_pixel_is_100_33(pixel: str, client: httpx.Client) -> None:
    response = client.post(f"/v25.0/{pixel}/events", json={"data": batch(1)})

    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["error_subcode"]) == (100, 33)
    assert error["type"] == "GraphMethodException"
    assert pixel in error["message"]


def test_only_configured_pixels_and_tokens_when_given() -> None:
    options = SandboxOptions(
        access_tokens=frozenset(), pixel_ids=frozenset({"42"}), clock=lambda: NOW
    )
    with SandboxServer(options) as server, httpx.Client(base_url=server.url) as http:
        anything = {"Authorization": "Bearer whatever"}
        known = http.post("/v25.0/42/events", json={"data": batch(1)}, headers=anything)
        unknown = http.post(EVENTS, json={"data": batch(1)}, headers=anything)

    assert known.status_code == 200
    assert error_of(unknown)["error_subcode"] == 33


def test_bad_version_in_path(client: httpx.Client) -> None:
    response = client.post(f"/latest/{PIXEL}/events", json={"data": batch(1)})

    assert response.status_code == 400
    assert error_of(response)["code"] == 2500


LATER = 1_795_000_000  # 2026-11-18: v20.0 ended on 2026-09-24, v21.0 ends on 2027-01-21


def events_at(clock: float) -> list[dict[str, Any]]:
    return [{**event, "event_time": int(clock) - 60} for event in batch(1)]


@pytest.mark.parametrize("version", ["v20.0", "v2.0", "v19.0"])
def test_a_version_past_its_end_is_2635(version: str) -> None:
    options = SandboxOptions(clock=lambda: LATER)
    with SandboxServer(options) as server, httpx.Client(base_url=server.url) as http:
        response = http.post(
            f"/{version}/{PIXEL}/events",
            json={"data": events_at(LATER)},
            headers={"Authorization": "Bearer sandbox-token"},
        )

    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["type"]) == (2635, "OAuthException")
    assert "deprecated version" in error["message"]


@pytest.mark.parametrize(
    ("clock", "versions"),
    [(LATER, ["v21.0", "v25.0", "v26.0", "v27.0"]), (NOW, ["v20.0", "v19.0"])],
)
def test_a_version_meta_still_serves_is_taken(clock: float, versions: list[str]) -> None:
    # Before v20.0's end (NOW is 2026-01-01), the versions before it are not judged either.
    options = SandboxOptions(clock=lambda: clock)
    with SandboxServer(options) as server, httpx.Client(base_url=server.url) as http:
        for version in versions:
            response = http.post(
                f"/{version}/{PIXEL}/events",
                json={"data": events_at(clock)},
                headers={"Authorization": "Bearer sandbox-token"},
            )
            assert response.status_code == 200, (version, response.text)


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", f"/v25.0/v25.0/{PIXEL}/events", 2500),  # graph_url with a version in it
        ("POST", f"/v25.0/{PIXEL}", 2500),
        ("GET", f"/v25.0/{PIXEL}/events", 100),
        ("PUT", "/", 2500),
    ],
)
def test_other_paths_and_methods_get_a_graph_error(
    method: str, path: str, code: int, client: httpx.Client, sandbox: SandboxServer
) -> None:
    response = client.request(method, path, json={"data": batch(1)})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert error_of(response)["code"] == code
    # counted as a request, as its error is (requests were fewer than successes and errors)
    assert (sandbox.state.requests, sum(sandbox.state.errors_by_code.values())) == (1, 1)


@pytest.mark.parametrize(
    ("fault", "status", "code", "transient", "key"),
    [
        ("http_500", 500, 2, True, "http_500"),
        ("http_503", 503, 2, True, "http_503"),
        ("throttle", 403, 4, True, "4"),
        ("throttle:80004", 400, 80004, True, "80004/2446079"),
        ("throttle:32", 403, 32, True, "32"),
        ("throttle:613", 400, 613, True, "613/1487742"),
        ("auth", 400, 190, False, "190"),
        ("permission", 403, 200, False, "200"),
    ],
)
def test_scripted_error_faults(
    fault: str,
    status: int,
    code: int,
    transient: bool,
    key: str,
    sandbox: SandboxServer,
    client: httpx.Client,
) -> None:
    sandbox.state.script(fault)

    faulted = client.post(EVENTS, json={"data": batch(2)})
    after = client.post(EVENTS, json={"data": batch(2)})

    assert faulted.status_code == status
    error = error_of(faulted)
    assert (error["code"], error["is_transient"]) == (code, transient)
    assert after.status_code == 200  # a script entry is used once
    assert sandbox.state.events_received == 2
    assert sandbox.state.errors_by_code == {key: 1}


def test_scripted_faults_are_played_in_order(sandbox: SandboxServer, client: httpx.Client) -> None:
    sandbox.state.script("ok", "http_500", "ok")

    statuses = [client.post(EVENTS, json={"data": batch(1)}).status_code for _ in range(4)]

    assert statuses == [200, 500, 200, 200]


def test_drop_closes_the_connection_without_an_answer(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    sandbox.state.script("drop")

    with pytest.raises(httpx.RemoteProtocolError):
        client.post(EVENTS, json={"data": batch(2)})

    assert client.post(EVENTS, json={"data": batch(1)}).status_code == 200
    assert sandbox.state.errors_by_code == {"dropped": 1}
    assert sandbox.state.events_received == 1


def test_slow_answer_times_out_a_short_client_but_is_still_processed(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    sandbox.state.script("slow:300")

    with pytest.raises(httpx.ReadTimeout):
        client.post(EVENTS, json={"data": batch(2)}, timeout=0.1)

    # Like Meta, a batch whose answer the client gave up on may still have been accepted.
    deadline = time.monotonic() + 5
    while not sandbox.state.recent_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sandbox.state.events_received == 2


def test_timeout_fault_does_not_block_other_requests_or_stopping() -> None:
    with SandboxServer(SandboxOptions(clock=lambda: NOW)) as server:
        server.state.script("timeout")
        with httpx.Client(base_url=server.url, params={"access_token": TOKEN}) as http:
            with pytest.raises(httpx.ReadTimeout):
                http.post(EVENTS, json={"data": batch(1)}, timeout=0.1)
            assert http.post(EVENTS, json={"data": batch(1)}).status_code == 200
    assert server.state.events_received == 1


def _outcomes(server: SandboxServer, n: int) -> list[str]:
    seen = []
    with httpx.Client(base_url=server.url, params={"access_token": TOKEN}) as http:
        for _ in range(n):
            try:
                response = http.post(EVENTS, json={"data": batch(1)})
                seen.append(str(response.status_code))
            except httpx.RemoteProtocolError:
                seen.append("drop")
    return seen


def test_random_faults_are_reproducible_with_a_seed() -> None:
    def options(seed: int) -> SandboxOptions:
        return SandboxOptions(
            seed=seed, fail_rate=0.2, throttle_rate=0.2, drop_rate=0.2, clock=lambda: NOW
        )

    with SandboxServer(options(7)) as first:
        run1 = _outcomes(first, 30)
        first.state.reset()
        run1_again = _outcomes(first, 30)
    with SandboxServer(options(7)) as second:
        run2 = _outcomes(second, 30)
    with SandboxServer(options(8)) as other:
        run3 = _outcomes(other, 30)

    assert set(run1) == {"200", "500", "403", "drop"}
    assert run1 == run1_again == run2
    assert run3 != run1
    assert first.state.errors_by_code["dropped"] == run1.count("drop")


def test_faults_and_reset_over_http(sandbox: SandboxServer, client: httpx.Client) -> None:
    assert client.post("/_sandbox/faults", json={"script": ["http_503"]}).json() == {"queued": 1}
    assert client.post(EVENTS, json={"data": batch(1)}).status_code == 503

    bad = client.post("/_sandbox/faults", json={"script": ["ok", "explode"]})
    assert bad.status_code == 400
    assert "'explode'" in bad.json()["error"]

    client.post(EVENTS, json={"data": batch(1)})
    assert client.post("/_sandbox/reset").status_code == 200
    assert (sandbox.state.requests, sandbox.state.received()) == (0, [])
    assert client.get("/_sandbox/received").json()["events"] == []


@pytest.mark.parametrize("fault", ["slow:fast", "throttle:5", "boom", ""])
def test_unknown_faults_are_refused(fault: str, sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match="valid faults"):
        sandbox.state.script("ok", fault)


@pytest.mark.parametrize(
    ("keep", "sizes"),
    [(2, [5]), (3, [2, 2, 2]), (4, [1, 3, 1, 2]), (1, [1, 1]), (10, [3, 4]), (0, [2])],
)
def test_keep_events_bounds_memory_not_counts(keep: int, sizes: list[int]) -> None:
    events = batch(sum(sizes))
    with (
        SandboxServer(SandboxOptions(keep_events=keep, clock=lambda: NOW)) as server,
        httpx.Client(base_url=server.url, params={"access_token": TOKEN}) as http,
    ):
        start = 0
        for size in sizes:  # the last `keep` events, whichever requests brought them
            http.post(EVENTS, json={"data": events[start : start + size]})
            start += size
        inspected = http.get("/_sandbox/received", params={"limit": 1}).json()
        everything = http.get("/_sandbox/received", params={"limit": 1000}).json()
    kept = events[max(0, len(events) - keep) :] if keep else []  # all of them when fewer
    assert server.state.received() == kept == everything["events"]
    assert inspected["events"] == (events[-1:] if keep else [])
    assert server.state.events_received == len(events)


def test_status_page_shows_counts_and_no_token(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    client.post(EVENTS, json={"data": batch(2)})
    client.post("/v25.0/<b>x<b>/events", json={"data": batch(1)})
    with httpx.Client(base_url=sandbox.url) as bare:
        bare.post(EVENTS, params={"access_token": "query-secret-1"}, json={"data": batch(1)})

    page = client.get("/_sandbox")

    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "100/33" in html and "190" in html
    assert "&lt;b&gt;x&lt;b&gt;" in html and "<b>x" not in html
    assert TOKEN not in html and "query-secret-1" not in html


def test_events_sent_with_a_test_event_code_are_counted_by_code(
    sandbox: SandboxServer, client: httpx.Client
) -> None:
    # Meta shows such events in Test Events only: the sandbox says which code they came with.
    client.post(EVENTS, json={"data": batch(2), "test_event_code": "TEST123"})
    client.post(EVENTS, json={"data": batch(3)})

    inspected = client.get("/_sandbox/received", params={"limit": 0}).json()
    page = client.get("/_sandbox").text

    assert inspected["events_received"] == 5
    assert inspected["test_event_codes"] == {"TEST123": 2}
    assert "TEST123" in page


def test_serve_forever_logs_each_request_without_the_token() -> None:
    secret = "tok-SECRET-4711"
    code = (
        "from leadrelay.sandbox import SandboxOptions, serve_forever;"
        f"serve_forever(SandboxOptions(access_tokens=frozenset({{{secret!r}}})),"
        " host='127.0.0.1', port=0)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3]
        ok = copy.deepcopy(batch(2))
        for item in ok:
            item["event_time"] = int(time.time())
        with httpx.Client(base_url=url, timeout=5) as http:
            good = http.post(
                EVENTS, json={"data": ok}, headers={"Authorization": f"Bearer {secret}"}
            )
            bad = http.post(EVENTS, params={"access_token": "wrong-SECRET-99"}, json={"data": ok})
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)

    assert (good.status_code, bad.status_code) == (200, 400)
    lines = [line for line in out.splitlines() if "pixel=" in line]
    assert len(lines) == 2
    assert f"pixel={PIXEL} status=200 events=2 error=-" in lines[0]
    assert "status=400" in lines[1] and "error=190" in lines[1]
    assert secret not in out + err and "wrong-SECRET-99" not in out + err


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="at most 1"):
        SandboxOptions(fail_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError, match="slow_ms"):
        SandboxOptions(slow_ms=-1)


def test_the_sandbox_command_on_a_busy_port_says_so_in_one_line(sandbox: SandboxServer) -> None:
    port = sandbox.url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "leadrelay", "sandbox", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
