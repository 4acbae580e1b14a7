"""`leadrelay demo`, the README's first command: a funnel through the real send path."""

from __future__ import annotations

import json
import re
import subprocess
import sys


def test_demo_runs_the_funnel_and_accounts_for_every_event() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "leadrelay", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr

    def count(label: str) -> int:
        match = re.search(rf"│ {label}\s*│ ([^│]*?)\s*│\s*(\d+) │", err)
        assert match, f"{label} not in the summary:\n{err}"
        return int(match.group(2))

    read = int(re.search(r"│ read\s*│\s*│\s*(\d+) │", err).group(1))  # type: ignore[union-attr]
    delivered = sum(int(n) for n in re.findall(r"│ delivered\s*│ [a-z ]+│\s*(\d+) │", err))
    assert count("rejected by Meta") == 1  # the deleted lead id, isolated by bisection
    assert "100/2804036" in err and "event_time_too_old" in err and "invalid_lead_id" in err
    filtered = sum(int(n) for n in re.findall(r"│ filtered\s*│ [a-z_]+\s*│\s*(\d+) │", err))
    rejected = sum(int(n) for n in re.findall(r"│ rejected\s*│ [a-z_]+\s*│\s*(\d+) │", err))
    assert filtered == 2 and rejected == 2
    assert read == delivered + filtered + rejected + 1  # every event has exactly one outcome
    assert re.search(r"│ delivered\s*│ after retry\s*│\s*[1-9]\d* │", err)  # the scripted 503
    received = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert received["action_source"] == "system_generated"
    assert received["custom_data"]["event_source"] == "crm"
    assert isinstance(received["user_data"]["lead_id"], int)
