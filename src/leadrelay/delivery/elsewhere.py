"""A send on a fleet's store (Redis, ``[queue]``) and the events other processes hold in flight.

A process that stops (killed, crashed) holds the events it had in flight under its consumer name
until they have been idle ``claim_idle_s``: then any worker may take them over. Run again on the
same files, a send finds them stored and in flight (``Added.waiting``): it waits for them, and
delivers those it can take over (SQLite needs none of this: a send takes back at its start what
a stopped one left in flight). ``deliver`` says what the fleet holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final

import structlog

from leadrelay.delivery.store import Store
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.meta.errors import GraphError
from leadrelay.outcome import State
from leadrelay.summary import Tally

log = structlog.get_logger("leadrelay.send")

_TAKEOVER_SLACK_S: Final = 5.0  # beyond claim_idle_s, before events held elsewhere are given up


async def say_held_elsewhere(store: Store, claim_idle_s: float) -> None:
    """What ``deliver`` leaves to the fleet: events in flight in other processes."""
    held = (await asyncio.to_thread(store.counts, time.time())).in_flight
    if held:
        log.warning(
            "events are in flight in other processes: the fleet's workers deliver them, and "
            f"those of a process that stopped are taken back after claim_idle_s ({claim_idle_s:g}"
            " s), by a worker or the next deliver",
            events=held,
        )


async def settle_elsewhere(
    store: Store,
    worker: DeliveryWorker,
    ids: Sequence[int],
    claim_idle_s: float,
    tally: Tally,
    halt: asyncio.Event,
) -> GraphError | None:
    """Events of these files an earlier run left in flight in the fleet's store (Redis): a
    process that died holds them until they have been idle ``claim_idle_s``, when the worker
    may take them over. Waits that long (and a little), delivering what it can take; those
    still unsettled are counted (``Tally.elsewhere``: exit code 2). Returns why delivery paused.
    """
    open_states = (State.QUEUED, State.IN_FLIGHT)
    held = sorted(set(ids))  # an event the files hold twice is one event

    def unsettled() -> list[int]:
        records = (store.get(id_) for id_ in held)
        return [r.id for r in records if r is not None and r.state in open_states]

    loop = asyncio.get_running_loop()
    deadline = loop.time() + claim_idle_s + _TAKEOVER_SLACK_S
    left = await asyncio.to_thread(unsettled)
    if left:
        log.warning(
            "events read from these files are in flight in another process (or one that "
            "stopped); waiting for them to be delivered or taken back",
            events=len(left),
            wait_s=round(claim_idle_s + _TAKEOVER_SLACK_S),
        )
    paused = None
    while left and loop.time() < deadline and not halt.is_set():
        await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
        paused = await worker.run_until_idle(halt)
        if paused is not None:
            break
        left = await asyncio.to_thread(unsettled)
    tally.elsewhere = len(left)
    return paused
