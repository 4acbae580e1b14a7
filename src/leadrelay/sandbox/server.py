"""Running the sandbox: ``SandboxServer`` (a background thread, for tests, demo and benchmarks)
and ``serve_forever`` (foreground, for the ``leadrelay sandbox`` command)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from leadrelay.sandbox.app import TRANSPORT_KEY, create_app
from leadrelay.sandbox.options import SandboxOptions
from leadrelay.sandbox.state import RequestRecord, SandboxState

_START_TIMEOUT_S = 10.0


class _TransportInScope(asyncio.Protocol):
    """Puts the connection's transport into each request scope so the app can drop it."""

    app: ASGIApp

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        inner = self.app

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope[TRANSPORT_KEY] = transport
            await inner(scope, receive, send)

        self.app = app


# Whatever uvicorn picked (httptools when installed, else h11), with the transport in the scope.
_PROTOCOL: type[asyncio.Protocol] = type(
    "SandboxHTTPProtocol", (_TransportInScope, AutoHTTPProtocol), {}
)


class _Server(uvicorn.Server):
    """Wakes sleeping requests (``slow``, ``timeout``) at shutdown so stopping stays quick."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stopping.set()
        await super().shutdown(sockets)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0) or asyncio leaves Nagle on for accepted connections,
    # and every answer (headers, then body) waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _server(app: Starlette, log_level: str = "warning") -> _Server:
    config = uvicorn.Config(
        app,
        log_config=None,  # leave the host process's logging alone
        log_level=log_level,
        access_log=False,
        lifespan="off",
        http=_PROTOCOL,
        timeout_graceful_shutdown=2,
    )
    return _Server(config, app.state.sandbox_stopping)


class SandboxServer:
    """The sandbox on 127.0.0.1 in a background thread, as a context manager.

    ``url`` is the Graph base URL (``http://127.0.0.1:53211``); clients append
    ``/{version}/{pixel_id}/events``. Entering returns once the port accepts connections;
    leaving stops the server within a second or two, waking requests that are still sleeping.
    """

    def __init__(
        self, options: SandboxOptions | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.options = options or SandboxOptions()
        self.app = create_app(self.options)
        self.state: SandboxState = self.app.state.sandbox
        self.url = ""
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bind, start the server thread and wait until it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("this SandboxServer is already running")
        sock = _bind(self._host, self._port)
        port = sock.getsockname()[1]
        self.app.state.sandbox_stopping.clear()  # a stopped server may be started again
        server = _server(self.app)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox:{port}", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"the sandbox did not start on {self._host}:{port}")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop the server and wait for its thread; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.app.state.sandbox_stopping.set()
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        self._server = self._thread = None


def format_record(record: RequestRecord) -> str:
    """One log line: UTC time, pixel, status, events and error code (never the token)."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.at))
    status: Any = record.status or "dropped"
    events = "-" if record.events is None else record.events
    return (
        f"{at} POST pixel={record.pixel_id} status={status} events={events} "
        f"error={record.error or '-'}"
    )


def serve_forever(options: SandboxOptions, *, host: str, port: int) -> None:
    """Run the sandbox in the foreground, one log line per request on stdout; Ctrl-C stops it."""
    app = create_app(options)
    state: SandboxState = app.state.sandbox

    def log(record: RequestRecord) -> None:
        sys.stdout.write(format_record(record) + "\n")
        sys.stdout.flush()

    state.log = log
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"leadrelay sandbox on http://{shown}:{sock.getsockname()[1]} "
        f"(POST /<version>/<pixel_id>/events; status page /_sandbox). Ctrl-C stops.",
        flush=True,
    )
    # uvicorn re-raises the Ctrl-C it has already handled gracefully.
    with contextlib.suppress(KeyboardInterrupt):
        _server(app).run(sockets=[sock])
