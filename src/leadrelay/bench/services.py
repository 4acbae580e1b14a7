"""Long-running processes for the service measurements: ``serve``, the sandbox, redis-server.

Each is started pinned (``measure.start``), logs to a file in the work folder, and is waited for
until it accepts connections. ``stop`` ends one with SIGTERM (as users stop them) and returns the
kernel's accounting of it: CPU time and peak memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from leadrelay.bench.measure import peak_rss_mb, start

INTAKE_TOKEN: Final = "bench-intake-token-0123456789"
REDIS_HINT: Final = (
    "redis-server is not on PATH; install it (Debian/Ubuntu: apt-get install -y redis-server; "
    "macOS: brew install redis)"
)
_START_TIMEOUT_S: Final = 30.0
_STOP_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Ended:
    """How a stopped process ended: exit code and CPU time from ``wait4``, peak memory."""

    returncode: int
    cpu_s: float
    peak_rss_mb: float


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Return once ``port`` accepts connections; raise when ``process`` exits or times out."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text("utf-8", "replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} exited with code {process.returncode}: {tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not accept connections on port {port}")


def launch(
    command: Sequence[str], *, cores: Sequence[int] | None, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``command`` pinned to ``cores``, its output appended to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return start(
            command,
            cores=cores,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LEADRELAY_LOG_FORMAT": "json"},
        )


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a running process has used so far (Linux), None where unknown.

    Read before and after a phase, it is the phase's cost without the process's start-up.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> Ended:
    """Stop ``process`` (``sig``, SIGKILL if it lingers) and reap it with its usage."""
    peak = peak_rss_mb(process.pid) if process.returncode is None else None
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                rss = usage.ru_maxrss / 1024 if peak is None else peak
                return Ended(process.returncode, usage.ru_utime + usage.ru_stime, rss)
            time.sleep(0.02)
        process.kill()
    process.wait()
    return Ended(process.returncode, 0.0, 0.0)


def serve_command(config: Path) -> list[str]:
    """``leadrelay serve --no-worker`` for ``config``: intake only."""
    return [sys.executable, "-m", "leadrelay", "serve", "--config", str(config), "--no-worker"]


def start_sandbox(
    folder: Path, core: int, *, slow_ms: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    """The sandbox (Meta's stand-in) on ``core``; returns the process and its URL."""
    port = free_port()
    log = folder / f"sandbox-{port}.log"
    command = [sys.executable, "-m", "leadrelay", "sandbox", "--port", str(port)]
    process = launch([*command, "--slow-ms", str(slow_ms)], cores=[core], log=log)
    try:
        wait_for_port(port, process, "the sandbox", log)
    except RuntimeError:
        stop(process, signal.SIGKILL)
        raise
    return process, f"http://127.0.0.1:{port}"


def sandbox_received(url: str) -> int:
    """How many events the sandbox accepted so far."""
    answer = httpx.get(f"{url}/_sandbox/received?limit=0", timeout=30).json()
    return int(answer["events_received"])


def redis_binary() -> str | None:
    """The ``redis-server`` on PATH, if any."""
    return shutil.which("redis-server")


def start_redis(binary: str, folder: Path, core: int) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on a free 127.0.0.1 port, its append-only file on (fsync every second, as
    docs/redis.md asks of users), no RDB snapshots; returns it and its URL."""
    port = free_port()
    log = folder / f"redis-{port}.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    args += ["--save", "", "--appendonly", "yes", "--daemonize", "no", "--logfile", str(log)]
    process = start(args, cores=[core], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, "redis-server", log)
    except RuntimeError:
        stop(process, signal.SIGKILL)
        raise
    return process, f"redis://127.0.0.1:{port}/0"
