"""The results ``Dispatcher`` gives the payloads of a batch, a group of them at a time: the
``Group`` (payloads sent together, with the bytes each request carries) and the ``Delivery`` of
each payload, delivered, refused, given up on, kept for a pause, or held behind an earlier event
of its lead.

Split out of ``dispatcher`` (house rule: modules under ~300 lines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from leadrelay.meta.errors import GraphError, refused_endpoint
from leadrelay.outcome import Delivery, Payload, State

_TOO_OLD_SUBCODE: Final = 2804003  # 100/2804003: "Event Timestamp Too Old"


class Group:
    """Payloads sent together: their places in the batch and the bytes a request carries for
    them (encoded once, so every resend carries the very same bytes). A batch is only ever
    split in halves, so the payloads of a group went through the same requests: ``sends`` and
    ``retried`` are the group's. (An object per payload cost 0.5 ms of CPU per batch of 1000.)
    """

    __slots__ = ("bodies", "places", "retried", "sends")

    def __init__(
        self, places: list[int], bodies: list[bytes], sends: int = 0, retried: bool = False
    ) -> None:
        self.places = places
        self.bodies = bodies
        self.sends = sends
        self.retried = retried

    def __len__(self) -> int:
        return len(self.places)

    def part(self, start: int, stop: int | None = None) -> Group:
        """The payloads from ``start`` to ``stop``, with what the group went through."""
        return Group(self.places[start:stop], self.bodies[start:stop], self.sends, self.retried)

    def sift(
        self,
        batch: Sequence[Payload],
        results: list[Delivery | None],
        set_aside: Callable[[Payload], Delivery | None],
    ) -> Group:
        """The group without the payloads ``set_aside`` gives a result for (put in
        ``results``), with what the group went through."""
        kept = Group([], [], self.sends, self.retried)
        for place, body in zip(self.places, self.bodies, strict=True):
            done = set_aside(batch[place])
            if done is None:
                kept.places.append(place)
                kept.bodies.append(body)
            else:
                results[place] = done
        return kept


_WAITING: Final = (State.DEAD, State.QUEUED)  # not delivered, and to be tried again


def behind(
    batch: Sequence[Payload], first: Group, second: Group, results: list[Delivery | None]
) -> Group:
    """``second`` (the later half of a split batch) without the events of a lead whose earlier
    event in ``first`` was not delivered and waits to be tried again (retries ran out, a
    pause): those end as it did, to follow it, so a lead's events reach Meta in order."""
    waiting: dict[int, Delivery] = {}
    for place in first.places:
        done = results[place]
        if done is not None and done.state in _WAITING:
            waiting.setdefault(batch[place].lead_id, done)
    if not waiting:
        return second

    def held(payload: Payload) -> Delivery | None:
        earlier = waiting.get(payload.lead_id)
        if earlier is None:
            return None
        return Delivery(
            payload,
            earlier.state,
            attempts=second.sends,
            reason=earlier.reason,
            message=f"not sent ahead of an earlier event of lead {payload.lead_id}, which was "
            f"not delivered: {earlier.message}",
            code=earlier.code,
            subcode=earlier.subcode,
            fbtrace_id=earlier.fbtrace_id,
            extra=dict(earlier.extra),
        )

    return second.sift(batch, results, held)


def delivered(
    batch: Sequence[Payload],
    group: Group,
    results: list[Delivery | None],
    message: str | None,
    trace: str | None,
) -> None:
    state, sends, retried = State.DELIVERED, group.sends, group.retried
    for place in group.places:  # one per event: positional arguments, the fastest call
        extra = {"retried": True} if retried else {}
        results[place] = Delivery(
            batch[place], state, sends, None, message, None, None, trace, extra
        )


def rejected(error: GraphError) -> tuple[State, str, str]:
    """State, reason and message of an event Meta refused alone."""
    message = f"{error.user_title}: {error.message}" if error.user_title else error.message
    if error.code == 100 and error.subcode == _TOO_OLD_SUBCODE:
        return State.EXPIRED, "expired", message  # Meta's clock says so, even if ours did not
    return State.REJECTED, error.reason(), message


def dead(error: GraphError, attempts: int, wait: float | None = None) -> tuple[State, str, str]:
    """State, reason and message of events whose retries ran out after ``attempts``, or whose
    next try, ``wait`` seconds away (Meta's own wait, when it said one), was past the time
    retries may take."""
    past = "" if wait is None else f", the next try being {wait:.0f} s away, past max_retry_s"
    message = (
        f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}{past} "
        f"({error.label()}): {error.message}"
    )
    return State.DEAD, "retries_exhausted", message


def paused(error: GraphError) -> tuple[State, str, str]:
    """State, reason and message of events kept queued by a pause (Meta refused the token, a
    permission or the endpoint)."""
    what = "the endpoint (graph_url or api_version)"
    if not refused_endpoint(error):
        what = "the access token or permission"
    message = f"not sent: delivery paused because Meta refused {what} ({error.label()}): "
    return State.QUEUED, "paused_auth", message + error.message


def failed(
    batch: Sequence[Payload],
    group: Group,
    results: list[Delivery | None],
    error: GraphError,
    state: State,
    reason: str,
    message: str,
) -> None:
    """Record ``group`` as not delivered, with Meta's code, subcode and fbtrace_id, and the
    wait Meta asked for, if it did (a requeue waits at least that long)."""
    wait = error.retry_after
    for place in group.places:
        results[place] = Delivery(
            batch[place],
            state,
            attempts=group.sends,
            reason=reason,
            message=message,
            code=error.code,
            subcode=error.subcode,
            fbtrace_id=error.fbtrace_id,
            extra={} if wait is None else {"retry_after": wait},
        )
