"""The two rows made once per event on the way through a store: ``Incoming`` (an event to
store) and ``Claimed`` (a payload handed to the dispatcher).

Plain classes with final attributes rather than frozen dataclasses, and compiled in the compiled
build (``LEADRELAY_COMPILE=1``), where each is a C struct made in 48 ns against 237 for the frozen
dataclass (whose fields are set through their descriptors, the frozen class refusing its own
``__setattr__``); interpreted, 133 ns. Read-only as before where it is checked: mypy refuses
any assignment to a ``Final`` attribute, and the compiled classes refuse it at run time
(AttributeError, where the dataclass raised FrozenInstanceError). Equal, hashed, shown and
pickled by their fields, as the dataclasses were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from leadrelay.outcome import Filtered, Payload, Rejected


class _Row:
    """Equal, hashed and pickled by its fields (``_fields``), as a frozen dataclass is."""

    __slots__ = ()

    def _fields(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._fields())


class Incoming(_Row):
    """One event to store: what the Mapper made of it and the event as received.

    ``original`` is the received event as JSON bytes; the store keeps it per its PII policy.
    ``received_at`` is when intake received it (epoch seconds); a payload is due from then.
    """

    __slots__ = ("original", "outcome", "received_at")

    def __init__(
        self, outcome: Payload | Filtered | Rejected, original: bytes | None, received_at: float
    ) -> None:
        self.outcome: Final = outcome
        self.original: Final = original
        self.received_at: Final = received_at

    def _fields(self) -> tuple[Payload | Filtered | Rejected, bytes | None, float]:
        return (self.outcome, self.original, self.received_at)

    def __repr__(self) -> str:
        return (
            f"Incoming(outcome={self.outcome!r}, original={self.original!r}, "
            f"received_at={self.received_at!r})"
        )


class Claimed(_Row):
    """A payload handed to the dispatcher; ``attempts`` counts requests made before this claim.

    Backends hand the payload over as an ``EncodedPayload``: the bytes stored, sent as they are.
    """

    __slots__ = ("attempts", "id", "payload")

    def __init__(self, id: int, payload: Payload, attempts: int) -> None:
        self.id: Final = id
        self.payload: Final = payload
        self.attempts: Final = attempts

    def _fields(self) -> tuple[int, Payload, int]:
        return (self.id, self.payload, self.attempts)

    def __repr__(self) -> str:
        return f"Claimed(id={self.id!r}, payload={self.payload!r}, attempts={self.attempts!r})"
