"""A config's ``${VAR}`` references, read from the environment, and its problems' keys.

Split out of ``config`` (house rule: modules under ~300 lines). The environment is where secrets
are kept: a value read from it is never quoted in an error (``unquoted``), and [server]'s tokens,
which only ``serve`` needs, are left out when their variable is not set (``without_unset_tokens``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Problem", "expand", "key_name", "unquoted", "without_unset_tokens"]

_SECRET_LIKE: Final = 8  # a value read from the environment this long is not quoted in errors
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SERVE_TOKENS: Final = ("intake_token", "dashboard_token")  # [server]'s: only serve needs them


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config, located by its key (``smart_mapping."user_data.em"``)."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def without_unset_tokens(
    raw: dict[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """``raw`` without [server]'s tokens given as ``"${VAR}"`` whose variable is not set, and
    those tokens with their variable: every command but ``serve`` runs without them (the README's
    [server] block in a config must not stop ``send`` where the variables are not set)."""
    server = raw.get("server")
    if not isinstance(server, dict):
        return raw, {}
    unset: dict[str, str] = {}
    for name in _SERVE_TOKENS:
        value = server.get(name)
        match = _ENV_REF.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is not None and match.group(1) not in env:
            unset[name] = match.group(1)
    if not unset:
        return raw, {}
    kept = {k: v for k, v in server.items() if k not in unset}
    return {**raw, "server": kept}, unset


def expand(
    value: Any,
    env: Mapping[str, str],
    key: tuple[str, ...],
    problems: list[Problem],
    used: dict[str, str],
) -> Any:
    """``value`` with ``${VAR}`` read from ``env``; the variables read go in ``used``."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                problems.append(Problem(key_name(key), f"environment variable {name} is not set"))
                return ""
            used[name] = env[name]
            return env[name]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand(v, env, (*key, str(k)), problems, used) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env, (*key, str(i)), problems, used) for i, v in enumerate(value)]
    return value


def unquoted(problem: Problem, used: Mapping[str, str]) -> Problem:
    """``problem`` saying ``${VAR}`` where its message quotes the value of a variable read: the
    environment is where secrets are kept, and a token put in the wrong key (an expression, a
    URL) would be printed and logged. Short values are left (a country code, a number)."""
    message = problem.message
    for name, value in sorted(used.items(), key=lambda kv: len(kv[1]), reverse=True):
        if len(value) >= _SECRET_LIKE and value in message:
            message = message.replace(value, f"${{{name}}}")
    return problem if message == problem.message else Problem(problem.key, message)


def key_name(parts: tuple[str | int, ...]) -> str:
    out: list[str] = []
    for part in parts:
        text = str(part)
        out.append(text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else f'"{text}"')
    return ".".join(out) or "file"
