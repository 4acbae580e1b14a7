"""A local stand-in for Meta's Conversions API endpoint (``POST /{version}/{pixel_id}/events``).

It validates like Meta (all-or-nothing, Meta's error envelope and codes), keeps what it accepted
for inspection, and plays scripted or seeded random faults (500s, throttles, dropped connections,
slow answers, token and permission errors). Used by ``leadrelay demo``, the integration tests
and the benchmarks::

    with SandboxServer(SandboxOptions(seed=1, fail_rate=0.05)) as sandbox:
        httpx.post(f"{sandbox.url}/v25.0/123456789012345/events", ...)
        sandbox.state.received()
"""

from leadrelay.sandbox.app import create_app
from leadrelay.sandbox.options import SandboxOptions
from leadrelay.sandbox.server import SandboxServer, serve_forever
from leadrelay.sandbox.state import RequestRecord, SandboxState

__all__ = [
    "RequestRecord",
    "SandboxOptions",
    "SandboxServer",
    "SandboxState",
    "create_app",
    "serve_forever",
]
