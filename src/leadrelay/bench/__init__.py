"""The benchmark harness: ``python -m leadrelay.bench`` (or ``leadrelay bench``).

It measures, in one run, on generated realistic events: the transform (``send --dry-run``)
against Meta's official SDK doing the same work on the same events, as a ratio, on one core and
on several; a large end-to-end ``send`` to the local sandbox, with events per second, peak
memory and a check that every event's outcome was recorded; the HTTP intake of
``serve --no-worker`` (events per second, latency of a 202); and delivery from a shared Redis
queue by one ``leadrelay worker`` and by two. See ``bench/README.md``.
"""

from leadrelay.bench.harness import BenchOptions, main, run

__all__ = ["BenchOptions", "main", "run"]
