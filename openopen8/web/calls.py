"""WebRTC at the gateway: ``POST /v1/realtime/calls`` (OpenAI's interface).

A call is a session like any other: the request is admitted like a
WebSocket upgrade (same tokens and client secrets, limits, policy, ledger;
``web/admission.py``, ``via="webrtc"``), the channel's upstream is opened,
and only then is the SDP answered -- every refusal is an HTTP status with the
WebSocket path's JSON body, before any media.  The gateway terminates the
call (aiortc, ``relay/rtc.py``) and relays it through the session's stage
chain to whatever channel serves the model: OpenAI, Azure, the local engine.

* ``POST /v1/realtime/calls?model=M``: ``application/sdp`` (the offer; a
  browser with a client secret) or ``multipart/form-data`` with ``sdp`` and
  ``session`` (GA session JSON; a server with a token).  ``201``, the answer
  (``application/sdp``), ``Location: /v1/realtime/calls/rtc_…``.
* ``POST /v1/realtime/calls/{id}/hangup``: ends the call (its token only).
* ``GET /v1/realtime?call_id=ID`` (the front door hands it here,
  :func:`sideband`): a server WebSocket attached to the live call.
* CORS (:func:`cors`): a page on its own origin may call these routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..auth import offered_subprotocols
from ..errors import ForbiddenError, GatewayError
from ..events import Event
from .admin import GATEWAY
from . import admission

log = logging.getLogger("openopen8.webrtc")

#: the routes a browser page on another origin may call (CORS)
CORS_PATHS = ("/v1/realtime/calls", "/v1/realtime/client_secrets", "/v1/realtime/sessions")
CORS_HEADERS = "Authorization, Content-Type, OpenAI-Beta, OpenAI-Organization, OpenAI-Project"
MAX_SDP = 64 * 1024
#: the origins of the token a request used (set by the handler, read by :func:`cors`)
TOKEN_ORIGINS = web.RequestKey("token_origins", set)


@dataclass
class Call:
    id: str
    token_id: Any
    endpoint: Any
    session_id: str
    secret_id: Any = None        # the client secret that placed it, if one did
    task: asyncio.Task | None = None
    started: float = field(default_factory=time.monotonic)


def _error(exc: GatewayError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status, headers=exc.headers)


def _refused(request: web.Request, client: str, exc: GatewayError) -> web.Response:
    admission.log_refusal(exc, model=getattr(exc, "model", "") or request.query.get("model", ""),
                          client=client, peer=request.remote or "-", who=getattr(exc, "who", None))
    return _error(exc)


# ------------------------------------------------------------------ CORS

def _origin_of(value: str) -> str:
    return value.rstrip("/")


#: every live token's origins, and when they were read (monotonic seconds)
TOKEN_ORIGINS_READ = web.AppKey("token_origins_read", list)


async def _token_origins(app: web.Application) -> set[str]:
    """Every live token's origins (a preflight carries no credentials),
    re-read at most every ``refresh_seconds``."""
    gw = app[GATEWAY]
    cache = app[TOKEN_ORIGINS_READ]
    now = time.monotonic()
    if cache and now - cache[0] < gw.settings.refresh_seconds:
        return cache[1]
    found: set[str] = set()
    for t in await gw.store.list_tokens():
        if t.revoked_at is None:
            found.update(_origin_of(o) for o in t.origins)
    cache[:] = [now, found]
    return found


def _same_origin(request: web.Request, origin: str) -> bool:
    return urlsplit(origin).netloc == request.host


@web.middleware
async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
    """CORS for :data:`CORS_PATHS`.  Allowed origins: ``cors_origins``, and
    the origins of the token used (its own list).  A preflight has no
    credentials, so it is answered for ``cors_origins`` and every live
    token's origins; the request that follows is then checked against its
    own token (``admission.check_origin``: 403 for another origin)."""
    path = request.path
    if not path.startswith(CORS_PATHS):
        return await handler(request)
    origin = request.headers.get("Origin")
    gw = request.app[GATEWAY]
    configured = {_origin_of(o) for o in gw.settings.cors_origins}
    if request.method == "OPTIONS":
        resp = web.Response(status=204)
        if origin and ("*" in configured or _origin_of(origin) in configured
                       or _origin_of(origin) in await _token_origins(request.app)):
            resp.headers.update({
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", CORS_HEADERS),
                "Access-Control-Max-Age": "600", "Vary": "Origin"})
        else:
            resp.headers["Vary"] = "Origin"
        return resp
    resp = await handler(request)
    if origin:
        allowed = "*" in configured or _origin_of(origin) in configured or \
            _origin_of(origin) in request.get(TOKEN_ORIGINS, ())
        if allowed:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Expose-Headers"] = "Location"
        resp.headers["Vary"] = "Origin"
    return resp


def _check_cors(request: web.Request, who: Any) -> None:
    """A browser page on another origin, allowed neither by ``cors_origins``
    nor by its token, could not read the answer: refused before any media
    rather than leaving a call no one can finish."""
    origin = request.headers.get("Origin")
    if not origin or _same_origin(request, origin):
        return
    gw = request.app[GATEWAY]
    configured = {_origin_of(o) for o in gw.settings.cors_origins}
    mine = {_origin_of(o) for o in who.token.origins}
    request[TOKEN_ORIGINS] = mine
    if "*" not in configured and _origin_of(origin) not in configured | mine:
        raise ForbiddenError(f"Calls from the origin {admission.quoted(origin)} are not allowed "
                             "(cors_origins, or the token's origins).", code="origin_not_allowed")


# ------------------------------------------------------------------ POST /v1/realtime/calls

async def _read_offer(request: web.Request) -> tuple[str, dict | None]:
    ctype = request.content_type
    if ctype == "application/sdp":
        body = await request.content.read(MAX_SDP + 1)
        if len(body) > MAX_SDP:
            raise GatewayError("The SDP offer is too large.", code="invalid_value", param="sdp")
        return body.decode("utf-8", "replace"), None
    if ctype == "multipart/form-data":
        sdp, session = None, None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            data = await part.read(decode=False)
            if len(data) > MAX_SDP:
                raise GatewayError(f"The '{part.name}' part is too large.", code="invalid_value",
                                   param=part.name)
            if part.name == "sdp":
                sdp = data.decode("utf-8", "replace")
            elif part.name == "session":
                try:
                    session = json.loads(data)
                except ValueError:
                    raise GatewayError("The 'session' part is not JSON.", code="invalid_json",
                                       param="session") from None
                if not isinstance(session, dict):
                    raise GatewayError("The 'session' part must be a JSON object.",
                                       code="invalid_value", param="session")
        if sdp is None:
            raise GatewayError("Missing required parameter: 'sdp'.", code="missing_required_parameter",
                               param="sdp")
        return sdp, session
    raise GatewayError("Send the SDP offer as 'Content-Type: application/sdp', or "
                       "multipart/form-data with 'sdp' (and 'session') parts.",
                       code="invalid_content_type")


def _check_sdp(sdp: str) -> None:
    from aiortc.sdp import SessionDescription
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception:  # noqa: BLE001 - whatever the parser says, it is the client's SDP
        parsed = None
    if parsed is None or not parsed.media:
        raise GatewayError("The SDP offer could not be parsed.", code="invalid_offer", param="sdp")


async def create_call(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    client = gw.client_address(request.headers, request.remote)
    try:
        from ..relay import rtc
    except ImportError:
        return _error(GatewayError("WebRTC is not installed on this gateway: "
                                   "pip install 'openopen8[webrtc]'.", code="not_implemented",
                                   status=501, type="server_error"))
    try:
        sdp, session = await _read_offer(request)
        _check_sdp(sdp)
    except GatewayError as exc:
        return _refused(request, client, exc)
    query = dict(request.query)
    if session is not None and not query.get("model") and isinstance(session.get("model"), str):
        query["model"] = session["model"]
    try:
        adm, who, _ = await admission.admit(gw, request.headers, query, client, via="webrtc",
                                            beta=False)
    except GatewayError as exc:
        return _refused(request, client, exc)
    if adm is None:
        return web.Response(status=499)
    try:
        _check_cors(request, who)
    except GatewayError as exc:
        await gw.ledger.abandon(adm.session)
        exc.who, exc.model = who, adm.session.model    # type: ignore[attr-defined]
        return _refused(request, client, exc)
    s = adm.session
    s.client_dialect = "ga"                  # OpenAI's WebRTC interface is GA only
    s.facts["dialect_source"] = "header"     # (not guessed from a first session.update)
    for ev in s.facts.get("preamble") or ():     # a secret's session: Opus on the wire, PCM inside
        rtc.strip_formats_event(ev)
    try:
        opened = await admission.open_upstream(gw, adm, None)
    except GatewayError as exc:
        return _refused(request, client, exc)
    _, _, upstream = opened
    call_id = "rtc_" + secrets.token_hex(12)
    st = gw.settings
    first = []
    if session is not None:       # the server's session: a client event, judged like one
        session = dict(session)
        session.pop("model", None)
        session.setdefault("type", "realtime")
        first.append(rtc.strip_formats_event(Event.from_data({"type": "session.update",
                                                              "session": session})))
    pc = rtc.new_peer(st.webrtc_ice_servers)
    try:
        ep = rtc.RtcEndpoint(pc, call_id, connect_seconds=st.webrtc_connect_seconds,
                             idle_seconds=st.webrtc_idle_seconds, first=first)
        from aiortc import RTCSessionDescription
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        ep.offer_set()
        hosts = [h.strip() for h in (st.webrtc_host or st.host).split(",") if h.strip()]
        hosts = [h for h in hosts if h not in ("0.0.0.0", "::", "*")]
        rtc.restrict_ice(pc, hosts, st.webrtc_port_min, st.webrtc_port_max)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        if "a=candidate:" not in answer:
            raise _NoPort()
    except BaseException as exc:
        await upstream.close(1000)
        await gw.ledger.abandon(s)
        try:
            await asyncio.wait_for(pc.close(), 5)
        except Exception:  # noqa: BLE001
            pass
        if isinstance(exc, _NoPort):
            log.warning("call refused: no UDP port could be bound for its media (webrtc_host "
                        "%s, ports %s-%s)", st.webrtc_host or st.host, st.webrtc_port_min,
                        st.webrtc_port_max)
            return _refused(request, client, GatewayError(
                "The gateway has no free port for the call's media; retry later.",
                code="webrtc_ports_exhausted", status=503, type="server_error",
                headers={"Retry-After": "1"}))
        if isinstance(exc, Exception):
            log.info("call refused: the offer could not be answered: %s", exc)
            return _refused(request, client, GatewayError(
                "The SDP offer could not be answered (it needs an audio track or the "
                "'oai-events' data channel).", code="invalid_offer", param="sdp"))
        raise
    call = Call(call_id, who.token.id, ep, s.id,
                who.secret.id if who.secret is not None else None)
    calls = gw.calls
    calls[call_id] = call
    ep.start()

    async def run() -> None:
        try:
            await admission.run(gw, adm, ep, upstream)
        finally:
            calls.pop(call_id, None)
            await ep.close(ep.close_code or 1000)

    call.task = asyncio.ensure_future(run())
    log.info("call %s answered: session=%s token=%s", call_id, s.id, who.name)
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={"Location": f"/v1/realtime/calls/{call_id}"})


class _NoPort(Exception):
    """No host candidate could be gathered (the UDP port range is used up)."""


def _find(gw: Any, who: Any, call_id: str) -> Call:
    """The live call ``who`` may reach: the token that placed it (itself or
    through a secret), or the very secret that placed it -- never another
    secret of the token (secrets are handed to end users)."""
    call = gw.calls.get(call_id)
    if call is None or call.token_id != who.token.id or (
            who.secret is not None and who.secret.id != call.secret_id):
        raise GatewayError(f"No call '{call_id[:40]}' is live for this credential.",
                           code="call_not_found", status=404, param="call_id")
    return call


async def _call_for(request: web.Request, call_id: str) -> tuple[Any, Call]:
    gw = request.app[GATEWAY]
    client = gw.client_address(request.headers, request.remote)
    who = await gw.authenticate(request.headers, request.query, client)
    return who, _find(gw, who, call_id)


async def hangup(request: web.Request) -> web.StreamResponse:
    try:
        _, call = await _call_for(request, request.match_info["call_id"])
    except GatewayError as exc:
        gw = request.app[GATEWAY]
        return _refused(request, gw.client_address(request.headers, request.remote), exc)
    call.endpoint.hang_up()
    if call.task is not None:
        await asyncio.wait([call.task], timeout=10)
    return web.Response(status=200)


# ------------------------------------------------------------------ sideband

async def sideband(gw: Any, door: Any, head: Any) -> None:
    """``GET /v1/realtime?call_id=ID``: a WebSocket attached to a live call
    with the gateway token that placed it (itself, or through a secret).  It gets every
    server event of the call and may send client events (tool results,
    ``session.update``); its closing does not end the call."""
    from ..relay.endpoint import WsEndpoint
    from .realtime import _refuse

    call_id = head.query.get("call_id", "")
    try:
        who = await gw.authenticate(head.headers, head.query, door.client)
        if who.secret is not None:     # a backend's door, as OpenAI's (its API key)
            raise ForbiddenError("A sideband attaches with a gateway token, not a client "
                                 "secret.", code="token_required")
        call = _find(gw, who, call_id)
    except GatewayError as exc:
        _refuse(door, exc, "", getattr(exc, "who", None))
        return
    ws = WsEndpoint()
    subprotocol = "realtime" if "realtime" in offered_subprotocols(head.headers) else None
    if not door.upgrade(ws, subprotocol, head):
        return
    log.info("call %s: sideband attached (token=%s)", call_id, who.name)
    await call.endpoint.attach_sideband(ws)     # until it or the call ends


async def _calls_ended(app: web.Application) -> None:
    """At shutdown (after the gateway closed the sessions): each call's peer
    connection closed before the loop goes."""
    tasks = [c.task for c in app[GATEWAY].calls.values() if c.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=10)


def add_routes(app: web.Application) -> None:
    app[TOKEN_ORIGINS_READ] = []
    app.middlewares.append(cors)
    app.on_cleanup.append(_calls_ended)
    app.router.add_post("/v1/realtime/calls", create_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", hangup)
    # a preflight needs a route to reach the middleware
    app.router.add_route("OPTIONS", "/v1/realtime/calls", _no_content)
    app.router.add_route("OPTIONS", "/v1/realtime/calls/{tail:.*}", _no_content)
    app.router.add_route("OPTIONS", "/v1/realtime/client_secrets", _no_content)
    app.router.add_route("OPTIONS", "/v1/realtime/sessions", _no_content)


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)
