"""The dashboard's page shell: one server-rendered HTML page, inline CSS, no script, no asset.

The look is the ``leadrelay report`` page's (``diagnostics.html.CSS``) plus what a live page needs:
navigation, forms, code blocks. Every page is sent with a Content-Security-Policy that allows
nothing but inline styles and same-origin forms, and is never cached (it shows event data).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any, Final

import orjson
from starlette.responses import HTMLResponse

from leadrelay.diagnostics.html import CSS as REPORT_CSS

BASE: Final = "/dashboard"

NAV: Final = (
    ("delivery", f"{BASE}", "Event Delivery"),
    ("funnel", f"{BASE}/funnel", "Funnel"),
    ("events", f"{BASE}/events", "Events"),
    ("playground", f"{BASE}/playground", "Mapping playground"),
)

HEADERS: Final = {
    # No script at all; inline styles (charts, legend swatches); forms post to us only.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_CSS: Final = """
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:.5rem;background:#fff;
padding:.25rem .5rem;z-index:2}
.topbar{display:flex;flex-wrap:wrap;align-items:center;justify-content:space-between;gap:.5rem;
border-bottom:1px solid #8a8a8a;padding-bottom:.25rem}
.brand{font-weight:700;margin:0}.brand small{font-weight:400;color:#3d3d3d}
.topbar nav ul{margin:.25rem 0}.topbar nav a{padding:.2rem .1rem;text-decoration:none}
.topbar nav a:hover{text-decoration:underline}
.topbar nav a[aria-current=page]{font-weight:700;border-bottom:3px solid #0b4f91}
main h1{margin-top:1rem}
button{font:inherit;padding:.4rem .9rem;border:2px solid #0b4f91;background:#0b4f91;
color:#fff;border-radius:.3rem;cursor:pointer}
button.quiet{background:#fff;color:#0b4f91}
a:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible,
summary:focus-visible{outline:3px solid #0b4f91;outline-offset:2px}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
.hint{display:block;font-weight:400;color:#3d3d3d;font-size:.95rem}
input[type=password],input[type=text],textarea{font:15px/1.4 ui-monospace,SFMono-Regular,
Menlo,Consolas,monospace;width:100%;box-sizing:border-box;padding:.4rem;border:1px solid #4a4a4a;
border-radius:.25rem}
textarea{min-height:6rem}
pre{background:#f4f6f8;border:1px solid #c4c4c4;padding:.6rem .8rem;overflow:auto;
max-height:48rem;font-size:.9rem;line-height:1.4}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(8.75rem,1fr));gap:.6rem;
margin:1rem 0;padding:0}
.stats div{border:1px solid #8a8a8a;border-radius:.4rem;padding:.4rem .7rem}
.stats dt{font-size:.9rem;color:#3d3d3d}.stats dd{margin:0;font-size:1.35rem;font-weight:700}
.alert{border:3px solid #b3261e;background:#fbe4e2;color:#5e0f0b;padding:.5rem 1rem;
border-radius:.4rem;margin:1rem 0}.alert h2{border:0;margin:.25rem 0;font-size:1.15rem}
.ok{border:2px solid #1b7f3b;background:#e3f1e6;color:#0d4d22;padding:.5rem 1rem;
border-radius:.4rem}
.tabs{display:flex;gap:.5rem;list-style:none;padding:0;margin:.5rem 0}
.tabs a{display:inline-block;padding:.25rem .75rem;border:1px solid #0b4f91;border-radius:.3rem;
text-decoration:none}
.tabs a[aria-current=page]{background:#0b4f91;color:#fff}
mark{background:#ffd54f;color:#1a1a1a;outline:1px solid #5c3d00}
.problem{border-left:5px solid #b3261e;padding:.25rem .75rem;margin:.75rem 0;background:#fdf1f0}
.login{max-width:28rem}
td.fix{min-width:18rem}
table.kv th{width:14rem}
.health{border-left-width:.75rem}.health-sunny{border-color:#1b7f3b}
.health-cloudy{border-color:#8c5a00}.health-rainy{border-color:#c2410c}
.health-stormy{border-color:#b3261e}
code.wrap{overflow-wrap:anywhere}
.fields td:nth-child(4),.fields td:nth-child(5){min-width:11rem}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;
clip:rect(0 0 0 0);white-space:nowrap}
"""


def page(
    title: str,
    body: str,
    *,
    current: str | None,
    pixel_id: str | None = None,
    status: int = 200,
    signed_in: bool = True,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A whole dashboard page around ``body`` (already-escaped HTML)."""
    links = "".join(
        f'<li><a href="{href}"{" aria-current=page" if key == current else ""}>{label}</a></li>'
        for key, href, label in NAV
    )
    nav = (
        f'<nav aria-label="Dashboard"><ul>{links}</ul></nav>'
        f'<form method="post" action="{BASE}/logout">'
        '<button class="quiet" type="submit">Sign out</button></form>'
        if signed_in
        else ""
    )
    pixel = f" <small>pixel {escape(pixel_id)}</small>" if pixel_id else ""
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · leadrelay</title>"
        f"<style>{REPORT_CSS}{_CSS}</style></head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><div class="topbar"><p class="brand">leadrelay{pixel}</p>{nav}</div></header>'
        f'<main id="main">{body}</main>'
        '<footer><p class="note">Served by leadrelay from its event store. Customer information '
        "is shown only as SHA-256 hashes or redacted.</p></footer></body></html>\n"
    )
    return HTMLResponse(html, status, headers={**HEADERS, **(headers or {})})


def when(t: float | None) -> str:
    """An epoch time as people read it (UTC), or a dash."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def json_block(value: Any, label: str) -> str:
    """Pretty JSON in a labelled, focusable (scrollable by keyboard) ``<pre>``."""
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    return f'<pre tabindex="0" aria-label="{escape(label)}"><code>{escape(text)}</code></pre>'


def kv_table(caption: str, rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of (name, already-escaped value), names as row headers."""
    body = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<table class="kv"><caption>{escape(caption)}</caption><tbody>{body}</tbody></table>'
