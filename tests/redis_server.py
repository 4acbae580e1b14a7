"""Test helper: a real ``redis-server`` on a free 127.0.0.1 port, in a temporary directory.

``running_redis(dir)`` starts one (with its append-only file, as leadrelay requires, and no RDB
snapshots: the tests kill clients, never the server),
waits until it answers PING, yields its URL and kills it at the end. Without ``redis-server`` on
PATH the tests are skipped locally, but fail in CI (``CI=true``): CI must install it
(Debian: ``apt-get install -y redis-server``).

Tests get one through the session fixture ``redis_url`` of conftest.py (started on first use,
shared by the store tests, which flush it per test). A module that needs a server of its own
(test_fleet.py: one with a password) defines a ``redis_url`` fixture of its own, which wins.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

_START_TIMEOUT_S = 10.0


def redis_server_binary() -> str:
    """The ``redis-server`` to run; skips the test locally, fails it in CI, when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    message = (
        "redis-server is not on PATH; the Redis store tests need a real one "
        "(Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


_BUS_OFFSET = 10_000  # a cluster node also listens on its port + 10000 (at most 65535)


def _free_port(cluster: bool = False) -> int:
    """A free port; for a cluster node one whose bus port (+10000) exists and is free too (the
    kernel's pick, up to 60999, was above 55535 about one time in five: redis refused it)."""
    if not cluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20_000, 65_535 - _BUS_OFFSET)
        if _bindable(port) and _bindable(port + _BUS_OFFSET):
            return port
    raise RuntimeError("no free port for a redis cluster node and its bus")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _start(binary: str, directory: Path, cluster: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port(cluster)
    log = directory / f"redis-{port}.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    args += ["--save", "", "--appendonly", "yes", "--daemonize", "no", "--logfile", str(log)]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + _START_TIMEOUT_S
    try:
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping() and (not cluster or _serve_all_slots(client)):
                    return server, url
            except redis.ConnectionError:
                pass
            time.sleep(0.02)
    finally:
        client.close()
    server.kill()
    server.wait()
    err = server.stderr.read().decode() if server.stderr else ""
    text = log.read_text() if log.exists() else ""
    raise RuntimeError(f"redis-server did not start on port {port}: {err}{text[-2000:]}")


def _serve_all_slots(client: redis.Redis) -> bool:
    """Make a cluster-mode node a one-node cluster; True once the cluster is up."""
    info = client.execute_command("CLUSTER", "INFO").decode()
    if "cluster_slots_assigned:0" in info:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    return "cluster_state:ok" in info


@contextmanager
def running_redis(directory: Path, *, cluster: bool = False) -> Iterator[str]:
    """Run a redis-server in ``directory`` for the duration of the block; yields its URL.

    With ``cluster``, the server runs in cluster mode as a one-node cluster holding every slot
    (connect with ``redis.cluster.RedisCluster``)."""
    binary = redis_server_binary()
    last: RuntimeError | None = None
    for _ in range(3):  # the free port may be taken between picking and binding it
        try:
            server, url = _start(binary, directory, cluster)
            break
        except RuntimeError as exc:
            last = exc
    else:
        assert last is not None
        raise last
    try:
        yield url
    finally:
        server.kill()
        server.wait()
        if server.stderr:
            server.stderr.close()
