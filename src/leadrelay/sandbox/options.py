"""Sandbox settings and the fault vocabulary shared by ``SandboxState.script`` and the HTTP API."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from leadrelay.sandbox.errors import THROTTLE_CODES

TIMEOUT_S = 30.0
"""How long a ``"timeout"`` fault sleeps before answering: longer than any sane client timeout."""


@dataclass(frozen=True)
class SandboxOptions:
    """How the sandbox behaves. Frozen because ``create_app`` compiles it once.

    ``access_tokens``: accepted tokens; an empty set accepts any non-empty token.
    ``pixel_ids``: known pixels; ``None`` accepts any all-digit id of 15 or 16 digits.
    ``deleted_lead_ids``: lead ids Meta treats as deleted or unknown (answered with 100/2804036).
    ``fail_rate``, ``throttle_rate``, ``drop_rate``: probabilities (summing to at most 1) of an
    HTTP 500 (code 2), a throttle (code 4, HTTP 403) and a dropped connection, drawn once per
    request from a ``random.Random(seed)``, so a seed gives the same fault sequence every run.
    ``slow_ms``: latency added to every request. ``max_age_s``: oldest accepted ``event_time``.
    ``keep_events``: how many accepted events ``received()`` keeps (counters are always kept).
    ``clock``: the time source for the age check and the request log.
    """

    access_tokens: frozenset[str] = frozenset({"sandbox-token"})
    pixel_ids: frozenset[str] | None = None
    deleted_lead_ids: frozenset[int] = frozenset()
    fail_rate: float = 0.0
    throttle_rate: float = 0.0
    drop_rate: float = 0.0
    slow_ms: int = 0
    seed: int | None = None
    max_age_s: int = 7 * 86400
    keep_events: int = 100_000
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        for name in ("fail_rate", "throttle_rate", "drop_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate!r}")
        total = self.fail_rate + self.throttle_rate + self.drop_rate
        if total > 1.0:
            raise ValueError(
                f"fail_rate + throttle_rate + drop_rate must be at most 1, got {total}"
            )
        for name in ("slow_ms", "keep_events"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {self.max_age_s!r}")


@dataclass(frozen=True, slots=True)
class Fault:
    """One parsed fault: ``kind`` is the word before the colon, ``value`` its number (if any)."""

    kind: str
    value: int = 0


FAULT_HELP = (
    '"ok", "http_500", "http_503", "throttle" or "throttle:<4|17|32|613|80004>", "drop", '
    '"slow:<ms>", "auth", "permission", "timeout"'
)
_PLAIN = frozenset({"ok", "http_500", "http_503", "throttle", "drop", "auth", "permission"})


def parse_fault(text: str) -> Fault:
    """Parse one fault string, raising ``ValueError`` that names it and lists the valid ones."""
    if not isinstance(text, str):
        raise ValueError(f"a fault must be a string, got {text!r}; valid faults: {FAULT_HELP}")
    kind, sep, arg = text.strip().partition(":")
    if not sep and kind in _PLAIN:
        return Fault("throttle", 4) if kind == "throttle" else Fault(kind)
    if not sep and kind == "timeout":
        return Fault("timeout", int(TIMEOUT_S * 1000))
    if sep and arg.isdigit() and arg.isascii():
        if kind == "slow":
            return Fault("slow", int(arg))
        if kind == "throttle" and int(arg) in THROTTLE_CODES:
            return Fault("throttle", int(arg))
    raise ValueError(f"unknown fault {text!r}; valid faults: {FAULT_HELP}")
