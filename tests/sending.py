"""The config a test's ``leadrelay send`` runs with: one pixel, one mapped event name, the access
token read from the ``TOKEN`` environment variable, and the store in ``tmp_path/data``."""

from __future__ import annotations

from pathlib import Path


def config(tmp_path: Path, url: str, *, batch_size: int = 50) -> Path:
    """Write ``tmp_path/leadrelay.toml`` for a send to ``url``; retries are quick and few."""
    path = tmp_path / "leadrelay.toml"
    path.write_text(
        f"""
pixel_id = "123456789012345"
access_token = "${{TOKEN}}"
lead_id = "{{{{facebook_lead_id}}}}"
lead_event_source = "HubSpot"
graph_url = "{url}"
[mapping]
lead_qualified = "Marketing Qualified Lead"
[delivery]
batch_size = {batch_size}
max_attempts = 3
retry_base_s = 0.01
[server]
data_dir = "{tmp_path / "data"}"
"""
    )
    return path
