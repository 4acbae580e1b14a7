"""Test helper: a real ``leadrelay serve`` process, its config, and events to post to it.

The process runs ``python -m leadrelay serve`` once the CLI has the command, else the same
``serve()`` through ``python -c``. It logs JSON lines to stderr; the helper reads them in a thread
(so the pipe never fills), finds the port in the ``listening`` line, and keeps them for asserts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

INTAKE_TOKEN = "intake-token-0123456789abcdef"
PIXEL_ID = "123456789012345"
_START_TIMEOUT_S = 30.0


def write_config(
    path: Path,
    *,
    graph_url: str,
    data_dir: Path,
    access_token: str = "sandbox-token",
    server: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    pixel_id: str = PIXEL_ID,
) -> Path:
    """A config as a user would write it, pointing at the sandbox."""

    def table(name: str, values: dict[str, Any]) -> str:
        rows = "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in values.items())
        return f"\n[{name}]\n{rows}"

    text = (
        f'pixel_id = "{pixel_id}"\n'
        f'access_token = "{access_token}"\n'
        'lead_id = "{{facebook_lead_id}}"\n'
        'lead_event_source = "Test CRM"\n'
        f'graph_url = "{graph_url}"\n'
        + table("mapping", {"lead_qualified": "Marketing Qualified Lead"})
        + table(
            "server",
            {
                "intake_token": INTAKE_TOKEN,
                "data_dir": str(data_dir),
                "port": 0,
                **(server or {}),
            },
        )
        + table("delivery", delivery or {})
    )
    path.write_text(text, encoding="utf-8")
    return path


def event(n: int, *, prefix: str = "ev", now: float | None = None) -> dict[str, Any]:
    """A valid lead_qualified event with event id ``{prefix}-{n}``."""
    at = time.time() if now is None else now
    return {
        "event_name": "lead_qualified",
        "facebook_lead_id": str(120000000000000 + n),
        "context": {"event_id": f"{prefix}-{n}", "event_timestamp": int(at * 1000)},
        "user": {"email": f"user{n}@example.com"},
    }


def _command(config: Path, no_worker: bool) -> list[str]:
    from leadrelay.cli import app

    if any(
        c.name == "serve" or getattr(c.callback, "__name__", "") == "serve"
        for c in app.registered_commands
    ):
        return [
            sys.executable,
            "-m",
            "leadrelay",
            "serve",
            "--config",
            str(config),
            *(["--no-worker"] if no_worker else []),
        ]
    code = (
        "import sys; from pathlib import Path; from leadrelay.service.server import serve; "
        "sys.exit(serve(Path(sys.argv[1]), no_worker=sys.argv[2] == '1'))"
    )
    return [sys.executable, "-c", code, str(config), "1" if no_worker else "0"]


class ServiceProcess:
    """One ``serve`` process; ``url`` is set once it listens."""

    def __init__(self, config: Path, *, no_worker: bool = False) -> None:
        self.config = config
        self.no_worker = no_worker
        self.url = ""
        self.lines: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._http = httpx.Client(timeout=20.0)

    def start(self) -> ServiceProcess:
        """Start and wait until it listens."""
        env = {**os.environ, "LEADRELAY_LOG_FORMAT": "json"}
        self.lines = []
        self._proc = proc = subprocess.Popen(
            _command(self.config, self.no_worker),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()
        listening = self.wait_for_log(lambda e: e.get("event") == "listening", _START_TIMEOUT_S)
        self.url = listening["url"]
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (anything else is kept as ``{"raw": line}``)."""
        out = []
        for line in list(self.lines):
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                out.append({"raw": line})
        return out

    def wait_for_log(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.logs():
                if match(entry):
                    return entry
            if self._proc is not None and self._proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no such log line; the process logged:\n{''.join(self.lines)}")

    def post(
        self,
        body: Any,
        *,
        token: str | None = INTAKE_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST /v1/events; ``body`` is sent as is when bytes, else as JSON."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self._http.post(f"{self.url}/v1/events", content=content, headers=sent)

    def get(self, path: str) -> httpx.Response:
        return self._http.get(f"{self.url}{path}")

    def send_signal(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to end; its exit code (negative: killed by that signal)."""
        assert self._proc is not None
        code = self._proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """SIGKILL, and wait for it."""
        self.send_signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code. Kills it if it does not stop."""
        if self._proc is None or self._proc.poll() is not None:
            return self._proc.returncode if self._proc is not None else 0
        self.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def close(self) -> None:
        """Stop if still running and close the HTTP client."""
        try:
            if self._proc is not None and self._proc.poll() is None:
                self.stop()
        finally:
            self._http.close()


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``leadrelay *args``, its tables 200 columns wide."""
    return subprocess.run(
        [sys.executable, "-m", "leadrelay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
