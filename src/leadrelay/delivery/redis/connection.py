"""The Redis connection under ``RedisStore``: opening checks, error wrapping, closing.

Opening checks that Redis answers, that it may not evict our keys, that it keeps an append-only
file where events are to be stored (unless told not to: ``require_aof``), that the store's
schema is one this version reads, and creates the consumer group. Every Redis error comes out as
a ``StoreError`` that names the server (never its password).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import redis
import structlog
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from leadrelay.delivery.redis import lua_settle
from leadrelay.delivery.redis.lua_common import SCHEMA_VERSION as SCHEMA_VERSION
from leadrelay.delivery.redis.records import Value
from leadrelay.delivery.store import StoreError

log = structlog.get_logger("leadrelay.store")

Arg = Value | int
Client = redis.Redis | RedisCluster


def default_consumer() -> str:
    """A consumer name unique per running process: ``hostname-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _shown(url: str) -> str:
    """The URL without its secrets, for messages (see ``_secrets``): the userinfo's password,
    all of the userinfo when it has no ``:`` (``redis://pw@host``: the password alone), and a
    password given as a query parameter (``?password=pw``, which redis-py takes too). Read as
    text, not parsed: a password may hold ``/``, ``#`` or ``?`` that no parser reads as meant."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{host}" if colon else f"***@{host}"
    return _QUERY_SECRET.sub(r"\1\2=***", scheme + sep + rest)


def _secrets(url: str) -> list[str]:
    """What ``_shown`` hides of ``url``, and the pieces of it between ``/``, ``#`` and ``?``
    (a parser that stops at one of them quotes the piece before it), longest first."""
    found = [m.group(3) for m in _QUERY_SECRET.finditer(url)]
    _, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo = rest.rpartition("@")[0]
        _, colon, password = userinfo.partition(":")
        found.append(password if colon else userinfo)
    pieces = {piece for secret in found for piece in re.split(r"[/#?]", secret) if len(piece) > 2}
    return sorted({*found, *pieces} - {""}, key=len, reverse=True)


def _scrubbed(text: str, url: str) -> str:
    """``text`` (a client library's error about ``url``) without what ``_shown`` hides."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


_NO_AOF: Final = (
    "the Redis at {where} keeps no append-only file (appendonly no): the events it holds would "
    "be lost if it stopped before they were delivered (with RDB snapshots, all those since the "
    "last one); turn the AOF on (CONFIG SET appendonly yes, and appendonly yes in redis.conf), "
    "or set require_aof = false in [queue] to accept that risk (a managed Redis that "
    "replicates instead, such as ElastiCache)"
)

_QUERY_SECRET: Final = re.compile(
    r"([?&])(password|pass|passwd|auth|token)=([^&#]*)", re.IGNORECASE
)


class RedisConnection:
    """A connection to the store of one deployment: keys under ``{prefix}:``, one consumer."""

    def __init__(
        self,
        url_or_client: str | Client,
        *,
        prefix: str,
        consumer: str | None,
        group: str,
        socket_timeout_s: float,
        cluster: bool = False,
        create: bool = True,
        require_aof: bool = True,
    ) -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError(f"prefix must be non-empty and without braces, got {prefix!r}")
        self.consumer = consumer or default_consumer()
        self.group = group
        self._p = "{" + prefix + "}:"
        self.stream_key = self._p + "q"
        self._owned = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self.where = _shown(url_or_client)
            options = {
                "socket_timeout": socket_timeout_s,
                "socket_connect_timeout": socket_timeout_s,
            }
            try:
                self._r: Client = (
                    RedisCluster.from_url(url_or_client, **options)
                    if cluster
                    else redis.Redis.from_url(url_or_client, health_check_interval=30, **options)
                )
            except ValueError as exc:
                raise StoreError(
                    f"invalid Redis URL {self.where}: {_scrubbed(str(exc), url_or_client)} "
                    "(percent-encode /, #, ? and @ in a password: %2F, %23, %3F, %40)"
                ) from None
            except (redis.RedisError, RedisClusterException) as exc:  # cluster: connects now
                raise StoreError(
                    f"the Redis event store at {self.where}: "
                    f"{_scrubbed(_shown(str(exc)), url_or_client)}"
                ) from None
        else:
            self._r = url_or_client
            self.where = "a Redis client"
        self._closed = False
        self._leave = self._r.register_script(lua_settle.LEAVE)
        try:
            self._open(create, require_aof)
        except BaseException:
            if self._owned:
                self._r.close()
            raise

    def _open(self, create: bool, require_aof: bool) -> None:
        with self._calling():
            info = self._r.info("memory")
            policy = str(info.get("maxmemory_policy", "noeviction"))
            if policy.startswith("allkeys"):
                raise StoreError(
                    f"the Redis at {self.where} has maxmemory-policy {policy}: it may evict "
                    "queued events; set maxmemory-policy to noeviction"
                )
            # Only where events are stored: reading what is there (status) risks nothing.
            if create and not int(self._r.info("persistence").get("aof_enabled", 0)):
                if require_aof:
                    raise StoreError(_NO_AOF.format(where=self.where))
                log.warning(
                    "Redis keeps no append-only file: the events it holds are lost if it stops "
                    "(require_aof = false)",
                    redis=self.where,
                )
            meta = self._p + "meta"
            if not create and not self._r.exists(meta):
                raise StoreError(
                    f"no event store under {self._p} at {self.where}: nothing has been sent or "
                    "served with this config yet (queue.url and the key prefix say where it is)"
                )
            self._r.hsetnx(meta, "schema", SCHEMA_VERSION)
            version = int(self._r.hget(meta, "schema") or 0)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the Redis store {self._p} at {self.where} has schema version {version}, "
                    f"newer than this leadrelay supports ({SCHEMA_VERSION}); upgrade leadrelay"
                )
            try:
                self._r.xgroup_create(self.stream_key, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @contextmanager
    def _calling(self) -> Iterator[None]:
        if self._closed:
            raise StoreError(f"the Redis event store at {self.where} is closed")
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(f"the Redis event store at {self.where}: {exc}") from exc

    def _run(self, script: Any, args: Sequence[Arg]) -> Any:
        with self._calling():
            return script(keys=[self.stream_key], args=[self._p, *args])

    def close(self) -> None:
        """See ``Store.close``: leaves the consumer group if nothing is held, closes the
        connections it opened. Closing twice is harmless."""
        if self._closed:
            return
        try:
            self._run(self._leave, [self.group, self.consumer])
        except StoreError:
            pass  # Redis is gone: nothing to tidy up
        finally:
            self._closed = True
            if self._owned:
                self._r.close()
