"""The admin API: the CLI's reports over HTTP, for dashboards and billing.

Every route needs ``Authorization: Bearer <admin_token>`` (settings
``admin_token`` / ``OPENOPEN8_ADMIN_TOKEN``), compared in constant time.
Without an admin token configured the API refuses everything with 401.

* ``GET /admin/usage?by=day|model|token|channel&token=&model=&since=&until=``
  -- the same report as ``openopen8 usage --json``;
* ``GET /admin/tokens`` -- tokens with their limits and spend (never secrets).
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from .. import ops
from ..store.base import StoreError

#: the Gateway object on the aiohttp application
GATEWAY = web.AppKey("gateway", object)


def _error(status: int, message: str, code: str, type: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": type, "param": None,
                                        "code": code}}, status=status)


def _authorized(request: web.Request) -> bool:
    secret = request.app[GATEWAY].settings.admin_token
    if secret is None or not secret.get_secret_value():
        return False
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())


@web.middleware
async def _admin_only(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/admin/") and not _authorized(request):
        return _error(401, "This admin endpoint needs 'Authorization: Bearer ADMIN_TOKEN' "
                           "(the gateway's admin_token setting).", "invalid_admin_token")
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
