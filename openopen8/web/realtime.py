"""``GET /v1/realtime``: authenticate and route *before* the upgrade, then
run the relay (the front door hands the request over, see ``web/front.py``).

Every refusal that can be known before the upgrade is an HTTP status with an
OpenAI-style JSON body: 401 (token), 403 (model not allowed), 429 (limits),
404/503 (no channel; the 404 names the models served), 503 (the local models
are still loading), 502 (every channel's upstream failed).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from ..audio.formats import parse_rate_hint
from ..auth import offered_subprotocols, wants_beta
from .. import metrics, peerlog
from ..errors import GatewayError
from ..pipeline import build_chain
from ..providers.base import ConnectRequest
from ..relay.core import Relay
from ..relay.endpoint import WsEndpoint
from ..relay.stage import Session
from .front import FrontDoor, Head

log = logging.getLogger("openopen8.session")


def _refuse(door: FrontDoor, exc: GatewayError, model: str = "", token=None) -> None:
    """Answer with the refusal and log one line an operator can act on:
    status, code, model, client address, token name when known -- never the
    secret (client-written values are quoted and cut short)."""
    metrics.REFUSALS.labels(str(exc.status), str(exc.code)).inc()
    peerlog.note(log, ("refused", exc.status, exc.code),    # a flood of them: throttled
                 "refused %d %s: model=%s client=%s peer=%s token=%s", exc.status, exc.code,
                 _quoted(model), door.client or "-", door.peer,
                 token.name if token is not None else "-")
    door.refuse(exc.status, exc.body(), exc.headers)


def _quoted(value: str, limit: int = 80) -> str:
    return repr(value[:limit]) if value else "-"


async def realtime(gw, door: FrontDoor, head: Head) -> None:
    query = head.query
    model = query.get("model", "").strip()
    token = None
    door.client = gw.client_address(head.headers, door.host)   # the brake's and the log's
    try:
        # the request's shape first: nothing is looked up for a request
        # that cannot be upgraded
        problem = head.upgrade_problem()
        if problem is not None:
            raise problem
        token = await gw.authenticate(head.headers, query, door.client)
        if not model:
            raise GatewayError("Missing required parameter: 'model'.", code="missing_model",
                               param="model")
        if not token.allows(model):
            raise GatewayError(f"This gateway token may not use the model {model}.",
                               code="model_not_allowed", status=403)
        candidates = await gw.router.check(model, token.allows)   # a 404 lists what it may use
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
        if door.lost:       # hung up while its token was looked up: no session, no upstream
            log.info("abandoned before admission: peer=%s token=%s", door.peer, token.name)
            return
        # quota, concurrency and rate limits: checked and the session recorded in one
        # transaction (a reservation, not a check: undone below if the session never starts)
        s.facts["grant"] = await gw.ledger.admit(s)
    except GatewayError as exc:
        _refuse(door, exc, model, token)
        return
    req = ConnectRequest(model=model, session_id=s.id, client_dialect=s.client_dialect)
    t0 = time.monotonic()
    opened = await _connect_unless_hung_up(gw, door, s, req, candidates)
    if opened is None:
        return
    metrics.CONNECT_SECONDS.observe(time.monotonic() - t0)
    channel, provider, upstream = opened

    s.channel = channel
    s.upstream_dialect = provider.dialect
    client = WsEndpoint()
    subprotocol = "realtime" if "realtime" in offered_subprotocols(head.headers) else None
    if not door.upgrade(client, subprotocol, head):   # the client vanished
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


async def _connect_unless_hung_up(gw, door: FrontDoor, s: Session, req: ConnectRequest,
                                  candidates):
    """Open the upstream -- unless the client hangs up first, which cancels
    the connect.  None when no session is to run (refused, or hung up); the
    session's reserved row is dropped then."""
    connect = asyncio.ensure_future(gw.router.connect(req, candidates))
    try:
        await asyncio.wait((connect, door.hung_up), return_when=asyncio.FIRST_COMPLETED)
        if not connect.done():
            log.info("abandoned during the upstream connect: peer=%s token=%s", door.peer,
                     s.token.name)
            await _drop(connect)
            await gw.ledger.abandon(s)
            return None
        return connect.result()
    except GatewayError as exc:        # every channel failed (502), or the models load (503)
        await gw.ledger.abandon(s)
        _refuse(door, exc, s.model, s.token)
        return None
    except BaseException:              # cancelled (shutdown), or a bug
        await _drop(connect)
        await gw.ledger.abandon(s)
        raise


async def _drop(connect: asyncio.Future) -> None:
    """Cancel an upstream connect; close the upstream if it opened all the same."""
    connect.cancel()
    try:
        *_, upstream = await connect
    except BaseException:  # noqa: BLE001 - cancelled or failed: nothing is open
        return
    await upstream.close(1000)
