"""classify(): one table row per rule, decided by status / code / subcode / is_transient only."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from leadrelay.meta.errors import ErrorKind, GraphError, classify

T, THR, INV, AUTH = ErrorKind.TRANSIENT, ErrorKind.THROTTLED, ErrorKind.INVALID, ErrorKind.AUTH


def env(code: int | str | None, subcode: int | None = None, **more: Any) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": "some localized text",
        "type": "OAuthException",
        "fbtrace_id": "AbCdEf123",
    }
    if code is not None:
        error["code"] = code
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(more)
    return {"error": error}


ENVELOPE_ROWS = [
    # (id, http status, body, kind, label)
    ("code 1 unknown/temporary", 500, env(1, 99), T, "1/99"),
    ("code 2 service downtime", 503, env(2), T, "2"),
    ("code 341 app limit", 400, env(341), T, "341"),
    ("code 368 temporarily blocked", 400, env(368), T, "368"),
    ("is_transient on an unknown code", 400, env(9999, is_transient=True), T, "9999"),
    ("is_transient on code 100", 400, env(100, 2804001, is_transient=True), T, "100/2804001"),
    ("code 4 app request limit", 400, env(4), THR, "4"),
    ("code 17 user request limit", 400, env(17, 2446079), THR, "17/2446079"),
    ("code 32 pages rate limit", 400, env(32), THR, "32"),
    ("code 613 rate limit", 400, env(613, 1487742), THR, "613/1487742"),
    ("code 80000 BUC throttle", 400, env(80000), THR, "80000"),
    ("code 80004 BUC throttle", 400, env(80004), THR, "80004"),
    ("code 80014 BUC throttle", 400, env(80014), THR, "80014"),
    ("code 190 token expired", 400, env(190, 463), AUTH, "190/463"),
    ("code 190 no subcode", 401, env(190), AUTH, "190"),
    ("code 102 session", 400, env(102), AUTH, "102"),
    ("code 104 no token", 400, env(104), AUTH, "104"),
    ("code 2500 unknown path", 400, env(2500), AUTH, "2500"),
    ("code 2635 deprecated version", 400, env(2635), AUTH, "2635"),
    ("code 10 permission", 403, env(10), AUTH, "10"),
    ("code 200 permission", 403, env(200), AUTH, "200"),
    ("code 299 permission", 403, env(299), AUTH, "299"),
    ("100/33 pixel missing or no permission", 400, env(100, 33), AUTH, "100/33"),
    ("100/2804036 invalid lead id", 400, env(100, 2804036), INV, "100/2804036"),
    ("100/2804003 too old", 400, env(100, 2804003, is_transient=False), INV, "100/2804003"),
    ("100 without subcode", 400, env(100), INV, "100"),
    ("unknown code with 4xx", 400, env(12345), INV, "12345"),
    ("unknown code with 5xx", 502, env(12345), T, "12345"),
    ("unknown code with 429", 429, env(12345), THR, "12345"),
    ("code as a string", 400, env("190"), AUTH, "190"),
    ("known code beats 5xx status", 500, env(100, 2804036), INV, "100/2804036"),
    ("known code beats 4xx status", 400, env(2), T, "2"),
]


@pytest.mark.parametrize(
    ("status", "body", "kind", "label"),
    [row[1:] for row in ENVELOPE_ROWS],
    ids=[row[0] for row in ENVELOPE_ROWS],
)
def test_graph_error_envelope(
    status: int, body: dict[str, Any], kind: ErrorKind, label: str
) -> None:
    error = classify(status, body)
    assert (error.kind, error.label()) == (kind, label)
    assert error.http_status == status
    assert error.fbtrace_id == "AbCdEf123"
    assert error.message.startswith("some localized text")


NO_ENVELOPE_ROWS = [
    # (id, status, body, kind, label, text expected in the message)
    ("HTTP 500 html", 500, b"<html>Internal Server Error</html>", T, "http_500", "HTTP 500"),
    ("HTTP 503 empty", 503, b"", T, "http_503", "HTTP 503"),
    ("HTTP 502 json without error", 502, {"oops": 1}, T, "http_502", "HTTP 502"),
    ("HTTP 429 no envelope", 429, b"slow down", THR, "http_429", "HTTP 429"),
    ("HTTP 400 non-JSON", 400, b"Bad Request", INV, "http_400", "HTTP 400"),
    ("HTTP 413 non-JSON", 413, "payload too large", INV, "http_413", "HTTP 413"),
    # A URL that is not the events endpoint (a graph_url with a path): no event is to blame.
    ("HTTP 404 empty", 404, None, AUTH, "http_404", "HTTP 404"),
    ("HTTP 405 text", 405, b"Method Not Allowed", AUTH, "http_405", "HTTP 405"),
    # A plain web server's answer to a POST (python -m http.server): it was retried forever.
    ("HTTP 501 html", 501, b"<html>Unsupported method ('POST')</html>", AUTH, "http_501", "501"),
    ("HTTP 408 request timeout", 408, b"", T, "http_408", "HTTP 408"),
    ("HTTP 401 from a proxy", 401, b"Unauthorized", AUTH, "http_401", "HTTP 401"),
    ("HTTP 403 from a proxy", 403, b"Forbidden", AUTH, "http_403", "HTTP 403"),
    ("HTTP 200 that is not JSON", 200, b"<html>", T, "http_200", "HTTP 200"),
]


@pytest.mark.parametrize(
    ("status", "body", "kind", "label", "text"),
    [row[1:] for row in NO_ENVELOPE_ROWS],
    ids=[row[0] for row in NO_ENVELOPE_ROWS],
)
def test_responses_without_graph_envelope(
    status: int, body: Any, kind: ErrorKind, label: str, text: str
) -> None:
    error = classify(status, body)
    assert (error.kind, error.label(), error.code) == (kind, label, None)
    assert text in error.message


REQUEST = httpx.Request("POST", "https://graph.example/v25.0/1/events")


@pytest.mark.parametrize(
    ("exc", "label"),
    [
        (httpx.ReadTimeout("timed out", request=REQUEST), "timeout"),
        (httpx.ConnectTimeout("timed out", request=REQUEST), "timeout"),
        (httpx.PoolTimeout("no connection", request=REQUEST), "timeout"),
        (httpx.ConnectError("connection refused", request=REQUEST), "connection"),
        (httpx.RemoteProtocolError("server disconnected", request=REQUEST), "connection"),
        (OSError("network unreachable"), "connection"),
    ],
)
def test_no_response_is_transient(exc: BaseException, label: str) -> None:
    error = classify(None, None, exc=exc)
    assert (error.kind, error.label(), error.network, error.http_status) == (T, label, label, None)
    assert label in error.message


def test_message_text_is_never_used_to_classify() -> None:
    fake = {
        "error": {
            "message": "Invalid OAuth access token - rate limit timeout",
            "code": 100,
            "error_subcode": 2804036,
        }
    }
    assert classify(400, fake).kind is INV


def test_user_title_and_user_message_are_kept() -> None:
    body = env(
        100,
        2804036,
        error_user_title="Invalid lead ID",
        error_user_msg="The lead ID must be a 15-17 digit number.",
    )
    error = classify(400, body)
    assert error.user_title == "Invalid lead ID"
    assert "15-17 digit" in error.message
    assert error.reason() == "meta_100_2804036"


@pytest.mark.parametrize(
    ("error_data", "said"),
    [
        ({"blame_field_specs": [["data", "3", "user_data", "lead_id"]]}, "[user_data.lead_id] "),
        ('{"blame_field_specs":[["data","0","event_time"]]}', "[event_time] "),  # as text
        ({"blame_field_specs": [["data"]]}, "[data] "),
        ({"blame_field_specs": "odd"}, ""),
        ("not json", ""),
    ],
)
def test_the_field_meta_blames_is_named_whatever_the_language(error_data: Any, said: str) -> None:
    """Meta's texts are localized and change; ``blame_field_specs`` names the field."""
    body = env(100, 2804036, message="Paramètre non valide", error_data=error_data)
    assert classify(400, body).message == f"{said}Paramètre non valide"


BUC = orjson.dumps(
    {"1234": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 3}]}
).decode()

RETRY_AFTER_ROWS = [
    ("Retry-After seconds", 429, env(None), {"Retry-After": "30"}, 30.0),
    ("Retry-After header in lower case", 400, env(4), {"retry-after": "12.5"}, 12.5),
    ("BUC regain minutes", 400, env(80000), {"X-Business-Use-Case-Usage": BUC}, 180.0),
    (
        "Retry-After wins over BUC",
        400,
        env(80000),
        {"Retry-After": "7", "X-Business-Use-Case-Usage": BUC},
        7.0,
    ),
    (
        "BUC with zero minutes",
        400,
        env(80000),
        {
            "X-Business-Use-Case-Usage": BUC.replace(
                '"estimated_time_to_regain_access":3', '"estimated_time_to_regain_access":0'
            )
        },
        None,
    ),
    ("BUC that is not JSON", 400, env(4), {"X-Business-Use-Case-Usage": "{nope"}, None),
    ("Retry-After garbage", 429, b"", {"Retry-After": "soon"}, None),
    ("Retry-After on a 503", 503, b"", {"Retry-After": "2"}, 2.0),
    ("no headers", 400, env(4), {}, None),
    ("not for invalid events", 400, env(100), {"Retry-After": "30"}, None),
]


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [row[1:] for row in RETRY_AFTER_ROWS],
    ids=[row[0] for row in RETRY_AFTER_ROWS],
)
def test_retry_after(
    status: int, body: Any, headers: dict[str, str], expected: float | None
) -> None:
    assert classify(status, body, headers=headers).retry_after == expected


def test_retry_after_http_date_in_the_past_means_now() -> None:
    error = classify(429, b"", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert error.retry_after == 0.0


def test_httpx_headers_are_accepted() -> None:
    headers = httpx.Headers({"RETRY-AFTER": "9"})
    assert classify(429, b"", headers=headers).retry_after == 9.0


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (GraphError(INV, 400, 100, 2804036, "m", None, None, None), "100/2804036"),
        (GraphError(AUTH, 400, 190, None, "m", None, None, None), "190"),
        (GraphError(T, 503, None, None, "m", None, None, None), "http_503"),
        (GraphError(T, None, None, None, "m", None, None, None, network="timeout"), "timeout"),
        (GraphError(T, None, None, None, "m", None, None, None), "unknown"),
    ],
)
def test_label(error: GraphError, label: str) -> None:
    assert error.label() == label
