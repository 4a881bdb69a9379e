"""Minting client secrets: a backend holding a gateway token asks for a
short-lived ``ek_…`` secret its browser or phone app connects with.

OpenAI's GA shape (``POST /v1/realtime/client_secrets``, what the SDKs'
``client.realtime.client_secrets.create`` sends) and the beta one
(``POST /v1/realtime/sessions`` with a flat beta session) both end here.  A
secret:

* opens sessions by every route a token does, until it expires (default
  600 s, 10..7200), or ``max_uses`` times (our extension);
* starts each session with its ``session`` (the upstream's first
  ``session.update``), and is bound to its model;
* is billed to, limited by and held to the policy of the token that minted
  it; revoking or expiring that token refuses its secrets at once;
* is stored as a hash; expired ones are deleted from the store.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from . import policy as rules
from .auth import display_prefix, hash_secret
from .dialects import session_to_ga
from .errors import ForbiddenError, GatewayError
from .principal import CLIENT_SECRET_PREFIX, Principal

DEFAULT_TTL = 600
MIN_TTL, MAX_TTL = 10, 7200
SESSION_TYPES = ("realtime", "transcription")
#: how often minting also deletes expired secrets from the store
SWEEP_SECONDS = 60.0
_last_sweep = 0.0


def _bad(message: str, param: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(message, code=code, param=param)


def _ttl(expires_after: Any, where: str) -> int:
    if expires_after is None:
        return DEFAULT_TTL
    if not isinstance(expires_after, dict):
        raise _bad("expires_after must be an object.", where)
    unknown = set(expires_after) - {"anchor", "seconds"}
    if unknown:
        raise _bad(f"Unknown parameter: '{where}.{sorted(unknown)[0]}'.",
                   f"{where}.{sorted(unknown)[0]}", "unknown_parameter")
    anchor = expires_after.get("anchor", "created_at")
    if anchor != "created_at":
        raise _bad("expires_after.anchor must be 'created_at'.", f"{where}.anchor")
    seconds = expires_after.get("seconds", DEFAULT_TTL)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not MIN_TTL <= seconds <= MAX_TTL:
        raise _bad(f"expires_after.seconds must be an integer from {MIN_TTL} to {MAX_TTL}.",
                   f"{where}.seconds")
    return seconds


def _max_uses(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad("max_uses must be a positive integer.", "max_uses")
    return value


async def _model(gw: Any, who: Principal, asked: Any, param: str) -> str | None:
    """The secret's model: the one asked for, or the token's only model;
    checked against the token and the channels served."""
    if asked is None:
        models = who.token.models
        return models[0] if len(models) == 1 else None
    if not isinstance(asked, str) or not asked.strip():
        raise _bad("model must be a model name.", param)
    problem = who.model_problem(asked)      # who is a token here: its models
    if problem is not None:
        raise ForbiddenError(problem)
    await gw.router.check(asked, who.token.allows)     # 404 naming the models served
    return asked


async def mint(gw: Any, who: Principal, session: Any, *, expires_after: Any = None,
               max_uses: Any = None, where: str = "expires_after") -> dict[str, Any]:
    """A new secret for ``who``'s token with the GA ``session``; returns
    ``{"value", "expires_at", "session"}`` (the session as it will start, as
    the client will see it).  Raises :class:`GatewayError` (400 naming the
    parameter, 403, 404)."""
    if who.secret is not None:
        raise ForbiddenError("A client secret cannot mint client secrets: mint them with a "
                             "gateway token, from your backend.", code="client_secret_not_allowed")
    ttl = _ttl(expires_after, where)
    uses = _max_uses(max_uses)
    if session is None:
        session = {"type": "realtime"}
    if not isinstance(session, dict):
        raise _bad("session must be an object.", "session")
    sess = dict(session)
    kind = sess.setdefault("type", "realtime")
    if kind not in SESSION_TYPES:
        raise _bad("session.type must be 'realtime' or 'transcription'.", "session.type")
    model = await _model(gw, who, sess.pop("model", None), "session.model")
    _, breaches = rules.hold_session(who.token.policy, sess)
    if breaches:
        b = breaches[0]
        raise GatewayError(b.message, code="policy_violation", param=b.param)
    value = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=ttl)
    await _sweep(gw.store)
    await gw.store.create_client_secret(hash_secret(value), display_prefix(value), who.token.id,
                                        sess, model, expires_at, uses)
    view = {"type": kind,
            "object": "realtime.session" if kind == "realtime" else "realtime.transcription_session",
            **({"model": model} if model else {}), **sess}
    return {"value": value, "expires_at": int(expires_at.timestamp()), "session": view}


async def mint_beta(gw: Any, who: Principal, body: dict[str, Any],
                    kind: str = "realtime") -> dict[str, Any]:
    """The beta shape: a flat beta session (+ ``client_secret.expires_after``)
    in, the session echoed with ``client_secret: {value, expires_at}`` out."""
    flat = dict(body)
    cs = flat.pop("client_secret", None)
    if cs is not None and not isinstance(cs, dict):
        raise _bad("client_secret must be an object.", "client_secret")
    max_uses = flat.pop("max_uses", None)
    model = flat.pop("model", None)
    if kind == "transcription":
        flat["type"] = "transcription"
    ga, _ = session_to_ga(flat)
    if model is not None:
        ga["model"] = model
    out = await mint(gw, who, ga, expires_after=(cs or {}).get("expires_after"),
                     max_uses=max_uses, where="client_secret.expires_after")
    echo = {"id": "sess_" + secrets.token_hex(12),
            "object": "realtime.session" if kind == "realtime" else "realtime.transcription_session",
            **({"model": out["session"]["model"]} if "model" in out["session"] else {}),
            **{k: v for k, v in body.items() if k not in ("client_secret", "max_uses")},
            "client_secret": {"value": out["value"], "expires_at": out["expires_at"]}}
    return echo


async def _sweep(store: Any) -> None:
    """Delete expired secrets, at most once a ``SWEEP_SECONDS`` per process."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < SWEEP_SECONDS:
        return
    _last_sweep = now
    await store.delete_expired_client_secrets(datetime.now(timezone.utc))
