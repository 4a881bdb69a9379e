"""The console's HTML: the page layout and the small helpers pages are
built with (escaped text, tables, inline-SVG charts, buttons that call the
admin API through static/app.js).  No inline script or style: the pages'
Content-Security-Policy forbids both."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from string import Template
from typing import Any, Callable

from aiohttp import web

HERE = Path(__file__).parent
LAYOUT = Template((HERE / "templates" / "layout.html").read_text())
LOGIN = Template((HERE / "templates" / "login.html").read_text())

PAGES = (("overview", "Overview", "/dashboard/"), ("tokens", "Tokens", "/dashboard/tokens"),
         ("channels", "Channels", "/dashboard/channels"), ("usage", "Usage", "/dashboard/usage"),
         ("sessions", "Sessions", "/dashboard/sessions"),
         ("playground", "Playground", "/dashboard/playground"))

def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def usd(value: Any) -> str:
    return "—" if value is None else f"${value}"


def when(iso: str | None) -> str:
    """An ISO time, shown short (UTC); the full value in a title."""
    if not iso:
        return "—"
    short = iso[:19].replace("T", " ")
    return f'<time datetime="{e(iso)}" title="{e(iso)}">{e(short)}</time>'


def table(head: list[str], rows: list[list[str]], empty: str = "Nothing yet.",
          cls: str = "") -> str:
    if not rows:
        return f'<p class="empty">{e(empty)}</p>'
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td data-label="{e(_plain(h))}">{c}</td>'
                                    for h, c in zip(head, r)) + "</tr>" for r in rows)
    return (f'<div class="table-wrap"><table class="{cls}"><thead><tr>{th}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _plain(h: str) -> str:
    return h.replace("<", " <").split("<")[0].strip()


def bars(points: list[tuple[str, float]], label: Callable[[float], str], title: str,
         height: int = 120) -> str:
    """A bar chart as inline SVG (no script, no library)."""
    if not points:
        return '<p class="empty">No data for this range.</p>'
    top = max(v for _, v in points) or 1.0
    w = 100.0 / max(len(points), 6)       # a lone bar is not the page's width
    parts = []
    for i, (key, v) in enumerate(points):
        h = (v / top) * (height - 34)
        x = i * w
        value = (f'<text x="{x + w / 2:.2f}%" y="{height - 22 - h:.1f}" class="val">'
                 f"{e(label(v))}</text>") if v else ""
        parts.append(
            f'<g><title>{e(key)}: {e(label(v))}</title>'
            f'<rect x="{x + w * 0.15:.2f}%" y="{height - 18 - h:.1f}" width="{w * 0.7:.2f}%" '
            f'height="{h:.1f}" class="bar"/>'
            f'<text x="{x + w / 2:.2f}%" y="{height - 4}" class="axis">{e(_short(key))}</text>'
            f"{value}</g>")
    return (f'<figure class="chart"><figcaption>{e(title)}</figcaption>'
            f'<svg role="img" aria-label="{e(title)}" width="100%" height="{height}">'
            f'{"".join(parts)}</svg></figure>')


def _short(key: str) -> str:
    """An axis label: a day as MM-DD, anything else cut to 14 characters."""
    if len(key) == 10 and key[4] == "-" and key[7] == "-":
        return key[5:]
    return key if len(key) <= 14 else key[:13] + "…"


def meter(value: float, limit: float | None, text: str) -> str:
    """Spend against a quota: a native ``<meter>`` (no inline style: the CSP forbids it)."""
    if not limit:
        return f'<span class="muted">{e(text)}</span>'
    return (f'<meter min="0" max="{limit:g}" low="{limit * 0.6:g}" high="{limit * 0.9:g}" '
            f'optimum="0" value="{min(value, limit):g}" title="{e(text)}"></meter>'
            f"<small>{e(text)}</small>")


def button(label: str, action: str, path: str, *, confirm: str | None = None,
           cls: str = "", body: dict | None = None, then: str = "reload",
           out: str | None = None) -> str:
    attrs = [f'data-api="{e(action)} {e(path)}"', f'data-then="{e(then)}"']
    if confirm:
        attrs.append(f'data-confirm="{e(confirm)}"')
    if body is not None:
        attrs.append(f"data-body='{e(json.dumps(body))}'")
    if out:
        attrs.append(f'data-out="{e(out)}"')
    return f'<button type="button" class="{e(cls)}" {" ".join(attrs)}>{e(label)}</button>'


def page(request: web.Request, login: Any, active: str, title: str, body: str) -> web.Response:
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if key == active else ""}>{e(name)}</a>'
        for key, name, href in PAGES)
    html = LAYOUT.substitute(title=e(title), nav=nav, body=body, csrf=e(login.csrf))
    return web.Response(text=html, content_type="text/html", headers=HEADERS)


HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # scripts from this origin only (no inline script); the playground's WebSocket
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self' ws: wss:; "
                                "media-src 'self' blob:; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
}


