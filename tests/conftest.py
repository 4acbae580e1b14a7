"""Shared fixtures: a base config users would write, built through the real config loader."""

from __future__ import annotations

from typing import Any

import pytest

from leadrelay.config import Settings, parse_config

NOW = 1767800000.0  # 2026-01-07T15:33:20Z: the fixed clock of the mapping fixtures

BASE: dict[str, Any] = {
    "pixel_id": "123456789012345",
    "access_token": "EAAB-secret-token-do-not-print",
    "lead_id": "{{facebook_lead_id}}",
    "lead_event_source": "In-house CRM",
    "mapping": {"lead_qualified": "Marketing Qualified Lead"},
}


def make_settings(**overrides: Any) -> Settings:
    """Settings from the base config with top-level keys replaced."""
    return parse_config({**BASE, **overrides}, source="test", env={})


@pytest.fixture
def settings() -> Settings:
    return make_settings()
