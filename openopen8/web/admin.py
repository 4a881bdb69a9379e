"""The admin API: everything the CLI does, over HTTP, for the console and
for operators' own tools.  The OpenAPI document is ``GET /admin/openapi.json``
(web/openapi.py).

Every route needs ``Authorization: Bearer <admin_token>`` (settings
``admin_token`` / ``OPENOPEN8_ADMIN_TOKEN``), compared in constant time --
or the dashboard's session cookie (web/dashboard: a login with the admin
token), with its CSRF token in ``X-CSRF-Token`` on every change.  Without an
admin token configured the API refuses everything with a 401 that says so.
Wrong admin tokens are braked per client address like gateway tokens
(web/brake.py: 429 with Retry-After), and each refusal is one log line.

Request bodies are JSON, validated (pydantic): a wrong or unknown field is a
400 whose ``error.param`` names it.  Every route calls :mod:`openopen8.ops`,
as the CLI does:

* tokens: ``GET/POST /admin/tokens``, ``GET/PATCH/DELETE /admin/tokens/{name}``,
  ``POST /admin/tokens/{name}/revoke``;
* channels: ``GET/POST /admin/channels``, ``PATCH/DELETE /admin/channels/{name}``,
  ``POST /admin/channels/{name}/enable|disable|test``;
* sessions: ``GET /admin/sessions`` (past and open, filtered, paginated),
  ``GET /admin/sessions/live``, ``GET/DELETE /admin/sessions/{id}``;
* usage: ``GET /admin/usage`` (``format=csv``) and ``/admin/usage.csv``;
* ``GET /admin/overview`` -- the dashboard's first page as JSON.
"""

from __future__ import annotations

import hmac
import logging
import re
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from .. import metrics, ops, peerlog
from ..errors import AuthError, GatewayError
from ..store.base import StoreError, TokenLimits
from . import openapi
from .openapi import ChannelCreate, ChannelTest, ChannelUpdate, TokenCreate, TokenUpdate

log = logging.getLogger("openopen8.admin")

#: the Gateway object on the aiohttp application
GATEWAY = web.AppKey("gateway", object)
#: who may use the admin API besides the bearer admin token (web/dashboard: its
#: cookie sessions): ``fn(request) -> None`` (not its cookie), True (allowed) or
#: a GatewayError to refuse with
COOKIE_AUTH = web.AppKey("cookie_auth", object)

#: each channel's last test result on this instance (name -> result), for the console
LAST_TESTS = web.AppKey("last_tests", dict)

_FLAG = re.compile(r"--([a-z][a-z-]*)")


def _error(status: int, message: str, code: str, param: str | None = None,
           type: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": type, "param": param,
                                        "code": code}}, status=status)


def store_error(exc: StoreError, status: int = 400) -> web.Response:
    """An ops refusal as a 400 (404 for an unknown name): the CLI's flag in
    its message (``--weight``) is the API's field (``weight``)."""
    text = str(exc)
    m = _FLAG.search(text)
    param = getattr(exc, "field", None) or (m.group(1).replace("-", "_") if m else None)
    text = _FLAG.sub(lambda m: m.group(1).replace("-", "_"), text)
    if text.startswith(("no token", "no channel", "no session", "no open session")):
        return _error(404, text, "not_found", param)
    if "already exists" in text:
        return _error(409, text, "already_exists", "name")
    return _error(status, text, "invalid_value", param)


def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def _refuse(request: web.Request, client: str, exc: GatewayError) -> web.Response:
    """The refusal, and one log line (status, code, path, client address --
    never what was sent as the token), throttled per status and code."""
    metrics.REFUSALS.labels(str(exc.status), str(exc.code)).inc()
    peerlog.note(log, ("admin refused", exc.status, exc.code),
                 "refused %d %s: path=%r client=%s peer=%s", exc.status, exc.code,
                 request.path[:80], client or "-", request.remote or "-")
    return web.json_response(exc.body(), status=exc.status, headers=exc.headers)


def check_admin_token(gw: Any, client: str, given: str) -> GatewayError | None:
    """None when ``given`` is the admin token; else the refusal (braked per
    client address).  The dashboard's login uses it too."""
    secret = gw.settings.admin_token
    if secret is None or not secret.get_secret_value():
        return AuthError(
            "The admin API is disabled: set admin_token (OPENOPEN8_ADMIN_TOKEN) to enable it.",
            code="admin_api_disabled")
    if not given:
        return AuthError(
            "This admin endpoint needs 'Authorization: Bearer ADMIN_TOKEN' (the gateway's "
            "admin_token setting).", code="invalid_admin_token")
    try:
        gw.admin_brake.check(client)      # a guesser's next try, refused before comparing
    except GatewayError as exc:
        return exc
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               secret.get_secret_value().encode()):
        gw.admin_brake.failed(client)
        return AuthError(
            "Incorrect admin token: this endpoint needs 'Authorization: Bearer ADMIN_TOKEN' "
            "(the gateway's admin_token setting).", code="invalid_admin_token")
    return None


async def _audited(request: web.Request, handler: Any, client: str,
                   who: str) -> web.StreamResponse:
    """Run a change and write one INFO line: method, path (names only: no
    body, never a secret), status, client address, and who (console or
    token)."""
    resp = await handler(request)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        log.info("admin %s %s -> %d client=%s via=%s", request.method, request.path[:120],
                 resp.status, client or "-", who)
    return resp


@web.middleware
async def _admin_only(request: web.Request, handler: Any) -> web.StreamResponse:
    if not request.path.startswith("/admin/"):
        return await handler(request)
    gw = request.app[GATEWAY]
    client = gw.client_address(request.headers, request.remote)
    given = _bearer(request)
    cookie_auth = request.app.get(COOKIE_AUTH)
    if not given and cookie_auth is not None:
        verdict = cookie_auth(request)
        if verdict is True:
            return await _audited(request, handler, client, "console")
        if isinstance(verdict, GatewayError):
            return _refuse(request, client, verdict)
    problem = check_admin_token(gw, client, given)
    if problem is not None:
        return _refuse(request, client, problem)
    return await _audited(request, handler, client, "admin_token")


async def _body(request: web.Request, model: Any) -> Any:
    """The JSON body as ``model``, or a 400 response naming the field."""
    try:
        data = await request.json() if request.can_read_body else {}
    except ValueError:
        return _error(400, "The request body is not valid JSON.", "invalid_json")
    if not isinstance(data, dict):
        return _error(400, "The request body must be a JSON object.", "invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown field"
        return _error(400, f"{param}: {msg}", "invalid_value", param)


def _gw(request: web.Request) -> Any:
    return request.app[GATEWAY]


# ---- tokens ------------------------------------------------------------------

def _token_view(t: Any, last_used: dict[int, Any] | None = None) -> dict[str, Any]:
    v = ops.token_view(t)
    v.setdefault("policy", t.policy)
    v.setdefault("origins", t.origins)
    v.setdefault("log_transcripts", t.log_transcripts)
    used = (last_used or {}).get(t.id)
    v["last_used_at"] = used.isoformat() if used is not None else None
    return v


async def tokens(request: web.Request) -> web.Response:
    store = _gw(request).store
    rows = await store.list_tokens()
    used = await store.tokens_last_used()
    return web.json_response([_token_view(t, used) for t in rows])


async def token_get(request: web.Request) -> web.Response:
    store = _gw(request).store
    try:
        t = await ops.find_token(store, request.match_info["name"])
    except StoreError as exc:
        return store_error(exc)
    return web.json_response(_token_view(t, await store.tokens_last_used()))


def _settings_of(body: Any) -> dict[str, Any]:
    """policy / origins / log_transcripts as given (unset ones left out)."""
    return {k: getattr(body, k) for k in ("policy", "origins", "log_transcripts")
            if k in body.model_fields_set}


async def token_create(request: web.Request) -> web.Response:
    body = await _body(request, TokenCreate)
    if isinstance(body, web.Response):
        return body
    store = _gw(request).store
    settings = _settings_of(body)
    try:
        limits = TokenLimits(**ops.parse_limits(**body.limits()))
        new = await ops.create_token(store, body.name, body.models or [], body.expires, limits,
                                     **settings)
        rec = new.record
    except StoreError as exc:
        return store_error(exc)
    return web.json_response({**_token_view(rec), "secret": new.secret}, status=201)


async def token_update(request: web.Request) -> web.Response:
    body = await _body(request, TokenUpdate)
    if isinstance(body, web.Response):
        return body
    store = _gw(request).store
    name = request.match_info["name"]
    try:
        rec = await ops.update_token(store, name, body.models, body.expires,
                                     clear_policy=body.clear_policy, **_settings_of(body),
                                     **body.limits())
    except StoreError as exc:
        return store_error(exc)
    return web.json_response(_token_view(rec, await store.tokens_last_used()))


async def token_revoke(request: web.Request) -> web.Response:
    try:
        rec = await _gw(request).store.revoke_token(request.match_info["name"])
    except StoreError as exc:
        return store_error(exc)
    return web.json_response(_token_view(rec))


async def token_delete(request: web.Request) -> web.Response:
    try:
        await ops.delete_token(_gw(request).store, request.match_info["name"])
    except StoreError as exc:
        return store_error(exc, status=409)
    return web.json_response({"deleted": request.match_info["name"]})


# ---- channels ------------------------------------------------------------------

async def channels(request: web.Request) -> web.Response:
    return web.json_response([ops.channel_view(c)
                              for c in await _gw(request).store.list_channels()])


async def channel_add(request: web.Request) -> web.Response:
    body = await _body(request, ChannelCreate)
    if isinstance(body, web.Response):
        return body
    gw = _gw(request)
    try:
        ch = await ops.add_channel(
            gw.store, gw.box, body.name, body.type, key=body.key, models=body.models,
            base_url=body.base_url, endpoint=body.endpoint, deployments=body.deployments,
            api_version=body.api_version, priority=body.priority, weight=body.weight)
    except StoreError as exc:
        return store_error(exc)
    gw.router.invalidate()
    return web.json_response(ops.channel_view(ch), status=201)


async def channel_update(request: web.Request) -> web.Response:
    body = await _body(request, ChannelUpdate)
    if isinstance(body, web.Response):
        return body
    gw = _gw(request)
    try:
        ch = await ops.update_channel(gw.store, gw.box, request.match_info["name"],
                                      **body.model_dump(exclude_unset=True))
    except StoreError as exc:
        return store_error(exc)
    gw.router.invalidate()
    return web.json_response(ops.channel_view(ch))


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    gw = _gw(request)
    try:
        ch = await gw.store.set_channel_enabled(request.match_info["name"], enabled)
    except StoreError as exc:
        return store_error(exc)
    gw.router.invalidate()
    return web.json_response(ops.channel_view(ch))


async def channel_enable(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)


async def channel_disable(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


async def channel_remove(request: web.Request) -> web.Response:
    gw = _gw(request)
    try:
        await gw.store.remove_channel(request.match_info["name"])
    except StoreError as exc:
        return store_error(exc)
    gw.router.invalidate()
    return web.json_response({"deleted": request.match_info["name"]})


async def channel_test(request: web.Request) -> web.Response:
    body = await _body(request, ChannelTest)
    if isinstance(body, web.Response):
        return body
    gw = _gw(request)
    name = request.match_info["name"]
    found = [c for c in await gw.store.list_channels() if c.name == name]
    if not found:
        return store_error(StoreError(f"no channel named {name!r}"))
    result = await ops.test_channel(gw.router, found[0], body.model)
    result["at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    request.app[LAST_TESTS][name] = result      # the console's channel health shows it
    return web.json_response(result)


# ---- sessions --------------------------------------------------------------------

async def sessions(request: web.Request) -> web.Response:
    q = request.query
    try:
        page = await ops.list_sessions(
            _gw(request).store, token=q.get("token"), model=q.get("model"),
            channel=q.get("channel"), close_code=q.get("close_code"), since=q.get("since"),
            until=q.get("until"), state=q.get("state"), limit=q.get("limit", 50),
            offset=q.get("offset", 0))
    except StoreError as exc:
        return _param_error(exc, ("close_code", "limit", "offset", "state", "since", "until"))
    return web.json_response(page)


def _param_error(exc: StoreError, names: tuple[str, ...]) -> web.Response:
    text = str(exc)
    param = next((n for n in names if text.startswith(n)), None)
    return _error(400, text, "invalid_value", param)


async def sessions_live(request: web.Request) -> web.Response:
    return web.json_response(await ops.live_sessions(_gw(request)))


async def session_get(request: web.Request) -> web.Response:
    try:
        return web.json_response(await ops.session_detail(_gw(request), request.match_info["id"]))
    except StoreError as exc:
        return store_error(exc)


async def session_end(request: web.Request) -> web.Response:
    sid = request.match_info["id"]
    try:
        where = await ops.end_live_session(_gw(request), sid)
    except StoreError as exc:
        return store_error(exc)
    return web.json_response({"id": sid, "ending": True, "instance": where}, status=202)


# ---- usage and overview ------------------------------------------------------------

async def usage(request: web.Request) -> web.Response:
    q = request.query
    fmt = "csv" if request.path.endswith(".csv") else q.get("format", "json")
    if fmt not in ("json", "csv"):
        return _error(400, f"format must be json or csv (got {fmt!r})", "invalid_value", "format")
    try:
        report = await ops.usage_report(_gw(request).store, by=q.get("by", "model"),
                                        token=q.get("token"), model=q.get("model"),
                                        since=q.get("since"), until=q.get("until"),
                                        by_name="the 'by' query parameter")
    except StoreError as exc:
        param = "by" if "'by'" in str(exc) else "since"
        return _error(400, str(exc), "invalid_value", param)
    if fmt == "csv":
        return web.Response(text=ops.usage_csv(report), content_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="usage-by-{report["by"]}.csv"'})
    return web.json_response(report)


async def overview(request: web.Request) -> web.Response:
    return web.json_response(await ops.overview(_gw(request)))


async def openapi_doc(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


def add_routes(app: web.Application) -> None:
    app.middlewares.append(_admin_only)
    app[LAST_TESTS] = {}
    r = app.router
    r.add_get("/admin/openapi.json", openapi_doc)
    r.add_get("/admin/overview", overview)
    r.add_get("/admin/usage", usage)
    r.add_get("/admin/usage.csv", usage)
    r.add_get("/admin/tokens", tokens)
    r.add_post("/admin/tokens", token_create)
    r.add_get("/admin/tokens/{name}", token_get)
    r.add_patch("/admin/tokens/{name}", token_update)
    r.add_delete("/admin/tokens/{name}", token_delete)
    r.add_post("/admin/tokens/{name}/revoke", token_revoke)
    r.add_get("/admin/channels", channels)
    r.add_post("/admin/channels", channel_add)
    r.add_patch("/admin/channels/{name}", channel_update)
    r.add_delete("/admin/channels/{name}", channel_remove)
    r.add_post("/admin/channels/{name}/enable", channel_enable)
    r.add_post("/admin/channels/{name}/disable", channel_disable)
    r.add_post("/admin/channels/{name}/test", channel_test)
    r.add_get("/admin/sessions", sessions)
    r.add_get("/admin/sessions/live", sessions_live)
    r.add_get("/admin/sessions/{id}", session_get)
    r.add_delete("/admin/sessions/{id}", session_end)
