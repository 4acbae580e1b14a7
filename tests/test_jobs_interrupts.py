"""``send --jobs 2`` ended from outside: by Ctrl-C pressed twice, or by a mapping process killed.

Either way the send ends (130 for Ctrl-C, 1 with a message naming the dead process), and leaves
no process behind. Both used to hang: the second Ctrl-C cut the pool's shutdown short and the
exit then waited for workers that waited for work; a worker killed while it wrote its result
left the pool waiting for the rest of it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from leadrelay.sandbox import SandboxOptions, SandboxServer
from processes import descendants, parent
from processes import running as still_running
from sending import config

TOKEN = "sandbox-token-jobs-interrupts-01"
EVENTS = 200_000  # a run of a few seconds on two jobs: every signal lands mid-run
HANG = 60  # seconds after which a send that has not ended counts as hung


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.ndjson"
    ms = int((time.time() - 600) * 1000)
    with path.open("wb") as out:
        for i in range(EVENTS):
            event = {
                "event_name": "lead_qualified",
                "facebook_lead_id": 100000000000000 + i,
                "user": {"email": f"u{i}@example.com", "phone": "06 12 34 56 78"},
                "context": {"event_id": f"e{i}", "event_timestamp": ms},
            }
            out.write(orjson.dumps(event) + b"\n")
    return path


@contextlib.contextmanager
def send(tmp_path: Path, src: Path, *extra: str, url: str = "http://127.0.0.1:9") -> Iterator[Send]:
    """``leadrelay send src -j 2 *extra`` in its own process group, output to files; whatever
    is left of it killed afterwards if the test failed."""
    cfg = config(tmp_path, url, batch_size=500)
    command = ["send", str(src), "--config", str(cfg), "-j", "2", *extra]
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadrelay", *command],
            env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "250"},
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    running = Send(proc, out, err)
    try:
        yield running
    except BaseException:  # nothing left behind by a failure either (only then: pids get reused)
        for pid in {proc.pid, *running.below}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        raise


class Send:
    """A running send, and the processes below it once ``mapping`` has seen them."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err
        self.below: set[int] = set()

    def mapping(self, begun: float = 1 << 16) -> list[int]:
        """Wait until it has written ``begun`` bytes (mapping is under way); its workers."""
        deadline = time.time() + HANG
        while self.out.stat().st_size < begun and time.time() < deadline:
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.01)
        self.below = descendants(self.proc.pid)
        # The resource tracker and the fork server are the send's children, the workers the
        # fork server's.
        workers = sorted(p for p in self.below if parent(p) != self.proc.pid)
        assert len(workers) == 2, (self.below, workers)
        return workers

    def ends(self) -> tuple[int, str]:
        """Its exit code and what it said, once it has ended, and nothing it started runs on."""
        try:
            code = self.proc.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the send hung; stderr: {self.err.read_text()[-2000:]}")
        deadline = time.time() + 20
        while (alive := {p for p in self.below if still_running(p)}) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive, f"left running: {alive}"
        return code, " ".join(self.err.read_text().split())


@pytest.mark.parametrize("gap", [0.005, 0.02, 0.1], ids=["5ms", "20ms", "100ms"])
def test_ctrl_c_twice_ends_a_dry_run_with_two_jobs(
    tmp_path: Path, events_file: Path, gap: float
) -> None:
    """The second Ctrl-C lands while the first one shuts the mapping down: the send still ends
    as Ctrl-C ends it (130), at once, and its mapping processes with it."""
    with send(tmp_path, events_file, "--dry-run") as running:
        running.mapping()
        os.killpg(running.proc.pid, signal.SIGINT)
        time.sleep(gap)  # how far apart the two Ctrl-Cs are (not a wait for anything)
        with contextlib.suppress(ProcessLookupError):  # already ended
            os.killpg(running.proc.pid, signal.SIGINT)
        code, _ = running.ends()
    # 130, or ended by the second SIGINT itself when it lands as the process exits (before
    # main() is back): a shell shows 130 for both.
    assert code in (130, -signal.SIGINT)


def test_ctrl_c_twice_ends_a_send_with_two_jobs(tmp_path: Path, events_file: Path) -> None:
    """The same with a real send (mapping in a reader thread, delivery under way)."""
    options = SandboxOptions(access_tokens=frozenset({TOKEN}), slow_ms=50)
    with SandboxServer(options) as server, send(tmp_path, events_file, url=server.url) as running:
        deadline = time.time() + HANG
        while server.state.events_received < 1000 and time.time() < deadline:
            time.sleep(0.01)
        running.below = descendants(running.proc.pid)
        assert len(running.below) >= 4, running.below  # tracker, fork server, two workers
        os.killpg(running.proc.pid, signal.SIGINT)
        time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.proc.pid, signal.SIGINT)
        code, _ = running.ends()
    assert code == 130


def test_a_killed_mapping_process_ends_the_send_and_says_so(
    tmp_path: Path, events_file: Path
) -> None:
    with send(tmp_path, events_file, "--dry-run") as running:
        victim = running.mapping()[0]
        os.kill(victim, signal.SIGKILL)
        code, said = running.ends()
    assert code == 1
    assert f"mapping process {victim} was killed by SIGKILL; the send stopped" in said
    assert "Traceback" not in said  # one line that says it, not a stack


def test_a_mapping_process_killed_while_it_hands_its_result_over(
    tmp_path: Path, events_file: Path
) -> None:
    """Killed half-way through writing its result: the send no longer waits for the rest.

    The send is stopped (SIGSTOP) until a worker waits to write more of its result into the
    full pipe, which is when it is killed."""
    with send(tmp_path, events_file, "--dry-run") as running:
        workers = running.mapping()
        server = parent(workers[0])  # the fork server, waiting for requests
        if _wchan(server) in ("", "0"):
            running.proc.kill()
            running.ends()
            pytest.skip("no /proc/<pid>/wchan here to see a process blocked on a pipe")
        os.kill(running.proc.pid, signal.SIGSTOP)
        try:
            deadline = time.time() + HANG
            writing: list[int] = []
            while not writing and time.time() < deadline:
                writing = [w for w in workers if "pipe_write" in _wchan(w)]
                time.sleep(0.01)
            assert writing, {w: _wchan(w) for w in workers}
            os.kill(writing[0], signal.SIGKILL)
        finally:
            os.kill(running.proc.pid, signal.SIGCONT)
        code, said = running.ends()
    assert code == 1
    assert f"mapping process {writing[0]} was killed by SIGKILL; the send stopped" in said


def _wchan(pid: int) -> str:
    """Where in the kernel ``pid`` sleeps (``anon_pipe_write``, ``pipe_write``: blocked on a
    full pipe)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def test_a_ctrl_c_as_the_fork_server_starts_leaves_it_serving() -> None:
    """A terminal's Ctrl-C reaches the whole process group, the fork server of ``--jobs``
    included, also while Python starts in it: it waits there, and is then ignored (it ended the
    server with a traceback from its imports). The server lives on and forks workers."""
    code = (
        "import os, signal, sys, time\n"
        "from multiprocessing import forkserver\n"
        "from leadrelay.mapping import pool\n"
        "context = pool._context()\n"
        "forkserver.ensure_running()  # started by _context; here in any case\n"
        "server = forkserver._forkserver._forkserver_pid\n"
        "os.kill(server, signal.SIGINT)  # at once: Python is starting in it\n"
        "time.sleep(1.0)\n"
        "alive = os.waitpid(server, os.WNOHANG)[0] == 0\n"
        "worker = context.Process(target=sys.exit, args=(7,))\n"
        "worker.start()\n"
        "worker.join(30)\n"
        "print(alive, worker.exitcode)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=90)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["True", "7"]
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()


def test_a_send_whose_mapping_process_is_killed_says_what_it_did_before(
    tmp_path: Path, events_file: Path
) -> None:
    """A send (not a dry run) stopped by a killed mapping process said only that, and its
    report had a row for a few thousand of the events it had read: what it had delivered and
    queued went unsaid. It says what it did, with a row for each event read, then why it
    stopped."""
    report = tmp_path / "report.ndjson"
    with (
        SandboxServer(SandboxOptions(access_tokens=frozenset({TOKEN}))) as server,
        send(tmp_path, events_file, "--report", str(report), url=server.url) as running,
    ):
        deadline = time.time() + HANG
        while server.state.events_received < 5000 and time.time() < deadline:
            time.sleep(0.01)
        victim = running.mapping(begun=0)[0]
        os.kill(victim, signal.SIGKILL)
        code, said = running.ends()
    assert code == 1
    assert f"mapping process {victim} was killed by SIGKILL; the send stopped" in said
    assert "leadrelay delivery" in said  # the summary, before it
    read = int(re.search(r"│ read │ │ (\d+) │", said).group(1))  # type: ignore[union-attr]
    assert 5000 <= read < EVENTS
    rows = [orjson.loads(line) for line in report.read_bytes().splitlines()]
    assert len(rows) == read and len({r["event_id"] for r in rows}) == read
