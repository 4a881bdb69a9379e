"""The operator's console at ``/dashboard``: server-rendered pages over the
same operations as the admin API and the CLI (:mod:`openopen8.ops`), and a
little vanilla script (static/app.js) for the buttons.

* Login: a form takes the admin token (checked and braked like the admin
  API's), then an ``HttpOnly``, ``SameSite=Strict`` cookie signed with a key
  from the server secret and the admin token (:class:`Console`): valid on
  every instance sharing ``secret_key``, for 12 hours, until the admin token
  changes or the operator logs out.  The admin token is never put in a page.
* Every change -- a form post or a script's call to ``/admin/*`` with the
  cookie -- carries the session's CSRF token (a hidden field, or the
  ``X-CSRF-Token`` header from ``<meta name="csrf-token">``).
* Assets ship inside the package (templates/, static/): no build step.
"""

from __future__ import annotations

from aiohttp import web

from ..admin import COOKIE_AUTH, GATEWAY
from .html import HERE
from .login import CONSOLE, Console, login_form, login_post, logout
from .pages import (channels_page, overview, playground_page, playground_secret,
                    session_page, sessions_page, tokens_page, usage_page)

STATIC = HERE / "static"
__all__ = ["CONSOLE", "add_routes"]

_TYPES = {".js": "text/javascript", ".css": "text/css"}
#: the assets, read once (a few KB; the front door's transports do not sendfile)
_ASSETS = {p.name: (p.read_bytes(), _TYPES[p.suffix]) for p in STATIC.iterdir()
           if p.suffix in _TYPES}


async def static(request: web.Request) -> web.Response:
    found = _ASSETS.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, ctype = found
    return web.Response(body=body, content_type=ctype, charset="utf-8", headers={
        "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard/")


def add_routes(app: web.Application) -> None:
    console = Console(app[GATEWAY])
    app[CONSOLE] = console
    app[COOKIE_AUTH] = console.admin_verdict
    r = app.router
    r.add_get("/dashboard", root)
    r.add_get("/dashboard/login", login_form)
    r.add_post("/dashboard/login", login_post)
    r.add_post("/dashboard/logout", logout)
    r.add_get("/dashboard/", overview)
    r.add_get("/dashboard/tokens", tokens_page)
    r.add_get("/dashboard/channels", channels_page)
    r.add_get("/dashboard/usage", usage_page)
    r.add_get("/dashboard/sessions", sessions_page)
    r.add_get("/dashboard/sessions/{id}", session_page)
    r.add_get("/dashboard/playground", playground_page)
    r.add_post("/dashboard/playground/secret", playground_secret)
    r.add_get("/dashboard/static/{name}", static)
