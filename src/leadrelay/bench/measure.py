"""Running a command as a measured, CPU-pinned process: wall time, CPU time, peak memory, output.

Throughput is measured on whole processes, start-up included, as users run them. A child is
pinned to its cores before it starts (``sched_setaffinity`` in the child, Linux), so two
programs compared on "one core" really get one core each, the same one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Run:
    """What one measured process did."""

    wall_s: float
    cpu_s: float  # user + system time of the process itself
    peak_rss_mb: float
    returncode: int
    stderr: str


def can_pin() -> bool:
    """True where processes can be pinned to cores (Linux)."""
    return hasattr(os, "sched_setaffinity")


def usable_cores() -> list[int]:
    """The cores this process may run on, in order."""
    if can_pin():
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def start(
    command: Sequence[str],
    *,
    cores: Sequence[int] | None,
    stdout: int | IO[bytes] | None,
    stderr: int | IO[bytes] | None = subprocess.PIPE,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` pinned to ``cores`` (not pinned when None or where pinning is missing).

    Pinned right after it is created (a preexec_fn is unsafe with threads running): the first
    milliseconds of its start-up may run elsewhere, which is immaterial here.
    """
    process = subprocess.Popen(
        list(command), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=cwd
    )
    if cores and can_pin():
        # ProcessLookupError: it has already exited, nothing left to pin.
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(process.pid, set(cores))
    return process


def measure(
    command: Sequence[str],
    *,
    cores: Sequence[int] | None,
    consume: Callable[[bytes], None] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    """Run ``command`` to the end; ``consume`` gets its stdout in pieces (discarded otherwise).

    The clock starts just before the process is created and stops when it has exited; CPU time
    comes from the kernel's accounting of that process. Peak memory too where that can only be
    the program's (see ``peak_rss_mb``); else it is the program's own high-water mark as last
    read while it ran (every 10 ms): what it adds in its last moments may be missed.
    """
    began = time.perf_counter()
    process = start(command, cores=cores, stdout=subprocess.PIPE, env=env, cwd=cwd)
    out, err = process.stdout, process.stderr
    assert out is not None and err is not None
    try:
        # What the program writes should not wait on this process reading it, as it would not
        # writing to a file: a pipe buffer of 1 MB (not 64 KB: 16 times fewer waits for the
        # reader to wake up), read on other cores than the program's where there are some.
        _widen(out.fileno())
        with _elsewhere(cores):
            return _finish(process, out, err, consume, began)
    except BaseException:
        process.kill()  # a failed measurement leaves no process behind
        process.wait()
        raise
    finally:
        out.close()
        err.close()


def _finish(
    process: subprocess.Popen[bytes],
    out: IO[bytes],
    err: IO[bytes],
    consume: Callable[[bytes], None] | None,
    began: float,
) -> Run:
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(err.read()), daemon=True)
    drain.start()
    peak = _Peak(process.pid)
    peak.start()
    try:
        while chunk := out.read1(1 << 20):  # type: ignore[attr-defined]
            if consume is not None:
                consume(chunk)
        if hasattr(os, "waitid"):  # not on macOS, which has no /proc to read either
            # Exited, not reaped yet: its pid cannot have been given to another process.
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    finally:
        peak.stop()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    drain.join()
    # ru_maxrss may be ours (see peak_rss_mb): only above our own high-water mark, which only
    # grows, can it be the program's alone.
    floor = peak_rss_mb(os.getpid())
    maxrss = usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1024)  # bytes there
    return Run(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=maxrss if floor is None or maxrss > floor or peak.mb is None else peak.mb,
        returncode=process.returncode,
        stderr=b"".join(errors).decode("utf-8", "replace"),
    )


def peak_rss_mb(pid: int) -> float | None:
    """The process's own peak memory so far (``VmHWM``, Linux), None where unknown.

    Not ``ru_maxrss`` from ``wait4``: a child started while the harness held much memory reports
    the harness's high-water mark from before its ``exec`` (the harness's 72 MB for any program).
    """
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return None


class _Peak(threading.Thread):
    """Reads a running process's high-water mark every ``every_s`` until stopped: the last read
    is its peak but for what it might add in its last moments (a high-water mark only grows)."""

    def __init__(self, pid: int, every_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._every_s = every_s
        self._done = threading.Event()
        self.mb: float | None = None

    def run(self) -> None:
        while True:
            mb = peak_rss_mb(self._pid)
            if mb is not None:  # None once the process has ended: the last read stands
                self.mb = mb
            if self._done.wait(self._every_s):
                return

    def stop(self) -> None:
        """Stop reading (call it before the process is reaped) and wait for the last read."""
        self._done.set()
        self.join()


def _widen(fd: int) -> None:
    """Ask for a 1 MB pipe buffer (Linux; the most an unprivileged process gets by default)."""
    size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if size is not None:
        with contextlib.suppress(OSError):  # refused (a lower pipe-max-size): keep 64 KB
            fcntl.fcntl(fd, size, 1 << 20)


@contextlib.contextmanager
def _elsewhere(cores: Sequence[int] | None) -> Iterator[None]:
    """The calling thread, and the threads it starts meanwhile, on the usable cores other than
    ``cores`` while the block runs, if there are any (affinity is per thread on Linux)."""
    others = set(usable_cores()) - set(cores or ())
    if not (cores and others and can_pin()):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, others)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Counter:
    """Counts occurrences of a marker in a byte stream handed over in arbitrary pieces."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.count = 0
        self.bytes = 0
        self._tail = b""

    def __call__(self, chunk: bytes) -> None:
        data = self._tail + chunk
        self.count += data.count(self.marker)
        self.bytes += len(chunk)
        # What could be the start of a marker cut in two is kept for the next piece.
        # Keeping fewer bytes than the marker has, none can be counted twice.
        keep = len(self.marker) - 1
        self._tail = data[-keep:] if keep else b""


def ratio(rate: float | None, baseline: float | None) -> float | None:
    """``rate`` over ``baseline`` (events per second), to two decimals; None without both."""
    return round(float(rate) / float(baseline), 2) if rate and baseline else None
