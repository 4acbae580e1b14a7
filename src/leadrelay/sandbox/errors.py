"""Meta's Graph error envelope, and the canned errors the sandbox answers with.

Meta documents codes, not HTTP statuses, so the statuses here follow what Graph is seen to send
(and what clients must cope with; classify by ``code``/``error_subcode``, never by status):

===============================  ======  ==================================================
error                            HTTP    body
===============================  ======  ==================================================
invalid parameter (100, 100/x)   400     ``is_transient`` false
token missing / not accepted     400     104 / 190, no subcode, ``WWW-Authenticate`` header
unknown path / expired version   400     2500 / 2635
permission                       403     200
throttle 4 / 17                  403     ``is_transient`` true (Graph answers these with 403)
throttle 613 / 80004             400     ``is_transient`` true
service error                    500/503 code 2, ``is_transient`` true
===============================  ======  ==================================================

Keys that do not apply are left out, as Graph does: ``error_subcode`` only when there is one,
``error_user_title``/``error_user_msg`` only for the per-event errors (subcodes 28040xx) and the
pixel error, ``error_data.blame_field_specs`` only where a field is to blame.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

# Per-event subcodes. 2804003 and 2804036 are Meta's (see the reference); the meaning of the
# others is not documented by Meta, so these are the sandbox's own choices.
BAD_FIELD: Final = 2804001  # a required event field missing or of the wrong type or value
TOO_OLD: Final = 2804003  # event_time older than max_age_s
IN_FUTURE: Final = 2804004  # event_time more than 7 days ahead
BAD_HASH: Final = 2804007  # a hashed user_data key that is not a lowercase SHA-256 hex digest
BAD_LEAD_ID: Final = 2804036  # lead_id not an integer of 15-17 digits, or deleted/unknown
NO_CUSTOMER_INFO: Final = 2804050  # user_data without any customer-information parameter
UNKNOWN_OBJECT: Final = 33  # pixel does not exist or the token may not use it

_TRACE_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Not the fault RNG: trace ids must not shift a seeded fault sequence.
_trace_rng = random.Random()


def new_fbtrace_id() -> str:
    """Return a fresh random 11-character trace id, shaped like Meta's."""
    return "".join(_trace_rng.choices(_TRACE_ALPHABET, k=11))


@dataclass(frozen=True, slots=True)
class GraphError:
    """One Graph API error answer: HTTP status, envelope fields and extra headers."""

    status: int
    code: int
    message: str
    type: str = "OAuthException"
    subcode: int | None = None
    transient: bool = False
    user_title: str | None = None
    user_msg: str | None = None
    blame: tuple[str, ...] | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def key(self) -> str:
        """The ``errors_by_code`` key: ``"100/2804036"``, or ``"190"`` without a subcode."""
        return f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)

    def envelope(self, fbtrace_id: str) -> dict[str, Any]:
        """The response body, ``{"error": {...}}``, in Meta's key order."""
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["is_transient"] = self.transient
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        if self.blame is not None:
            error["error_data"] = {"blame_field_specs": [list(self.blame)]}
        error["fbtrace_id"] = fbtrace_id
        return {"error": error}


def invalid(message: str, *, blame: tuple[str, ...] | None = None) -> GraphError:
    """A request-level invalid parameter (code 100, no subcode)."""
    return GraphError(400, 100, f"(#100) {message}", blame=blame)


def event_error(
    index: int, path: tuple[str, ...], subcode: int, title: str, detail: str
) -> GraphError:
    """A per-event rejection naming the event index and the field, Meta's "Invalid parameter"."""
    where = f"data[{index}]" + "".join(f".{part}" for part in path)
    return GraphError(
        400,
        100,
        f"Invalid parameter: {where} {detail}",
        subcode=subcode,
        user_title=title,
        user_msg=f"Event {index} ({where}) {detail}. The whole request was rejected; "
        "no event from it was processed.",
        blame=("data", str(index), *path),
    )


TOKEN_REJECTED: Final = GraphError(
    400,
    190,
    "Invalid OAuth access token - Cannot parse access token",
    headers=((b"www-authenticate", b'OAuth "Facebook Platform" "invalid_token"'),),
)
TOKEN_MISSING: Final = GraphError(
    400,
    104,
    "An access token is required to request this resource.",
    headers=((b"www-authenticate", b'OAuth "Facebook Platform" "invalid_request"'),),
)
PERMISSION: Final = GraphError(403, 200, "(#200) Permissions error")


def deprecated_version(latest: str) -> GraphError:
    """Graph's answer for an API version past its end (``leadrelay.meta.versions``)."""
    return GraphError(
        400,
        2635,
        "(#2635) You are calling a deprecated version of the Ads API. Please update to the "
        f"latest version: {latest}.",
    )


def unknown_path(path: str) -> GraphError:
    """Graph's answer for a path that is no object or edge of it (a graph_url that already
    holds a version, say: ``/v25.0/v25.0/<pixel>/events``)."""
    return GraphError(400, 2500, f"Unknown path components: {path}")


def unsupported_method(method: str) -> GraphError:
    """Graph's answer for the events edge asked with another method than POST."""
    return GraphError(
        400, 100, f"Unsupported {method.lower()} request.", type="GraphMethodException"
    )


def unknown_pixel(pixel_id: str) -> GraphError:
    """Graph's answer for an object that does not exist or may not be used (100/33)."""
    return GraphError(
        400,
        100,
        f"Unsupported post request. Object with ID '{pixel_id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation",
        type="GraphMethodException",
        subcode=UNKNOWN_OBJECT,
    )


def service_error(status: int) -> GraphError:
    """A temporary service error (code 2), transient."""
    return GraphError(
        status,
        2,
        "An unexpected error has occurred. Please retry your request later.",
        transient=True,
    )


_THROTTLES: Final = {
    4: GraphError(
        403,
        4,
        "(#4) Application request limit reached",
        transient=True,
        headers=((b"x-app-usage", b'{"call_count":100,"total_cputime":12,"total_time":15}'),),
    ),
    17: GraphError(403, 17, "(#17) User request limit reached", subcode=2446079, transient=True),
    32: GraphError(403, 32, "(#32) Page request limit reached", transient=True),
    613: GraphError(
        400,
        613,
        "(#613) Calls to this api have exceeded the rate limit.",
        subcode=1487742,  # the ordinary rate limit: without a subcode, 613 means abuse
        transient=True,
    ),
    80004: GraphError(
        400,
        80004,
        "(#80004) There have been too many calls to this ad-account. Wait a bit and try again.",
        subcode=2446079,
        transient=True,
    ),
}
THROTTLE_CODES: Final = frozenset(_THROTTLES)


def throttled(code: int = 4) -> GraphError:
    """A throttling answer for one of ``THROTTLE_CODES``."""
    return _THROTTLES[code]
