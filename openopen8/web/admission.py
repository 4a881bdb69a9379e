"""Admission: every way into a session -- a WebSocket upgrade, a WebRTC call
-- goes through the same three steps, so limits, billing and policy cannot
tell the doors apart:

1. :func:`admit` -- who the request is (a token or a client secret: one
   :class:`~openopen8.principal.Principal`), the browser origin, the model,
   the channels that serve it, the token's limits; the session row is
   reserved (``Ledger.admit``);
2. :func:`open_upstream` -- the channel's upstream, cancelled if the client
   hangs up meanwhile; the reservation is undone when nothing opens;
3. :func:`run` -- the relay between the client's endpoint and the upstream,
   through the session's stage chain.

A refusal is a :class:`~openopen8.errors.GatewayError` (HTTP status + JSON
body); :func:`log_refusal` writes the one line an operator reads.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from .. import metrics, peerlog
from ..audio.formats import parse_rate_hint
from ..auth import wants_beta
from ..errors import ForbiddenError, GatewayError
from ..events import Event
from ..pipeline import build_chain
from ..principal import Principal
from ..providers.base import ConnectRequest
from ..relay.core import Relay
from ..relay.stage import Session

log = logging.getLogger("openopen8.session")


@dataclass
class Admitted:
    """A session admitted and reserved, not yet connected."""

    session: Session
    principal: Principal
    candidates: Any          # the channels that may serve it (Router.check)
    started: float           # time.monotonic() when admission began


def quoted(value: str, limit: int = 80) -> str:
    return repr(value[:limit]) if value else "-"


def log_refusal(exc: GatewayError, *, model: str, client: str, peer: str,
                who: Principal | None) -> None:
    """One line an operator can act on: status, code, model, client
    address, token name when known -- never the secret (client-written
    values are quoted and cut short); a flood of them is throttled."""
    metrics.REFUSALS.labels(str(exc.status), str(exc.code)).inc()
    peerlog.note(log, ("refused", exc.status, exc.code),
                 "refused %d %s: model=%s client=%s peer=%s token=%s", exc.status, exc.code,
                 quoted(model), client or "-", peer, who.name if who is not None else "-")


def check_origin(who: Principal, origin: str | None) -> None:
    """A token with an origin list is for browser pages on those origins: a
    request whose ``Origin`` is another is refused (403).  Requests without
    ``Origin`` -- servers, phones -- are not browser pages of another site."""
    allowed = who.token.origins
    if not allowed or origin is None:
        return
    if origin.rstrip("/") not in {o.rstrip("/") for o in allowed}:
        raise ForbiddenError(f"This gateway token may not be used from the origin "
                             f"{quoted(origin)}.", code="origin_not_allowed")


async def admit(gw: Any, headers: Mapping[str, str], query: Mapping[str, str], client: str, *,
                via: str, lost: Callable[[], bool] = lambda: False,
                beta: bool | None = None) -> tuple[Admitted | None, Principal | None, str]:
    """Steps 1: authenticate, check and reserve.  Returns ``(admitted, who,
    model)``; ``admitted`` is None when ``lost()`` says the client left
    before the reservation.  Raises :class:`GatewayError`; ``who`` and the
    model are then on the exception (``exc.who``, ``exc.model``) for the log."""
    started = time.monotonic()
    model = query.get("model", "").strip()
    who: Principal | None = None
    try:
        gw.refuse_if_draining()      # 503 + Retry-After: the proxy tries another instance
        who = await gw.authenticate(headers, query, client)
        check_origin(who, headers.get("Origin"))
        model = who.model_for(model)
        if not model:
            raise GatewayError("Missing required parameter: 'model'.", code="missing_model",
                               param="model")
        problem = who.model_problem(model)
        if problem is not None:
            raise ForbiddenError(problem)          # 403 model_not_allowed
        candidates = await gw.router.check(model, who.token.allows)   # a 404 lists what it may use
        await gw.admit(who.token, model)
        beta = wants_beta(headers) if beta is None else beta
        s = Session(id="sess_" + secrets.token_hex(12), model=model, token=who.token,
                    client_dialect="beta" if beta else gw.settings.default_dialect)
        s.facts["dialect_source"] = "header" if beta else "default"
        for side in ("input", "output"):   # rate hints for clients that cannot say it in-band
            hint = query.get(f"{side}_rate")
            if hint:
                try:
                    s.facts[f"{side}_rate"] = parse_rate_hint(hint)
                except ValueError as exc:
                    raise GatewayError(str(exc), code="invalid_value",
                                       param=f"{side}_rate") from None
        initial = who.initial_session()
        if initial:
            s.facts["preamble"] = [Event.from_data({"type": "session.update",
                                                    "session": initial})]
        s.facts["row"] = {"client": client, "via": via,
                          "secret_id": who.secret.id if who.secret is not None else None}
        if lost():       # hung up while its token was looked up: no session, no upstream
            log.info("abandoned before admission: client=%s token=%s", client, who.name)
            return None, who, model
        # quota, concurrency and rate limits: checked and the session recorded in one
        # transaction (a reservation, not a check: undone if the session never starts)
        s.facts["grant"] = await gw.ledger.admit(s)
    except GatewayError as exc:
        exc.who, exc.model = who, model    # type: ignore[attr-defined]
        raise
    return Admitted(s, who, candidates, started), who, model


async def open_upstream(gw: Any, adm: Admitted, hung_up: Awaitable[Any] | None = None):
    """Step 2: open the upstream -- unless the client hangs up first
    (``hung_up`` completes), which cancels the connect.  Returns
    ``(channel, provider, upstream)``, or None when the client left; raises
    :class:`GatewayError` when every channel failed (502) or the local
    models load (503).  The reservation is undone whenever nothing opens."""
    s = adm.session
    req = ConnectRequest(model=s.model, session_id=s.id, client_dialect=s.client_dialect)
    connect = asyncio.ensure_future(gw.router.connect(req, adm.candidates))
    try:
        waits = (connect,) if hung_up is None else (connect, hung_up)
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not connect.done():
            log.info("abandoned during the upstream connect: session=%s token=%s", s.id,
                     adm.principal.name)
            await _drop(connect)
            await gw.ledger.abandon(s)
            return None
        opened = connect.result()
    except GatewayError:
        await gw.ledger.abandon(s)
        raise
    except BaseException:              # cancelled (shutdown), or a bug
        await _drop(connect)
        await gw.ledger.abandon(s)
        raise
    metrics.CONNECT_SECONDS.observe(time.monotonic() - adm.started)
    channel, provider, _ = opened
    s.channel = channel
    s.upstream_dialect = provider.dialect
    return opened


async def _drop(connect: asyncio.Future) -> None:
    """Cancel an upstream connect; close the upstream if it opened all the same."""
    connect.cancel()
    try:
        *_, upstream = await connect
    except BaseException:  # noqa: BLE001 - cancelled or failed: nothing is open
        return
    await upstream.close(1000)


async def run(gw: Any, adm: Admitted, client: Any, upstream: Any) -> Any:
    """Step 3: relay ``client`` and ``upstream`` through the session's chain
    until either ends; the outcome is logged and counted."""
    s = adm.session
    log.info("session %s open: token=%s model=%s channel=%s dialect=%s/%s via=%s", s.id,
             adm.principal.name, s.model, s.channel.name, s.client_dialect, s.upstream_dialect,
             s.facts.get("row", {}).get("via", "-"))
    relay = Relay(client, upstream, build_chain(gw, s), s,
                  tick_seconds=gw.settings.tick_seconds, settle_seconds=gw.settings.settle_seconds)
    task = asyncio.ensure_future(relay.run())
    gw.sessions.add(task)
    gw.live[s.id] = s
    metrics.SESSIONS_ACTIVE.inc()
    try:
        outcome = await asyncio.shield(task)
    except asyncio.CancelledError:
        outcome = await task
    finally:
        gw.sessions.discard(task)
        gw.live.pop(s.id, None)
        metrics.SESSIONS_ACTIVE.dec()
    metrics.session_ended(s, outcome, time.monotonic() - adm.started)
    log.info("session %s closed by %s: code=%s events=%d/%d (lanes %d/%d) bytes=%d/%d", s.id,
             outcome.closed_by, outcome.client_code, s.events_in, s.events_out, s.lane_in,
             s.lane_out, s.bytes_in, s.bytes_out)
    return outcome
