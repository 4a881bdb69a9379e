"""The admin API: the CLI's reports over HTTP, for dashboards and billing.

Every route needs ``Authorization: Bearer <admin_token>`` (settings
``admin_token`` / ``OPENOPEN8_ADMIN_TOKEN``), compared in constant time.
Without an admin token configured the API refuses everything with a 401 that
says so.  Wrong admin tokens are braked per client address like gateway
tokens (web/brake.py: 429 with Retry-After), and each refusal is one log line.

* ``GET /admin/usage?by=day|model|token|channel&token=&model=&since=&until=``
  -- the same report as ``openopen8 usage --json``;
* ``GET /admin/tokens`` -- tokens with their limits and spend (never secrets).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from .. import metrics, ops, peerlog
from ..errors import AuthError, GatewayError
from ..store.base import StoreError

log = logging.getLogger("openopen8.admin")

#: the Gateway object on the aiohttp application
GATEWAY = web.AppKey("gateway", object)


def _error(status: int, message: str, code: str, type: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": type, "param": None,
                                        "code": code}}, status=status)


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


@web.middleware
async def _admin_only(request: web.Request, handler: Any) -> web.StreamResponse:
    if not request.path.startswith("/admin/"):
        return await handler(request)
    gw = request.app[GATEWAY]
    client = gw.client_address(request.headers, request.remote)
    secret = gw.settings.admin_token
    if secret is None or not secret.get_secret_value():
        return _refuse(request, client, AuthError(
            "The admin API is disabled: set admin_token (OPENOPEN8_ADMIN_TOKEN) to enable it.",
            code="admin_api_disabled"))
    given = _bearer(request)
    if not given:
        return _refuse(request, client, AuthError(
            "This admin endpoint needs 'Authorization: Bearer ADMIN_TOKEN' (the gateway's "
            "admin_token setting).", code="invalid_admin_token"))
    try:
        gw.admin_brake.check(client)      # a guesser's next try, refused before comparing
    except GatewayError as exc:
        return _refuse(request, client, exc)
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               secret.get_secret_value().encode()):
        gw.admin_brake.failed(client)
        return _refuse(request, client, AuthError(
            "Incorrect admin token: this endpoint needs 'Authorization: Bearer ADMIN_TOKEN' "
            "(the gateway's admin_token setting).", code="invalid_admin_token"))
    return await handler(request)


async def usage(request: web.Request) -> web.Response:
    q = request.query
    try:
        report = await ops.usage_report(request.app[GATEWAY].store, by=q.get("by", "model"),
                                        token=q.get("token"), model=q.get("model"),
                                        since=q.get("since"), until=q.get("until"),
                                        by_name="the 'by' query parameter")
    except StoreError as exc:
        return _error(400, str(exc), "invalid_value")
    return web.json_response(report)


async def tokens(request: web.Request) -> web.Response:
    rows = await request.app[GATEWAY].store.list_tokens()
    return web.json_response([ops.token_view(t) for t in rows])


def add_routes(app: web.Application) -> None:
    app.middlewares.append(_admin_only)
    app.router.add_get("/admin/usage", usage)
    app.router.add_get("/admin/tokens", tokens)
