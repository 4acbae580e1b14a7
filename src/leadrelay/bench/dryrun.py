"""``python -m leadrelay.bench.dryrun FILE --config CFG --jobs N``: ``send --dry-run`` on N cores.

The benchmark uses ``leadrelay send --dry-run --jobs N`` when the command has that option; this
runner does the same with the same library calls (``dry_run_parallel``), for versions where the
option is not wired yet. Request bodies go to stdout, the summary to stderr.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from leadrelay.config import ConfigError, load_config
from leadrelay.mapping.parallel import default_workers, dry_run_parallel
from leadrelay.summary import Tally


def main(argv: list[str] | None = None) -> int:
    """Run the dry run; exit code as ``leadrelay send``: 0 clean, 2 some rejected, 1 error."""
    parser = argparse.ArgumentParser(prog="python -m leadrelay.bench.dryrun")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--config", required=True)
    parser.add_argument("--jobs", type=int, default=default_workers())
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        err.print(str(exc), markup=False, highlight=False)
        return 1
    tally = Tally(dry_run=True)
    dry_run_parallel(args.files, settings, sys.stdout.buffer, tally, workers=args.jobs)
    tally.render(err, dry_run=True)
    return 2 if tally.any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
