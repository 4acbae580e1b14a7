"""The Conversions API endpoint, as one async call per batch that never raises for API trouble.

``GraphClient.send`` posts pre-encoded server events to ``/{version}/{pixel_id}/events`` and returns
a ``GraphResult``: either Meta's acknowledgement or a classified ``GraphError``. The access token
travels only in the ``Authorization`` header; it is kept out of URLs, reprs and error messages.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

# httpx imports its own command line when click is installed (it is: uvicorn needs it): click,
# pygments' lexers, rich's progress bar and tables, some 5% of the start-up of a send or a serve.
# Nothing here runs httpx's command line, so its module is marked missing before httpx loads,
# and httpx then defines the stub it has for that case. (No effect once httpx is loaded.)
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402
import orjson  # noqa: E402

from leadrelay import __version__  # noqa: E402
from leadrelay.meta.errors import GraphError, classify  # noqa: E402
from leadrelay.meta.tokens import sendable  # noqa: E402

_REDACTED: Final = "[access_token]"
_OPEN_BODY: Final = b'{"data":['

# httpcore imports sniffio on every request to tell asyncio from trio; when it is not installed,
# each attempt searches the whole import path again (a couple of microseconds per event sent).
# Recording the miss makes later attempts fail at once, and httpcore then assumes asyncio,
# exactly as it does after a slow miss.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class GraphResult:
    """Meta's answer to one request: ``ok`` with ``events_received``, or ``error``."""

    ok: bool
    events_received: int
    messages: list[str]
    fbtrace_id: str | None
    error: GraphError | None
    http_status: int | None


class GraphClient:
    """Posts batches of server events to one pixel (dataset), reusing connections."""

    def __init__(
        self,
        *,
        graph_url: str,
        api_version: str,
        pixel_id: str,
        access_token: str,
        test_event_code: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 8,
    ) -> None:
        if not pixel_id or "/" in pixel_id or "?" in pixel_id:
            raise ValueError(f"pixel_id must be the dataset's numeric id, got {pixel_id!r}")
        if not api_version or "/" in api_version:
            raise ValueError(f"api_version must look like 'v25.0', got {api_version!r}")
        # Checked here so that httpx never gets to build (and quote) a header with the token.
        if not sendable(access_token):
            raise ValueError("access_token is empty or contains spaces or non-ASCII characters")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections!r}")
        self.url: Final = f"{graph_url.rstrip('/')}/{api_version}/{pixel_id}/events"
        self.test_event_code: Final = test_event_code
        self._token = access_token
        self._token_bytes = access_token.encode()
        self._tail = (  # what follows the events
            b"]}"
            if test_event_code is None
            else b'],"test_event_code":' + orjson.dumps(test_event_code) + b"}"
        )
        self._http = httpx.AsyncClient(
            transport=transport,
            # Plain HTTP (the sandbox on loopback) opens no TLS connection, and redirects are
            # not followed: no context to make for it (loading the CA bundle is ~20 ms). The
            # scheme as httpx reads it (any case): anything else verifies.
            verify=False if httpx.URL(self.url).scheme == "http" else _tls_context(),
            # On the client, not per request: httpx shows the token masked, a dict would not.
            headers={
                "Authorization": f"Bearer {access_token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"leadrelay/{__version__}",
            },
            # Meta answers in well under a second; the connect timeout is kept short so an
            # unreachable endpoint is reported quickly rather than after the full read timeout.
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"GraphClient(url={self.url!r}, test_event_code={self.test_event_code!r})"

    def body(self, events: Sequence[bytes]) -> bytes:
        """The request body for ``events`` (each an orjson-encoded server event)."""
        if not events:
            return _OPEN_BODY + self._tail
        # One join, so the megabyte of a full batch is copied once (not once per concatenation).
        parts = list(events)
        parts[0] = _OPEN_BODY + parts[0]
        parts[-1] += self._tail
        return b",".join(parts)

    async def send(self, events: Sequence[bytes]) -> GraphResult:
        """Send one batch. Graph, HTTP and network failures come back as ``result.error``."""
        body = _Released(self.body(events))
        try:
            response = await self._http.post(self.url, content=body, headers=body.headers)
        except (httpx.HTTPError, OSError) as exc:
            return self._failed(None, classify(None, None, exc=exc))
        finally:
            body.release()
        content = response.content
        if self._token_bytes in content:
            # Out of the answer before anything reads it: an error's text is cut to a length,
            # and a token cut in two would no longer be found to be taken out.
            content = content.replace(self._token_bytes, _REDACTED.encode())
        try:
            parsed: Any = orjson.loads(content) if content else None
        except orjson.JSONDecodeError:
            parsed = content
        else:
            if b"\\" in content:  # JSON escapes (\u0045...) may spell the token: out of the text
                parsed = self._scrub_all(parsed)
        if response.is_success and isinstance(parsed, dict) and "error" not in parsed:
            received = parsed.get("events_received")
            messages = parsed.get("messages")
            trace = parsed.get("fbtrace_id")
            return GraphResult(
                ok=True,
                events_received=received if isinstance(received, int) else 0,
                messages=[str(m) for m in messages]  # the token was taken out of content
                if isinstance(messages, list)
                else [],
                fbtrace_id=trace if isinstance(trace, str) else None,
                error=None,
                http_status=response.status_code,
            )
        error = classify(response.status_code, parsed, headers=response.headers)
        return self._failed(response.status_code, error)

    def _failed(self, status: int | None, error: GraphError) -> GraphResult:
        error = dataclasses.replace(
            error,
            message=self._scrub(error.message),
            user_title=None if error.user_title is None else self._scrub(error.user_title),
        )
        return GraphResult(
            ok=False,
            events_received=0,
            messages=[],
            fbtrace_id=error.fbtrace_id,
            error=error,
            http_status=status,
        )

    def _scrub(self, text: str) -> str:
        # Meta (or a proxy) may echo the request back; the token must not reach logs or reports.
        return text.replace(self._token, _REDACTED) if self._token in text else text

    def _scrub_all(self, value: Any) -> Any:
        """``value`` (parsed JSON) with the token taken out of every text in it, keys too."""
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list):
            return [self._scrub_all(item) for item in value]
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub_all(v) for k, v in value.items()}
        return value

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context of every client in the process, made as httpx makes it (its
    CA bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``) once: a ``send`` made two clients, and
    ``serve`` one per config reload, ~20 ms each. So the CA certificates are read once per
    process, as its environment is: a bundle changed while ``serve`` runs is read at its next
    start. Shared safely: httpcore sets the same ALPN protocols on it for every connection
    (HTTP/1.1 only, for every client)."""
    return httpx.create_ssl_context()


class _Released:
    """A request body given to httpx as a stream, whose bytes are let go once the request ended.

    httpx keeps a request's bytes on the request, and its requests and responses form reference
    cycles: each sent megabyte stayed alive until the next full garbage collection, dozens of
    them at once in a long send (peak memory 100-180 MB from run to run). As a stream with its
    Content-Length, the same bytes go out, and ``release`` frees them when ``send`` is done
    (not on the first read: a request httpx sent again would go out whole).
    """

    __slots__ = ("_body", "headers")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.headers = {"Content-Length": str(len(body))}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._body

    def release(self) -> None:
        self._body = b""
