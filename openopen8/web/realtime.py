"""``GET /v1/realtime``: authenticate and route *before* the upgrade, then
run the relay (the front door hands the request over, see ``web/front.py``).

Every refusal that can be known before the upgrade is an HTTP status with an
OpenAI-style JSON body: 401 (token), 403 (model not allowed), 429 (limits),
404/503 (no channel), 502 (every channel's upstream failed).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from ..audio.formats import parse_rate_hint
from ..auth import offered_subprotocols, wants_beta
from .. import metrics
from ..errors import GatewayError
from ..pipeline import build_chain
from ..providers.base import ConnectRequest
from ..relay.core import Relay
from ..relay.endpoint import WsEndpoint
from ..relay.stage import Session
from .front import FrontDoor, Head

log = logging.getLogger("openopen8.session")


def _refuse(door: FrontDoor, exc: GatewayError) -> None:
    metrics.REFUSALS.labels(str(exc.status), str(exc.code)).inc()
    door.refuse(exc.status, exc.body())


async def realtime(gw, door: FrontDoor, head: Head) -> None:
    query = head.query
    try:
        token = await gw.authenticate(head.headers, query)
        model = query.get("model", "").strip()
        if not model:
            raise GatewayError("Missing required parameter: 'model'.", code="missing_model",
                               param="model")
        if not token.allows(model):
            raise GatewayError(f"This gateway token may not use the model {model}.",
                               code="model_not_allowed", status=403)
        if not head.is_websocket_upgrade():
            raise GatewayError("This endpoint needs a WebSocket upgrade.", code="upgrade_required",
                               status=426)
        candidates = await gw.router.check(model)
        await gw.admit(token, model)
        beta = wants_beta(head.headers)
        s = Session(id="sess_" + secrets.token_hex(12), model=model, token=token,
                    client_dialect="beta" if beta else gw.settings.default_dialect)
        s.facts["dialect_source"] = "header" if beta else "default"
        for side in ("input", "output"):   # rate hints for clients that cannot say it in-band
            hint = query.get(f"{side}_rate")
            if hint:
                try:
                    s.facts[f"{side}_rate"] = parse_rate_hint(hint)
                except ValueError as exc:
                    raise GatewayError(str(exc), code="invalid_value", param=f"{side}_rate") from None
        # quota, concurrency and rate limits: checked and the session recorded in one
        # transaction (a reservation, not a check: undone below if the session never starts)
        s.facts["grant"] = await gw.ledger.admit(s)
    except GatewayError as exc:
        _refuse(door, exc)
        return
    try:
        req = ConnectRequest(model=model, session_id=s.id, client_dialect=s.client_dialect)
        t0 = time.monotonic()
        channel, provider, upstream = await gw.router.connect(req, candidates)
        metrics.CONNECT_SECONDS.observe(time.monotonic() - t0)
    except BaseException as exc:
        await gw.ledger.abandon(s)
        if isinstance(exc, GatewayError):
            _refuse(door, exc)
            return
        raise

    s.channel = channel
    s.upstream_dialect = provider.dialect
    client = WsEndpoint()
    subprotocol = "realtime" if "realtime" in offered_subprotocols(head.headers) else None
    if not door.upgrade(client, subprotocol):   # client vanished, or a bad upgrade request
        await upstream.close(1000)
        await gw.ledger.abandon(s)
        return
    log.info("session %s open: token=%s model=%s channel=%s dialect=%s/%s", s.id, token.name,
             model, channel.name, s.client_dialect, s.upstream_dialect)
    relay = Relay(client, upstream, build_chain(gw, s), s,
                  tick_seconds=gw.settings.tick_seconds, settle_seconds=gw.settings.settle_seconds)
    task = asyncio.ensure_future(relay.run())
    gw.sessions.add(task)
    metrics.SESSIONS_ACTIVE.inc()
    try:
        outcome = await asyncio.shield(task)
    except asyncio.CancelledError:
        outcome = await task
    finally:
        gw.sessions.discard(task)
        metrics.SESSIONS_ACTIVE.dec()
    metrics.session_ended(s, outcome, time.monotonic() - t0)
    log.info("session %s closed by %s: code=%s events=%d/%d (lanes %d/%d) bytes=%d/%d", s.id,
             outcome.closed_by, outcome.client_code, s.events_in, s.events_out, s.lane_in,
             s.lane_out, s.bytes_in, s.bytes_out)
