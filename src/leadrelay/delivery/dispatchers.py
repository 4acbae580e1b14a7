"""The delivery worker's dispatchers: the current one, and the old ones batches still use.

Split out of ``worker`` (house rule: modules under ~300 lines). A reloaded config swaps in a
fresh dispatcher (``swap``) while batches of the old one are still in flight: each batch holds
its dispatcher (``hold`` / ``release``) and a dispatcher's Graph client is closed once it is no
longer current and no batch holds it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import structlog

from leadrelay.delivery.dispatcher import Dispatcher
from leadrelay.meta.errors import GraphError, settings_to_check

log = structlog.get_logger("leadrelay.worker")


def pause_advice(error: GraphError) -> str:
    """What a paused delivery means and what to do about it, for logs and ``/readyz``."""
    return (
        f"Meta refused the requests ({error.label()}): {error.message}. Events are still "
        "accepted and kept queued, up to server.max_backlog waiting (then refused with 503). "
        f"Fix {settings_to_check(error)} in the config, then reload it (SIGHUP: kill -HUP "
        "<pid>) or restart leadrelay (a value given as ${VAR} is read from the environment "
        "when leadrelay starts: a reload keeps it)."
    )


def stop_advice(error: GraphError) -> str:
    """``pause_advice`` for a send or deliver, which stops where a service pauses."""
    return (
        f"Meta refused the requests ({error.label()}): {error.message}. Delivery stops; what was "
        f"read and not sent is stored, queued. Fix {settings_to_check(error)} in the config, "
        "then run it again."
    )


class Dispatchers:
    """The current dispatcher (``current``, None between runs) and the clients to close.

    ``factory`` builds a dispatcher (and its ``GraphClient``); it is called here, so a bad
    config fails early.
    """

    def __init__(
        self,
        factory: Callable[[], Dispatcher],
        advice: Callable[[GraphError], str] = pause_advice,
    ) -> None:
        self._factory = factory
        self._advice = advice
        self.current: Dispatcher | None = factory()
        self._users: Counter[Dispatcher] = Counter()
        self._closing: set[asyncio.Task[None]] = set()
        self._reported: Dispatcher | None = None

    def ensure(self) -> None:
        """A dispatcher for a new run, if the last run closed its own."""
        if self.current is None:
            self.current = self._factory()

    def swap(self) -> Dispatcher | None:
        """Make a fresh dispatcher current; returns the old one (closed unless in use).
        Raises what the factory raises, leaving the current dispatcher in place."""
        fresh = self._factory()
        old, self.current = self.current, fresh
        self._reported = None
        if old is not None and not self._users[old]:
            self._retire(old)
        return old

    def hold(self) -> Dispatcher:
        """The current dispatcher, for a batch (``release`` it when the batch is done)."""
        dispatcher = self.current
        assert dispatcher is not None
        self._users[dispatcher] += 1
        return dispatcher

    def release(self, dispatcher: Dispatcher) -> None:
        """A batch is done with ``dispatcher``: close its client if nothing else uses it."""
        self._users[dispatcher] -= 1
        if not self._users[dispatcher]:
            del self._users[dispatcher]
            if dispatcher is not self.current:
                self._retire(dispatcher)

    def report_pause(self, dispatcher: Dispatcher) -> None:
        """Log once that the current dispatcher paused (Meta refused the token)."""
        if dispatcher is not self.current or self._reported is dispatcher:
            return
        error = dispatcher.paused
        if error is None:
            return
        self._reported = dispatcher
        log.error(
            "delivery paused",
            code=error.code,
            subcode=error.subcode,
            fbtrace_id=error.fbtrace_id,
            advice=self._advice(error),
        )

    async def close(self) -> None:
        """Close the current dispatcher's client and wait for every client being closed."""
        if self.current is not None:
            self._retire(self.current)
            self.current = None
        if self._closing:
            await asyncio.wait(list(self._closing))

    def _retire(self, dispatcher: Dispatcher) -> None:
        task = asyncio.ensure_future(dispatcher.client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
