"""The machine a benchmark ran on, recorded with its figures (numbers mean little without it)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leadrelay import __version__
from leadrelay.bench.measure import usable_cores
from leadrelay.compiled import build_name


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, to tell a busy machine from a quiet one."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on this platform
        return None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and library versions, date and load, as JSON-ready data."""
    memory_mb = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_mb = round(pages * size / 2**20)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on this platform
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(usable_cores()),
        "memory_mb": memory_mb,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "leadrelay": __version__,
        "build": build_name(),
        "orjson": _version("orjson"),
        "facebook_business": _version("facebook-business") or _version("facebook_business"),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average_at_start": load_average(),
    }
