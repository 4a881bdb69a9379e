"""The console's pages: Overview, Tokens, Channels, Usage, Sessions (and one
session's detail), Playground -- each a view over :mod:`openopen8.ops`, the
operations the admin API and the CLI share."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ... import ops
from ...errors import GatewayError
from ...store.base import StoreError
from ..admin import GATEWAY, LAST_TESTS
from .html import bars, button, e, meter, page, table, usd, when
from .login import CONSOLE, Login, csrf_ok, logged_in

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
    form = """
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
    token = await gw.store.token_by_name(name)
    if token is None or token.revoked_at is not None:
        return web.json_response({"error": {"message": f"no active token {name!r}",
                                            "param": "token"}}, status=400)
    # captions need the input transcribed: with the model the token's policy pins, if any
    transcriber = token.policy.get("transcription_model") or "whisper-1"
    session: dict[str, Any] = {"type": "realtime", "model": model, "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000},
                  "transcription": {"model": transcriber}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    voice = str(body.get("voice") or "")
    if voice:
        session["audio"]["output"]["voice"] = voice
    try:
        minted = await mint(gw, Principal(token), session,
                            expires_after={"anchor": "created_at", "seconds": 120}, max_uses=1)
    except GatewayError as exc:
        return web.json_response(exc.body(), status=exc.status)
    return web.json_response({"value": minted["value"], "model": model,
                              "expires_at": minted["expires_at"]})


