"""Graph requests and answers at the ASGI level: body, token, and the body shapes Meta takes."""

from __future__ import annotations

import email.parser
import email.policy
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send

from leadrelay.sandbox import errors
from leadrelay.sandbox.errors import GraphError

_JSON: Final = (b"content-type", b"application/json; charset=UTF-8")


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(
    send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer with an already encoded JSON body."""
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def content_type_and_bearer(scope: Scope) -> tuple[bytes, str | None]:
    """The raw Content-Type and the token of an ``Authorization: Bearer`` (or ``OAuth``) header."""
    content_type = b""
    bearer = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() in ("bearer", "oauth") and credentials.strip():
                bearer = credentials.strip()
    return content_type, bearer


def query_token(scope: Scope) -> str | None:
    """The ``access_token`` query parameter, if any."""
    query: bytes = scope["query_string"]
    if b"access_token" not in query:
        return None
    return dict(parse_qsl(query.decode("latin-1"))).get("access_token")


def parse_body(body: bytes, content_type: bytes) -> dict[str, Any] | GraphError:
    """The top-level parameters: a JSON object, or a urlencoded or multipart form (values as
    strings, ``data`` still JSON text). An empty body is no parameters; anything else is 100."""
    media = content_type.partition(b";")[0].strip().lower()
    try:
        if media == b"application/x-www-form-urlencoded":
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        if media == b"multipart/form-data":
            return parse_multipart(body, content_type)
        if not body or body.isspace():
            return {}
        parsed = orjson.loads(body)
    except (UnicodeDecodeError, orjson.JSONDecodeError, ValueError) as exc:
        return errors.invalid(f"The request body could not be read as JSON or a form: {exc}")
    if type(parsed) is not dict:
        return errors.invalid('The request body must be a JSON object like {"data": [...]}')
    return parsed


def parse_multipart(body: bytes, content_type: bytes) -> dict[str, Any]:
    """The fields of a ``multipart/form-data`` body (what ``curl -F`` sends), by the stdlib."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type + b"\r\n\r\n" + body
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode()
    return fields
