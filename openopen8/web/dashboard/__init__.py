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

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from string import Template
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web

from ... import ops
from ...crypto import server_secret
from ...errors import ForbiddenError, GatewayError
from ...store.base import StoreError
from ..admin import COOKIE_AUTH, GATEWAY, LAST_TESTS, check_admin_token

HERE = Path(__file__).parent
STATIC = HERE / "static"
COOKIE = "oo8_console"
#: a console login lasts this long
LOGIN_SECONDS = 12 * 3600
CONSOLE = web.AppKey("console", object)

_LAYOUT = Template((HERE / "templates" / "layout.html").read_text())
_LOGIN = Template((HERE / "templates" / "login.html").read_text())

PAGES = (("overview", "Overview", "/dashboard/"), ("tokens", "Tokens", "/dashboard/tokens"),
         ("channels", "Channels", "/dashboard/channels"), ("usage", "Usage", "/dashboard/usage"),
         ("sessions", "Sessions", "/dashboard/sessions"),
         ("playground", "Playground", "/dashboard/playground"))


@dataclass
class Login:
    nonce: str
    expires: int        # Unix time
    csrf: str


class Console:
    """The console's logins: signed cookies, so every gateway instance that
    shares the server secret (``secret_key``) knows them -- no session
    store.  The signing key is derived from the server secret *and* the
    admin token: changing ``admin_token`` logs every console out.  A login
    lasts :data:`LOGIN_SECONDS`; logging out revokes it on this instance
    (the browser drops the cookie everywhere)."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self._secret: bytes | None = None
        self.revoked: dict[str, int] = {}      # nonce -> its expiry

    def _key(self) -> bytes | None:
        token = self.gw.settings.admin_token
        if token is None or not token.get_secret_value():
            return None
        if self._secret is None:
            self._secret = server_secret(self.gw.settings.secret_key,
                                         self.gw.settings.data_dir).encode()
        return hashlib.sha256(b"openopen8-console\0" + self._secret + b"\0"
                              + token.get_secret_value().encode()).digest()

    @staticmethod
    def _mac(key: bytes, text: str) -> str:
        digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def new(self) -> str:
        """A new login's cookie value."""
        key = self._key()
        assert key is not None     # the login was checked against the admin token
        body = f"v1.{int(time.time()) + LOGIN_SECONDS}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac(key, body)}"

    def get(self, request: web.Request) -> Login | None:
        value = request.cookies.get(COOKIE, "")
        key = self._key()
        parts = value.split(".")
        if key is None or len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        body = ".".join(parts[:3])
        if not hmac.compare_digest(parts[3].encode(), self._mac(key, body).encode()):
            return None
        expires, nonce = int(parts[1]), parts[2]
        if expires <= time.time() or nonce in self.revoked:
            return None
        return Login(nonce, expires, self._mac(key, "csrf." + nonce))

    def drop(self, login: Login) -> None:
        now = time.time()
        self.revoked = {n: x for n, x in self.revoked.items() if x > now}
        self.revoked[login.nonce] = login.expires

    def admin_verdict(self, request: web.Request) -> Any:
        """For the admin API: True when the request is a logged-in console's
        (with its CSRF token on a change), a refusal for a bad CSRF token,
        None when there is no console login (the bearer token decides)."""
        login = self.get(request)
        if login is None:
            return None
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        if csrf_ok(login, request.headers.get("X-CSRF-Token", "")):
            return True
        return ForbiddenError("This change needs the console's CSRF token (X-CSRF-Token); "
                              "reload the page.", code="csrf_failed")


def csrf_ok(login: Login, given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), login.csrf.encode())


# ---- HTML helpers ------------------------------------------------------------------

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


def page(request: web.Request, login: Login, active: str, title: str, body: str) -> web.Response:
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if key == active else ""}>{e(name)}</a>'
        for key, name, href in PAGES)
    html = _LAYOUT.substitute(title=e(title), nav=nav, body=body, csrf=e(login.csrf))
    return web.Response(text=html, content_type="text/html", headers=_HEADERS)


_HEADERS = {
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


# ---- login ---------------------------------------------------------------------------

def _login_page(message: str = "", status: int = 200) -> web.Response:
    html = _LOGIN.substitute(message=f'<p class="error" role="alert">{e(message)}</p>'
                             if message else "")
    return web.Response(text=html, content_type="text/html", status=status, headers=_HEADERS)


async def login_form(request: web.Request) -> web.Response:
    if request.app[CONSOLE].get(request) is not None:
        raise web.HTTPSeeOther("/dashboard/")
    return _login_page()


async def login_post(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    form = await request.post()
    given = str(form.get("admin_token", "")).strip()
    client = gw.client_address(request.headers, request.remote)
    problem = check_admin_token(gw, client, given)
    if problem is not None:
        text = ("Too many wrong tries from this address; wait a minute."
                if problem.status == 429 else
                "The admin API is disabled: set admin_token to use the console."
                if problem.code == "admin_api_disabled" else "That is not the admin token.")
        return _login_page(text, status=problem.status)
    resp = web.HTTPSeeOther("/dashboard/")
    resp.set_cookie(COOKIE, request.app[CONSOLE].new(), httponly=True, samesite="Strict",
                    path="/", secure=request.secure, max_age=LOGIN_SECONDS)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    login = console.get(request)
    form = await request.post()
    if login is not None and csrf_ok(login, str(form.get("csrf", ""))):
        console.drop(login)
    resp = web.HTTPSeeOther("/dashboard/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


Handler = Callable[[web.Request, Login], Awaitable[web.StreamResponse]]


def logged_in(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        login = request.app[CONSOLE].get(request)
        if login is None:
            raise web.HTTPSeeOther("/dashboard/login")
        return await handler(request, login)
    return wrapped


# ---- pages ---------------------------------------------------------------------------

def last_test(request: web.Request, name: str) -> str:
    """A channel's last test on this instance, as its output shows one."""
    r = request.app[LAST_TESTS].get(name)
    if r is None:
        return f'<output id="test-{e(name)}" aria-live="polite"></output>'
    text = (f'✓ {r["event"] or r["detail"]} in {r["seconds"]:.2f} s' if r["ok"] else
            f'✗ {r["kind"] or "failed"}: {r["detail"]} ({r["seconds"]:.2f} s)')
    return (f'<output id="test-{e(name)}" aria-live="polite" class="{"pass" if r["ok"] else "fail"}"'
            f' title="tested {e(r["at"])}">{e(text)}</output>')


def _live_rows(live: list[dict[str, Any]], with_end: bool = True) -> list[list[str]]:
    rows = []
    for s in live:
        end = button("End", "DELETE", f"/admin/sessions/{s['id']}", cls="danger",
                     confirm=f"End session {s['id']}? The client gets an error and close 1008.",
                     then="reload") if with_end else ""
        rows.append([f'<a href="/dashboard/sessions/{e(s["id"])}">{e(s["id"])}</a>',
                     e(s["token"]), e(s["model"]), e(s["channel"]), e(s["client"]),
                     when(s["opened_at"]), f'{s["events_in"]}/{s["events_out"]}',
                     f'{s["audio_in_seconds"]:.1f}/{s["audio_out_seconds"]:.1f}',
                     usd(s["cost_usd"]), end])
    return rows


LIVE_HEAD = ["Session", "Token", "Model", "Channel", "Client", "Started", "Events in/out",
             "Audio s in/out", "Spend", ""]


@logged_in
async def overview(request: web.Request, login: Login) -> web.Response:
    gw = request.app[GATEWAY]
    ov = await ops.overview(gw)
    chans = ov["channels"]
    enabled = sum(1 for c in chans if c["enabled"])
    cards = (
        f'<div class="cards">'
        f'<div class="card"><b id="live-count">{len(ov["live"])}</b><span>live sessions</span></div>'
        f'<div class="card"><b>{ov["today"]["sessions"]}</b><span>sessions today</span></div>'
        f'<div class="card"><b>{usd(ov["today"]["cost_usd"])}</b><span>cost today</span></div>'
        f'<div class="card"><b>{enabled}/{len(chans)}</b><span>channels enabled</span></div>'
        f'<div class="card"><b>{e(ov["local_engine"])}</b><span>local engine</span></div>'
        f"</div>")
    charts = ('<div class="charts">'
              + bars([(d["day"], d["sessions"]) for d in ov["days"]], lambda v: f"{v:g}",
                     "Sessions per day (7 days)")
              + bars([(d["day"], d["cost_nanos"] / 1e9) for d in ov["days"]],
                     lambda v: f"${v:.4f}", "Cost per day, USD (7 days)")
              + "</div>")
    health = table(["Channel", "Type", "Models", "Priority", "State", "Last test"], [
        [e(c["name"]), e(c["type"]), e(", ".join(c["models"])), e(c["priority"]),
         '<span class="ok">enabled</span>' if c["enabled"] else '<span class="bad">disabled</span>',
         button("Test", "POST", f"/admin/channels/{c['name']}/test", then="show",
                out=f"test-{c['name']}") + last_test(request, c["name"])]
        for c in chans], empty="No channels: add one on the Channels page.")
    body = (f"<h1>Overview</h1>{cards}{charts}<h2>Live sessions</h2>"
            f'{table(LIVE_HEAD, _live_rows(ov["live"]), "No live sessions.")}'
            f"<h2>Channel health</h2>{health}")
    return page(request, login, "overview", "Overview", body)


def _limits(t: dict[str, Any]) -> str:
    parts = []
    for key, label in (("max_sessions", "sessions"), ("sessions_per_minute", "/min"),
                       ("max_duration", "s max"), ("idle_timeout", "s idle")):
        if t.get(key) is not None:
            parts.append(f"{t[key]:g} {label}")
    return e(", ".join(parts) or "—")


@logged_in
async def tokens_page(request: web.Request, login: Login) -> web.Response:
    gw = request.app[GATEWAY]
    used = await gw.store.tokens_last_used()
    rows = []
    for t in await gw.store.list_tokens():
        v = ops.token_view(t)
        last = used.get(t.id)
        spent = float(v["spent_usd"] or 0)
        quota = float(v["quota_usd"]) if v["quota_usd"] is not None else None
        spend = meter(spent, quota, f"${v['spent_usd']}" + (f" of ${v['quota_usd']}"
                                                            if quota is not None else ""))
        state = ('<span class="bad">revoked</span>' if v["revoked"] else
                 '<span class="ok">active</span>')
        acts = "" if v["revoked"] else button(
            "Revoke", "POST", f"/admin/tokens/{t.name}/revoke", cls="danger",
            confirm=f"Revoke {t.name}? Its sessions end and new ones are refused.")
        acts += button("Delete", "DELETE", f"/admin/tokens/{t.name}", cls="quiet",
                       confirm=f"Delete {t.name}? Its usage stays in reports.")
        flags = []
        if t.policy:
            flags.append("policy")
        if t.origins:
            flags.append("origins")
        if t.log_transcripts:
            flags.append("logged")
        rows.append([f"<b>{e(t.name)}</b><br><code>{e(v['prefix'])}</code>",
                     e(", ".join(t.models) or "all"), _limits(v), spend,
                     when(last.isoformat() if last else None),
                     e(v["expires_at"][:10] if v["expires_at"] else "never"),
                     e(", ".join(flags) or "—"), state, acts])
    form = f"""
<details class="panel" open><summary>Create a token</summary>
<form data-api="POST /admin/tokens" data-then="secret" data-out="new-secret" class="grid">
  <label>Name <input name="name" required maxlength="200" autocomplete="off"></label>
  <label>Models <input name="models" data-type="list" placeholder="all (comma-separated)"></label>
  <label>Quota, USD <input name="quota_usd" inputmode="decimal" placeholder="none"></label>
  <label>Max sessions <input name="max_sessions" data-type="int" inputmode="numeric"></label>
  <label>Sessions / minute <input name="sessions_per_minute" data-type="int" inputmode="numeric"></label>
  <label>Max duration, s <input name="max_duration" inputmode="decimal"></label>
  <label>Expires <input name="expires" type="date"></label>
  <label>Instructions (policy) <input name="policy.instructions" placeholder="none"></label>
  <label class="check"><input type="checkbox" name="log_transcripts" data-type="bool">
    Log transcripts</label>
  <div class="actions"><button type="submit" class="primary">Create token</button></div>
</form>
<div id="new-secret" class="secret" hidden>
  <p>Copy the secret now: it is stored only as a hash and is never shown again.</p>
  <div class="copy"><code id="new-secret-value"></code>
  <button type="button" data-copy="new-secret-value">Copy</button></div>
</div>
</details>"""
    body = (f'<h1>Tokens</h1>{form}<h2>All tokens</h2><div id="token-list">'
            + table(["Token", "Models", "Limits", "Spend", "Last used", "Expires", "Settings",
                     "State", ""], rows, "No tokens yet.") + "</div>")
    return page(request, login, "tokens", "Tokens", body)


@logged_in
async def channels_page(request: web.Request, login: Login) -> web.Response:
    gw = request.app[GATEWAY]
    rows = []
    for c in await gw.store.list_channels():
        v = ops.channel_view(c)
        toggle = button("Disable" if c.enabled else "Enable", "POST",
                        f"/admin/channels/{c.name}/{'disable' if c.enabled else 'enable'}")
        prio = (f'<input class="inline" type="number" value="{c.priority}" aria-label="priority" '
                f'data-patch="/admin/channels/{e(c.name)}" data-field="priority">')
        rows.append([
            f"<b>{e(c.name)}</b>", e(c.type), f"<small>{e(v['url'] or 'in-process')}</small>",
            e(", ".join(c.models)), prio, e(c.weight),
            '<span class="ok">enabled</span>' if c.enabled else '<span class="bad">disabled</span>',
            button("Test", "POST", f"/admin/channels/{c.name}/test", then="show",
                   out=f"test-{c.name}", cls="primary") + last_test(request, c.name),
            toggle + button("Remove", "DELETE", f"/admin/channels/{c.name}", cls="quiet",
                            confirm=f"Remove channel {c.name}?")])
    form = """
<details class="panel"><summary>Add a channel</summary>
<form data-api="POST /admin/channels" data-then="reload" class="grid">
  <label>Name <input name="name" required autocomplete="off"></label>
  <label>Type <select name="type"><option>openai</option><option>azure</option>
    <option>local</option></select></label>
  <label>Base URL <input name="base_url" placeholder="https://api.openai.com/v1"></label>
  <label>Azure endpoint <input name="endpoint" placeholder="https://RESOURCE.openai.azure.com"></label>
  <label>API key <input name="key" type="password" autocomplete="off"></label>
  <label>Models <input name="models" data-type="list" required placeholder="gpt-realtime"></label>
  <label>Priority <input name="priority" data-type="int" value="0"></label>
  <label>Weight <input name="weight" data-type="int" value="1"></label>
  <div class="actions"><button type="submit" class="primary">Add channel</button></div>
</form></details>"""
    body = (f"<h1>Channels</h1>{form}<h2>All channels</h2>"
            + table(["Channel", "Type", "URL", "Models", "Priority", "Weight", "State", "Test",
                     ""], rows, "No channels yet."))
    return page(request, login, "channels", "Channels", body)


def _select(name: str, options: list[str], current: str | None, blank: str = "any") -> str:
    opts = [f'<option value="">{e(blank)}</option>'] if blank else []
    opts += [f'<option{" selected" if o == current else ""}>{e(o)}</option>' for o in options]
    return f'<select name="{e(name)}">{"".join(opts)}</select>'


@logged_in
async def usage_page(request: web.Request, login: Login) -> web.Response:
    gw = request.app[GATEWAY]
    q = {k: v for k, v in request.query.items() if v and k in (
        "by", "token", "model", "since", "until")}
    q.setdefault("by", "day")
    try:
        rep = await ops.usage_report(gw.store, by=q["by"], token=q.get("token"),
                                     model=q.get("model"), since=q.get("since"),
                                     until=q.get("until"), by_name="by")
        problem = ""
    except StoreError as exc:
        rep, problem = None, f'<p class="error" role="alert">{e(exc)}</p>'
    names = [t.name for t in await gw.store.list_tokens()]
    form = (f'<form method="get" class="filters">'
            f'<label>By {_select("by", ["day", "model", "token", "channel"], q["by"], "")}</label>'
            f'<label>Token {_select("token", names, q.get("token"))}</label>'
            f'<label>Model <input name="model" value="{e(q.get("model", ""))}"></label>'
            f'<label>Since <input type="date" name="since" value="{e(q.get("since", ""))}"></label>'
            f'<label>Until <input type="date" name="until" value="{e(q.get("until", ""))}"></label>'
            f'<button type="submit">Show</button>'
            f'<a class="button" href="/admin/usage.csv?{e(urlencode(q))}" download>CSV</a></form>')
    body = f"<h1>Usage</h1>{form}{problem}"
    if rep is not None:
        body += bars([(str(r["key"]), r["cost_nanos"] / 1e9) for r in rep["rows"]],
                     lambda v: f"${v:.4f}", f"Cost by {rep['by']}, USD")
        cols = [("responses", "Responses"), ("transcriptions", "Transcr."),
                ("input_text", "Text in"), ("input_audio", "Audio in"),
                ("cached_text", "Cached text"), ("cached_audio", "Cached audio"),
                ("output_text", "Text out"), ("output_audio", "Audio out"),
                ("transcription_seconds", "Transcr. s")]
        rows = [[e(r["key"] if r is not rep["total"] else "total"),
                 *(e(r[c]) for c, _ in cols), usd(r["cost_usd"])]
                for r in [*rep["rows"], rep["total"]]] if rep["rows"] else []
        body += table([rep["by"].capitalize(), *(h for _, h in cols), "Cost"], rows,
                      "No usage in this range.", cls="numbers")
    return page(request, login, "usage", "Usage", body)


@logged_in
async def sessions_page(request: web.Request, login: Login) -> web.Response:
    gw = request.app[GATEWAY]
    q = {k: v for k, v in request.query.items() if v and k in (
        "token", "model", "channel", "close_code", "since", "until", "state", "offset")}
    live = await ops.live_sessions(gw)
    try:
        past = await ops.list_sessions(gw.store, limit=25, **q)
        problem = ""
    except StoreError as exc:
        past, problem = None, f'<p class="error" role="alert">{e(exc)}</p>'
    names = [t.name for t in await gw.store.list_tokens()]
    chans = [c.name for c in await gw.store.list_channels()]
    form = (f'<form method="get" class="filters">'
            f'<label>Token {_select("token", names, q.get("token"))}</label>'
            f'<label>Model <input name="model" value="{e(q.get("model", ""))}"></label>'
            f'<label>Channel {_select("channel", chans, q.get("channel"))}</label>'
            f'<label>Close code <input name="close_code" inputmode="numeric" size="5" '
            f'value="{e(q.get("close_code", ""))}"></label>'
            f'<label>State {_select("state", ["open", "closed"], q.get("state"), "all")}</label>'
            f'<label>Since <input type="date" name="since" value="{e(q.get("since", ""))}"></label>'
            f'<label>Until <input type="date" name="until" value="{e(q.get("until", ""))}"></label>'
            f'<button type="submit">Filter</button></form>')
    body = (f'<h1>Sessions</h1><h2>Live on this instance</h2>'
            f'<div id="live">{table(LIVE_HEAD, _live_rows(live), "No live sessions.")}</div>'
            f"<h2>All sessions</h2>{form}{problem}")
    if past is not None:
        running = {s["id"]: s for s in live}
        for s in past["sessions"]:      # a running session's counters are this instance's
            if s["id"] in running:
                s.update({k: running[s["id"]][k] for k in ("events_in", "events_out",
                                                           "cost_usd", "channel")})
        rows = [[f'<a href="/dashboard/sessions/{e(s["id"])}">{e(s["id"])}</a>', e(s["token"]),
                 e(s["model"]), e(s["channel"]), when(s["opened_at"]),
                 when(s["closed_at"]) if s["closed_at"] else '<span class="ok">open</span>',
                 e(s["close_code"] if s["close_code"] is not None else "—"),
                 e(s["closed_by"] or "—"), f'{s["events_in"]}/{s["events_out"]}',
                 usd(s["cost_usd"])] for s in past["sessions"]]
        body += table(["Session", "Token", "Model", "Channel", "Opened", "Closed", "Code", "By",
                       "Events", "Cost"], rows, "No sessions match.")
        off, total = past["offset"], past["total"]
        nav = []
        if off > 0:
            nav.append(f'<a href="?{e(urlencode({**q, "offset": max(off - 25, 0)}))}">← newer</a>')
        if off + 25 < total:
            nav.append(f'<a href="?{e(urlencode({**q, "offset": off + 25}))}">older →</a>')
        body += (f'<p class="pager">{off + 1 if total else 0}–{min(off + 25, total)} of {total} '
                 f'{" ".join(nav)}</p>')
    return page(request, login, "sessions", "Sessions", body)


_KIND = {"user": "User", "assistant": "Assistant", "tool_call": "Tool call",
         "tool_result": "Tool result"}


@logged_in
async def session_page(request: web.Request, login: Login) -> web.Response:
    gw = request.app[GATEWAY]
    try:
        s = await ops.session_detail(gw, request.match_info["id"])
    except StoreError:
        raise web.HTTPNotFound(text="No such session.") from None
    live = s.get("live")
    facts = [("Token", s["token"]), ("Model", s["model"]), ("Channel", s["channel"]),
             ("Client", f'{s["client"] or "—"} via {s["via"] or "—"}'),
             ("Opened", when(s["opened_at"])),
             ("Closed", when(s["closed_at"]) if s["closed_at"] else "live" if live else "open"),
             ("Close code", s["close_code"]), ("Closed by", s["closed_by"]),
             ("Events in/out", f'{(live or s)["events_in"]}/{(live or s)["events_out"]}'),
             ("Audio s in/out", f'{(live or s)["audio_in_seconds"]:.1f}/'
                                f'{(live or s)["audio_out_seconds"]:.1f}'),
             ("Cost", usd((live or s)["cost_usd"]))]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{v if k in ('Opened', 'Closed') else e(v)}</dd>"
                 for k, v in facts)
    end = ""
    if s["state"] in ("live", "open"):
        end = button("End this session", "DELETE", f"/admin/sessions/{s['id']}", cls="danger",
                     confirm="End this session? The client gets an error and close 1008.")
    turns = []
    for t in s["turns"]:
        meta = [when(t["created_at"])]
        if t["name"]:
            meta.append(f"<code>{e(t['name'])}</code>")
        if t["cost_usd"] is not None:
            meta.append(f'<span class="cost">{usd(t["cost_usd"])}</span>')
        u = t["usage"] or {}
        if "input_tokens" in u or "output_tokens" in u:
            meta.append(f'<small>{e(u.get("input_tokens", 0))} in / '
                        f'{e(u.get("output_tokens", 0))} out tokens</small>')
        text = t["text"]
        body = (f"<pre>{e(text)}</pre>" if t["kind"] in ("tool_call", "tool_result")
                else f"<p>{e(text)}</p>")
        turns.append(f'<li class="turn {e(t["kind"])}"><div class="who">{_KIND.get(t["kind"], e(t["kind"]))}'
                     f' {" · ".join(meta)}</div>{body}</li>')
    timeline = (f'<ol class="timeline">{"".join(turns)}</ol>' if turns else
                '<p class="empty">No transcript: this session was not logged '
                '(log_transcripts is off for it), or said nothing yet.</p>')
    ledger = table(["When", "Kind", "Model", "Status", "Cost"], [
        [when(r["created_at"]), e(r["kind"]), e(r["model"]), e(r["status"] or "—"),
         usd(r["cost_usd"])] for r in s["ledger"]], "No usage recorded.")
    body = (f'<p><a href="/dashboard/sessions">← Sessions</a></p><h1>Session <code>{e(s["id"])}'
            f'</code></h1>{end}<dl class="facts">{dl}</dl><h2>Transcript</h2>{timeline}'
            f"<h2>Ledger</h2>{ledger}")
    return page(request, login, "sessions", f"Session {s['id']}", body)


@logged_in
async def playground_page(request: web.Request, login: Login) -> web.Response:
    gw = request.app[GATEWAY]
    tokens = [t.name for t in await gw.store.list_tokens() if t.revoked_at is None]
    models = [m.id for m in await gw.router.models()]
    if not tokens or not models:
        note = ("Create a token first (Tokens)." if not tokens else
                "No model is served: add a channel first (Channels).")
        body = f'<h1>Playground</h1><p class="empty">{e(note)}</p>'
        return page(request, login, "playground", "Playground", body)
    body = f"""<h1>Playground</h1>
<p class="muted">Talk to a served model from this browser's microphone. The console mints a
one-use client secret with the token you pick (billed to it, held to its policy); the page
connects with that secret only, over WebRTC or a WebSocket.</p>
<form id="playground" class="filters">
  <label>Token {_select("token", tokens, tokens[0], "")}</label>
  <label>Model {_select("model", models, models[0], "")}</label>
  <label>Voice <input name="voice" placeholder="default" size="8"></label>
  <label>Transport <select name="transport"><option value="webrtc">WebRTC</option>
    <option value="websocket">WebSocket</option></select></label>
  <button type="submit" class="primary" id="pg-start">Start talking</button>
  <button type="button" id="pg-stop" disabled>Stop</button>
</form>
<p id="pg-status" class="muted" aria-live="polite">Idle.</p>
<div class="captions" id="pg-captions" aria-live="polite"></div>
<form id="pg-text" class="filters"><input name="text" placeholder="…or type a message" size="40">
<button type="submit">Send</button></form>
<audio id="pg-audio" autoplay></audio>
<script src="/dashboard/static/playground.js" defer></script>"""
    return page(request, login, "playground", "Playground", body)


async def playground_secret(request: web.Request) -> web.Response:
    """Mint a one-use client secret for the playground with the token the
    operator picked (cookie + CSRF, like every change)."""
    from ...client_secrets import mint
    from ...principal import Principal

    console = request.app[CONSOLE]
    login = console.get(request)
    if login is None:
        return web.json_response({"error": {"message": "Log in first.", "code": "login"}},
                                 status=401)
    if not csrf_ok(login, request.headers.get("X-CSRF-Token", "")):
        return web.json_response({"error": {"message": "Reload the page (CSRF).",
                                            "code": "csrf_failed"}}, status=403)
    gw = request.app[GATEWAY]
    try:
        body = await request.json()
    except ValueError:
        body = {}
    name, model = str(body.get("token", "")), str(body.get("model", ""))
    found = [t for t in await gw.store.list_tokens() if t.name == name and t.revoked_at is None]
    if not found:
        return web.json_response({"error": {"message": f"no active token {name!r}",
                                            "param": "token"}}, status=400)
    # captions need the input transcribed: with the model the token's policy pins, if any
    transcriber = found[0].policy.get("transcription_model") or "whisper-1"
    session: dict[str, Any] = {"type": "realtime", "model": model, "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000},
                  "transcription": {"model": transcriber}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    voice = str(body.get("voice") or "")
    if voice:
        session["audio"]["output"]["voice"] = voice
    try:
        minted = await mint(gw, Principal(found[0]), session,
                            expires_after={"anchor": "created_at", "seconds": 120}, max_uses=1)
    except GatewayError as exc:
        return web.json_response(exc.body(), status=exc.status)
    return web.json_response({"value": minted["value"], "model": model,
                              "expires_at": minted["expires_at"]})


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
