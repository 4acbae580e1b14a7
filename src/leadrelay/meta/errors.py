"""What a failed Graph API call means for delivery, decided in one place.

Meta's error texts are localized and change without notice, so ``classify`` looks only at the HTTP
status, the envelope's ``code`` / ``error_subcode`` / ``is_transient`` and the rate-limit headers.
The kind decides what the dispatcher does: retry (``TRANSIENT``, ``THROTTLED``), isolate the bad
event (``INVALID``) or stop and keep everything queued (``AUTH``: the token, a permission, or the
endpoint itself, a version Meta no longer serves or a path that is not the events endpoint).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

# Codes from Meta's Graph error-handling and rate-limiting pages (reference section 3.3).
_TRANSIENT_CODES: Final = frozenset({1, 2, 341, 368})
_THROTTLE_CODES: Final = frozenset({4, 17, 32, 613, *range(80000, 80015)})
_AUTH_CODES: Final = frozenset({10, 102, 104, 190, *range(200, 300)})  # 104: no token sent
# The request never reached the events endpoint: 2500 "Unknown path components" (a graph_url that
# holds a version or a path), 2635 "You are calling a deprecated version" (an old api_version).
_ENDPOINT_CODES: Final = frozenset({2500, 2635})
# The same, said by a server that is not Graph: 501 is a plain web server's "no POST here"
# (retried forever as transient, with readyz saying ready).
_ENDPOINT_STATUSES: Final = frozenset({404, 405, 501})
_INVALID_PARAMETER: Final = 100
_NO_SUCH_OBJECT: Final = 33  # 100/33: the pixel does not exist or the token may not use it
_MAX_TEXT: Final = 300


class ErrorKind(StrEnum):
    """What to do about a failed request."""

    TRANSIENT = "transient"  # retry the same batch after a backoff
    THROTTLED = "throttled"  # retry, but slower, and not before Meta says so
    INVALID = "invalid"  # some event in the batch is refused: isolate it, send the rest
    AUTH = "auth"  # token, permission or endpoint problem: nothing will get through, stop


@dataclass(frozen=True, slots=True)
class GraphError:
    """A classified Graph API failure, with Meta's identifiers kept for support tickets.

    ``network`` is ``"timeout"`` or ``"connection"`` when no HTTP response arrived at all.
    ``retry_after`` (seconds) is set when Meta said how long to wait.
    """

    kind: ErrorKind
    http_status: int | None
    code: int | None
    subcode: int | None
    message: str
    user_title: str | None
    fbtrace_id: str | None
    retry_after: float | None
    network: str | None = None

    def label(self) -> str:
        """Short identifier for summaries: ``100/2804036``, ``190``, ``http_503``, ``timeout``."""
        if self.code is not None:
            return f"{self.code}/{self.subcode}" if self.subcode else str(self.code)
        if self.network is not None:
            return self.network
        if self.http_status is not None:
            return f"http_{self.http_status}"
        return "unknown"

    def reason(self) -> str:
        """Machine-readable reason code for a rejected event, e.g. ``meta_100_2804036``."""
        return "meta_" + self.label().replace("/", "_")


def classify(
    status: int | None,
    body: Any,
    exc: BaseException | None = None,
    headers: Mapping[str, str] | None = None,
) -> GraphError:
    """Classify a failed call from its HTTP status, body (parsed JSON, raw bytes/str or None),
    the exception raised instead of a response, and the response headers."""
    if exc is not None:
        # Imported here: a dry run counts outcomes with ErrorKind but never loads the HTTP stack.
        import httpx

        network = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
        detail = str(exc) or type(exc).__name__
        return GraphError(
            kind=ErrorKind.TRANSIENT,
            http_status=status,
            code=None,
            subcode=None,
            message=f"no response from Meta ({network}): {_clip(detail)}",
            user_title=None,
            fbtrace_id=None,
            retry_after=None,
            network=network,
        )
    envelope = body.get("error") if isinstance(body, dict) else None
    if not isinstance(envelope, dict):
        return _without_envelope(status, body, headers)
    code = _int(envelope.get("code"))
    subcode = _int(envelope.get("error_subcode"))
    kind = _kind(status, code, subcode, envelope.get("is_transient") is True)
    message = _text(envelope.get("message")) or f"Graph API error (HTTP {status})"
    user_msg = _text(envelope.get("error_user_msg"))
    if user_msg and user_msg not in message:
        message = f"{message} ({user_msg})"
    blamed = [name for name in _blamed(envelope.get("error_data")) if name not in message]
    if blamed:  # Meta's texts vary and are localized; the field it blames is said whatever
        message = f"[{', '.join(blamed)}] {message}"
    return GraphError(
        kind=kind,
        http_status=status,
        code=code,
        subcode=subcode,
        message=_clip(message),
        user_title=_text(envelope.get("error_user_title")),
        fbtrace_id=_text(envelope.get("fbtrace_id")),
        retry_after=_retry_after(headers) if kind in _RETRYABLE else None,
    )


def _kind(status: int | None, code: int | None, subcode: int | None, transient: bool) -> ErrorKind:
    # Known codes decide before the HTTP status: Meta sends most errors as 400 whatever they mean.
    if (
        code in _AUTH_CODES
        or code in _ENDPOINT_CODES
        or (code == _INVALID_PARAMETER and subcode == _NO_SUCH_OBJECT)
    ):
        return ErrorKind.AUTH
    if code in _THROTTLE_CODES:
        return ErrorKind.THROTTLED
    if code in _TRANSIENT_CODES or transient:
        return ErrorKind.TRANSIENT
    if code == _INVALID_PARAMETER:
        return ErrorKind.INVALID
    return _status_kind(status)


def _status_kind(status: int | None) -> ErrorKind:
    if status == 429:
        return ErrorKind.THROTTLED
    if status in (401, 403) or status in _ENDPOINT_STATUSES:
        # Without a Graph envelope this is a proxy or gateway refusing us, or a URL that is not
        # the events endpoint; bisecting would only turn every event into a rejection, so
        # treat it like a token problem.
        return ErrorKind.AUTH
    if status == 408:
        return ErrorKind.TRANSIENT
    if status is not None and 400 <= status < 500:
        return ErrorKind.INVALID
    return ErrorKind.TRANSIENT


_RETRYABLE: Final = frozenset({ErrorKind.TRANSIENT, ErrorKind.THROTTLED})


def refused_endpoint(error: GraphError) -> bool:
    """Whether ``error`` (an ``AUTH`` one) refused the endpoint (the URL or the API version),
    not the token or a permission."""
    return error.code in _ENDPOINT_CODES or (
        error.code is None and error.http_status in _ENDPOINT_STATUSES
    )


def settings_to_check(error: GraphError) -> str:
    """The settings to fix when delivery stopped on ``error`` (an ``AUTH`` one), in words."""
    if refused_endpoint(error):
        return (
            "graph_url (Meta's is https://graph.facebook.com, with no version or path after it) "
            "and api_version (one Meta still serves, such as v25.0)"
        )
    return "access_token and pixel_id"


def _without_envelope(
    status: int | None, body: Any, headers: Mapping[str, str] | None
) -> GraphError:
    kind = _status_kind(status)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    what = "a response that is not a Graph API error" if body else "an empty response"
    detail = f": {_clip(body.strip())}" if isinstance(body, str) and body.strip() else ""
    return GraphError(
        kind=kind,
        http_status=status,
        code=None,
        subcode=None,
        message=f"HTTP {status} with {what}{detail}",
        user_title=None,
        fbtrace_id=None,
        retry_after=_retry_after(headers) if kind in _RETRYABLE else None,
    )


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``Retry-After``, else from the business use-case usage header."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    value = lower.get("retry-after")
    if value:
        seconds = _seconds(value.strip())
        if seconds is not None:
            return seconds
    usage = lower.get("x-business-use-case-usage")
    if usage:
        minutes = _regain_minutes(usage)
        if minutes:
            return minutes * 60.0
    return None


def _seconds(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # rare: only for an HTTP-date Retry-After

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _regain_minutes(header: str) -> float | None:
    # {"<business id>": [{"type": "ads_management", "estimated_time_to_regain_access": 5, ...}]}
    try:
        usage = orjson.loads(header)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(usage, dict):
        return None
    best: float | None = None
    for entries in usage.values():
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict):
                continue
            minutes = entry.get("estimated_time_to_regain_access")
            if isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0:
                best = max(best or 0.0, float(minutes))
    return best


def _blamed(error_data: Any) -> list[str]:
    """The fields ``error_data.blame_field_specs`` names (a JSON object, or its text), each as
    a path in the event when it is one (``["data", "3", "user_data", "lead_id"]``:
    ``user_data.lead_id``)."""
    if isinstance(error_data, str):
        try:
            error_data = orjson.loads(error_data)
        except orjson.JSONDecodeError:
            return []
    specs = error_data.get("blame_field_specs") if isinstance(error_data, dict) else None
    names: list[str] = []
    for spec in specs if isinstance(specs, list) else []:
        parts = [str(part) for part in (spec if isinstance(spec, list) else [spec])]
        if len(parts) > 2 and parts[0] == "data" and parts[1].isdigit():
            parts = parts[2:]  # the event's own field
        name = ".".join(parts)
        if name and name not in names:
            names.append(name)
    return names


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."
