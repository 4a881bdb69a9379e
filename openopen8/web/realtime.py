"""``GET /v1/realtime``: authenticate and route *before* the upgrade, then
run the relay (the front door hands the request over, see ``web/front.py``;
the steps shared with every other way in are ``web/admission.py``).

Every refusal that can be known before the upgrade is an HTTP status with an
OpenAI-style JSON body: 401 (token or client secret), 403 (model or origin
not allowed), 429 (limits), 404/503 (no channel; the 404 names the models
served), 503 (the local models are still loading), 502 (every channel's
upstream failed).
"""

from __future__ import annotations

import logging

from ..auth import offered_subprotocols
from ..errors import GatewayError
from ..relay.endpoint import WsEndpoint
from . import admission
from .front import FrontDoor, Head

log = logging.getLogger("openopen8.session")


def _refuse(door: FrontDoor, exc: GatewayError, model: str = "", who=None) -> None:
    """Answer with the refusal, and its log line."""
    admission.log_refusal(exc, model=model, client=door.client, peer=door.peer, who=who)
    door.refuse(exc.status, exc.body(), exc.headers)


async def realtime(gw, door: FrontDoor, head: Head) -> None:
    door.client = gw.client_address(head.headers, door.host)   # the brake's and the log's
    # the request's shape first: nothing is looked up for a request that cannot be upgraded
    problem = head.upgrade_problem()
    if problem is not None:
        _refuse(door, problem, head.query.get("model", ""))
        return
    if "call_id" in head.query:     # a sideband WebSocket of a WebRTC call (web/calls.py)
        from .calls import sideband
        await sideband(gw, door, head)
        return
    try:
        adm, _, _ = await admission.admit(gw, head.headers, head.query, door.client,
                                          via="websocket", lost=lambda: door.lost)
    except GatewayError as exc:
        _refuse(door, exc, getattr(exc, "model", ""), getattr(exc, "who", None))
        return
    if adm is None:     # hung up before the reservation
        return
    try:
        opened = await admission.open_upstream(gw, adm, door.hung_up)
    except GatewayError as exc:        # every channel failed (502), or the models load (503)
        _refuse(door, exc, adm.session.model, adm.principal)
        return
    if opened is None:
        return
    _, _, upstream = opened
    client = WsEndpoint()
    subprotocol = "realtime" if "realtime" in offered_subprotocols(head.headers) else None
    if not door.upgrade(client, subprotocol, head):   # the client vanished
        await upstream.close(1000)
        await gw.ledger.abandon(adm.session)
        return
    await admission.run(gw, adm, client, upstream)
