"""HTML form bodies (``application/x-www-form-urlencoded``), read with a size bound.

Starlette's ``request.form()`` needs python-multipart, which leadrelay does not depend on; the
dashboard's forms are small and urlencoded, so the standard library reads them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request


class FormError(ValueError):
    """The body is not a form we can read (too large, wrong type, not UTF-8)."""


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """The form fields (the last value of a repeated name wins); ``FormError`` when unusable."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError(f"expected a form (application/x-www-form-urlencoded), got {kind!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormError(f"the form is larger than {limit} bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("the form is not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))
