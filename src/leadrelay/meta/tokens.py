"""What an access token looks like, checked where the config is read and again by the Graph
client (which a library user may build without a config): one test, so the two cannot drift."""

from __future__ import annotations


def sendable(token: str) -> bool:
    """Whether ``token`` can go in an Authorization header as it is: not empty, printable
    ASCII, no whitespace (a token pasted with its line break, or a wrong value, is not)."""
    return (
        bool(token)
        and token.isascii()
        and token.isprintable()
        and not any(c.isspace() for c in token)
    )
