"""``GET /v1/models`` and ``GET /v1/models/{model}``: what this gateway serves.

SDKs and UIs call these to discover models (``client.models.list()``), so
they answer in OpenAI's shapes -- a ``list`` of ``model`` objects, one model,
or a 404 ``model_not_found`` error -- authenticated with a gateway token read
exactly as ``/v1/realtime`` reads it, and listing only the models that token
may use.  The list is :meth:`Router.models`, the same one a Realtime 404
names, so the two never disagree.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .. import peerlog

from ..errors import GatewayError
from ..providers.routing import ServedModel, served_hint
from .admin import GATEWAY

log = logging.getLogger("openopen8.models")


def _model(m: ServedModel) -> dict:
    return {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by}


def _error(request: web.Request, exc: GatewayError) -> web.Response:
    # one line per refusal like /v1/realtime's: throttled, the client-written path quoted
    peerlog.note(log, ("models refused", exc.status, exc.code),
                 "refused %d %s: path=%.100r peer=%s", exc.status, exc.code, request.path,
                 request.remote or "-")
    return web.json_response(exc.body(), status=exc.status, headers=exc.headers)


async def _served(request: web.Request) -> tuple[list[ServedModel], list[ServedModel]]:
    """Every model served, and those the request's token may use."""
    gw = request.app[GATEWAY]
    client = gw.client_address(request.headers, request.remote)      # braked per client address
    who = await gw.authenticate(request.headers, request.query, client)   # AuthError (401), 429
    served = await gw.router.models()
    return served, [m for m in served if who.allows(m.id)]


async def list_models(request: web.Request) -> web.Response:
    try:
        _, usable = await _served(request)
    except GatewayError as exc:
        return _error(request, exc)
    return web.json_response({"object": "list", "data": [_model(m) for m in usable]})


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    try:
        served, usable = await _served(request)
    except GatewayError as exc:
        return _error(request, exc)
    for m in usable:
        if m.id == name:
            return web.json_response(_model(m))
    hint = served_hint(name, [m.id for m in usable], any_served=bool(served))
    return _error(request, GatewayError(
        f"The model '{name}' does not exist or you do not have access to it.{hint}",
        code="model_not_found", status=404, param="model"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
