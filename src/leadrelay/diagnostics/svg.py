"""Small inline SVG charts drawn in Python: no script, no external asset, readable without colour.

Every chart is an ``<svg role="img">`` labelled by its own ``<title>`` and ``<desc>``; the page puts
a data table next to it for screen readers and for exact figures. Colours are dark enough for
3:1 contrast on white, and every series is also named in a text legend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape
from typing import Final

SERIES_COLOURS: Final = ("#0b5cad", "#c2410c", "#1b7f3b", "#6a1b9a", "#8c5a00", "#37474f")
_W: Final = 720
_PAD_L: Final = 56
_PAD_R: Final = 48
_PAD_T: Final = 16
_PAD_B: Final = 40
_AXIS: Final = "#4a4a4a"
_GRID: Final = "#d9d9d9"

Series = tuple[str, str, Sequence[int]]  # (name, colour, values)


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _open(uid: str, title: str, desc: str, height: int) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {_W} {height}" role="img" '
        f'aria-labelledby="{uid}-t {uid}-d" preserveAspectRatio="xMinYMin meet">',
        f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>',
    ]


def _num(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _y_axis(top: float, height: int) -> tuple[list[str], Callable[[float], float]]:
    base = height - _PAD_B
    span = base - _PAD_T

    def y(v: float) -> float:
        return base - span * v / top

    out = []
    for i in range(5):
        v = top * i / 4
        yy = y(v)
        out.append(
            f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{yy:.1f}" y2="{yy:.1f}" '
            f'stroke="{_GRID if i else _AXIS}" stroke-width="1"/>'
            f'<text x="{_PAD_L - 6}" y="{yy + 4:.1f}" text-anchor="end" class="tick">'
            f"{_num(v)}</text>"
        )
    return out, y


def _x_labels(labels: Sequence[str], x: Callable[[int], float], height: int) -> list[str]:
    # As many labels as fit side by side at 12px (about 7px a character), evenly spaced.
    longest = max((len(label) for label in labels), default=1)
    fit = max(2, int((_W - _PAD_L - _PAD_R) / (longest * 7 + 16)))
    step = max(1, math.ceil(len(labels) / fit))
    return [
        f'<text x="{x(i):.1f}" y="{height - _PAD_B + 16}" text-anchor="middle" class="tick">'
        f"{escape(label)}</text>"
        for i, label in enumerate(labels)
        if i % step == 0
    ]


def hbar_chart(uid: str, title: str, desc: str, bars: Sequence[tuple[str, int, str]]) -> str:
    """Horizontal bars, one per (label, value, text shown after the bar)."""
    row = 30
    height = _PAD_T * 2 + row * max(1, len(bars))
    left = 200
    top = nice_max(max((v for _, v, _ in bars), default=0))
    width = _W - left - 140
    out = _open(uid, title, desc, height)
    for i, (label, value, text) in enumerate(bars):
        y = _PAD_T + i * row
        w = width * value / top
        # Long stage names are shortened here; the data table beside the chart has them whole.
        shown = label if len(label) <= 28 else label[:27] + "…"
        out.append(
            f'<text x="{left - 8}" y="{y + 19}" text-anchor="end" class="label">'
            f"<title>{escape(label)}</title>{escape(shown)}</text>"
            f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{SERIES_COLOURS[0]}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 19}" class="label">{escape(text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def stacked_bars(
    uid: str, title: str, desc: str, labels: Sequence[str], series: Sequence[Series]
) -> str:
    """Vertical stacked bars: one bar per label, one segment per series."""
    height = 280
    n = max(1, len(labels))
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    top = nice_max(max(totals, default=0))
    out = _open(uid, title, desc, height)
    grid, y = _y_axis(top, height)
    out += grid
    slot = (_W - _PAD_L - _PAD_R) / n
    bar = min(48.0, max(1.0, slot * 0.7))

    def x(i: int) -> float:
        return _PAD_L + slot * (i + 0.5)

    for i in range(len(labels)):
        acc = 0
        for name, colour, values in series:
            v = values[i]
            if not v:
                continue
            y0, y1 = y(acc), y(acc + v)
            acc += v
            out.append(
                f'<rect x="{x(i) - bar / 2:.1f}" y="{y1:.1f}" width="{bar:.1f}" '
                f'height="{y0 - y1:.1f}" fill="{colour}"><title>{escape(labels[i])} '
                f"{escape(name)}: {v}</title></rect>"
            )
    out += _x_labels(labels, x, height)
    out.append("</svg>")
    return "".join(out)


def line_chart(
    uid: str, title: str, desc: str, labels: Sequence[str], series: Sequence[Series]
) -> str:
    """One line per series over ``labels``; points get markers when there are few of them."""
    height = 280
    top = nice_max(max((max(s[2], default=0) for s in series), default=0))
    out = _open(uid, title, desc, height)
    grid, y = _y_axis(top, height)
    out += grid
    n = len(labels)
    inner = _W - _PAD_L - _PAD_R

    def x(i: int) -> float:
        return _PAD_L + (inner * i / (n - 1) if n > 1 else inner / 2)

    # Dash patterns tell the lines apart without colour.
    dashes = ("none", "6 3", "2 3", "8 3 2 3")
    for k, (name, colour, values) in enumerate(series):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        out.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-dasharray="{dashes[k % len(dashes)]}" '
            f'points="{points}"><title>{escape(name)}</title></polyline>'
        )
        if n <= 60:
            out += [
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(labels[i])} {escape(name)}: {v}</title></circle>"
                for i, v in enumerate(values)
            ]
    out += _x_labels(labels, x, height)
    out.append("</svg>")
    return "".join(out)


def legend(series: Sequence[tuple[str, str]]) -> str:
    """A text legend (a list) for the series colours."""
    items = "".join(
        f'<li><span class="swatch" style="background:{colour}" aria-hidden="true"></span>'
        f"{escape(name)}</li>"
        for name, colour in series
    )
    return f'<ul class="legend">{items}</ul>'
