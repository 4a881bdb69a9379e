"""``POST /v1/realtime/client_secrets`` (GA) and ``POST /v1/realtime/sessions``
/ ``/v1/realtime/transcription_sessions`` (beta): a backend mints a
short-lived client secret with its gateway token (``openopen8/client_secrets.py``).

Authenticated like every gateway request (Bearer, ``api-key`` …; braked per
client address); refusals are OpenAI-style JSON, one throttled log line each
-- the secret minted is never logged.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from .. import client_secrets
from ..errors import GatewayError
from .admin import GATEWAY
from .admission import check_origin, log_refusal

log = logging.getLogger("openopen8.secrets")


async def _body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError("The request body is not valid JSON.", code="invalid_json") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise GatewayError("The request body must be a JSON object.", code="invalid_value")
    return body


async def _mint(request: web.Request, shape: str) -> web.Response:
    gw = request.app[GATEWAY]
    client = gw.client_address(request.headers, request.remote)
    who = None
    try:
        who = await gw.authenticate(request.headers, request.query, client)
        check_origin(who, request.headers.get("Origin"))
        body = await _body(request)
        if shape == "ga":
            unknown = set(body) - {"expires_after", "session", "max_uses"}
            if unknown:
                name = sorted(unknown)[0]
                raise GatewayError(f"Unknown parameter: '{name}'.", code="unknown_parameter",
                                   param=name)
            out = await client_secrets.mint(gw, who, body.get("session"),
                                            expires_after=body.get("expires_after"),
                                            max_uses=body.get("max_uses"))
        else:
            out = await client_secrets.mint_beta(gw, who, body, kind=shape)
    except GatewayError as exc:
        log_refusal(exc, model="", client=client, peer=request.remote or "-", who=who)
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    log.info("client secret minted: token=%s ttl_until=%s", who.name, out.get("expires_at")
             or out["client_secret"]["expires_at"])
    return web.json_response(out)


async def ga(request: web.Request) -> web.Response:
    return await _mint(request, "ga")


async def beta_session(request: web.Request) -> web.Response:
    return await _mint(request, "realtime")


async def beta_transcription(request: web.Request) -> web.Response:
    return await _mint(request, "transcription")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/realtime/client_secrets", ga)
    app.router.add_post("/v1/realtime/sessions", beta_session)
    app.router.add_post("/v1/realtime/transcription_sessions", beta_transcription)
