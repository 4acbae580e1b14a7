"""GraphClient over TLS: an https graph_url, in any case, verifies the server's certificate.

A real TLS server on loopback with a self-signed certificate (made with the ``openssl`` command,
which CI installs): the client must refuse it, and the server must never see the request (the
access token stays home), unless the certificate is trusted through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from leadrelay.meta import client as client_module
from leadrelay.meta.client import GraphClient, GraphResult
from leadrelay.meta.errors import ErrorKind

TOKEN = "EAAB-secret-token-do-not-print"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is needed (Debian: apt-get install openssl)"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def fresh_tls_context() -> Iterator[None]:
    """The process's TLS context made again for the test (it reads SSL_CERT_FILE once)."""
    client_module._tls_context.cache_clear()
    yield
    client_module._tls_context.cache_clear()


def send_over_tls(scheme: str, cert: Path, key: Path) -> tuple[GraphResult, list[bytes]]:
    """Send one event to a TLS server on loopback, the graph_url starting with ``scheme``;
    returns the result and the request lines the server received."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head.split(b"\r\n")[0])
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            body = orjson.dumps({"events_received": 1, "messages": [], "fbtrace_id": "TlsOk"})
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client gave up on the handshake
        finally:
            writer.close()

    async def go() -> GraphResult:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = GraphClient(
                graph_url=f"{scheme}://127.0.0.1:{port}",
                api_version="v25.0",
                pixel_id="987654321012345",
                access_token=TOKEN,
                timeout=10.0,
            )
            async with client:
                return await client.send([b'{"event_name":"Raw Lead"}'])

    return asyncio.run(go()), seen


@pytest.mark.parametrize("scheme", ["https", "HTTPS", "Https"])
def test_an_untrusted_certificate_is_refused_whatever_the_scheme_case(
    scheme: str,
    certificate: tuple[Path, Path],
    fresh_tls_context: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    result, seen = send_over_tls(scheme, *certificate)
    assert not result.ok
    assert result.error is not None and result.error.kind is ErrorKind.TRANSIENT
    assert "certificate" in result.error.message.lower()
    assert seen == []  # no request, so no token, reached the server
    assert TOKEN not in result.error.message


def test_a_certificate_trusted_through_ssl_cert_file_is_accepted(
    certificate: tuple[Path, Path], fresh_tls_context: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    result, seen = send_over_tls("https", cert, key)
    assert result.ok and result.fbtrace_id == "TlsOk"
    assert seen == [b"POST /v25.0/987654321012345/events HTTP/1.1"]
