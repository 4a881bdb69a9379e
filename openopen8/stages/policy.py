"""The policy stage: what the operator pinned for a token (``openopen8/policy.py``)
holds on every ``session.update`` and ``response.create`` of its sessions.

The upstream never sees a forbidden value: the event goes on with the
allowed one, and the client gets an ``error`` (``policy_violation``) naming
the ``param`` it broke -- the session goes on, as OpenAI's does after an
invalid value.  At the start the upstream gets the policy's opening session
(instructions, default voice, output cap), merged into a client secret's
session when there is one.  The operator's instructions are invisible to the
client: ``session.created`` / ``session.updated`` show the instructions the
client itself sent.

It sits right after the client's dialect edge, so it sees GA events only
and works the same for beta clients and on every channel.
"""

from __future__ import annotations

from typing import Any

from .. import policy as rules
from ..dialects import param_for
from ..events import Event, error_event
from ..relay.stage import Forward, Session
from .shapes import client_data, client_out, event_id_of, server_data, server_out

_CLIENT_TYPES = frozenset({"session.update", "response.create"})
_SERVER_TYPES = frozenset({"session.created", "session.updated"})


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """``extra``'s keys into ``base`` where ``base`` has none (deep)."""
    for k, v in extra.items():
        if k not in base:
            base[k] = v
        elif isinstance(base[k], dict) and isinstance(v, dict):
            _merge(base[k], v)


class PolicyStage:
    name = "policy"

    def __init__(self, policy: dict[str, Any]) -> None:
        self.policy = policy
        self.hides = "instructions" in policy

    # --- the session's start ------------------------------------------------

    def on_open(self, s: Session) -> None:
        opening = rules.opening(self.policy)
        if opening is None:
            return
        pre = s.facts.get("preamble")
        first = pre[0].data.get("session") if pre else None
        if isinstance(first, dict):        # a client secret's session: the policy fills in
            if first.get("type", "realtime") == "realtime":
                _merge(first, opening)
                pre[0].touch()
            return
        s.facts.setdefault("preamble", []).insert(
            0, Event.from_data({"type": "session.update", "session": opening}))

    # --- client events ---------------------------------------------------------

    def sees_client(self, t: str | None, s: Session) -> bool:
        return t in _CLIENT_TYPES

    def sees_server(self, t: str | None, s: Session) -> bool:
        return self.hides and t in _SERVER_TYPES

    def on_client(self, ev: Event, s: Session) -> Forward:
        d = client_data(ev, s)
        if d is None:
            return None
        where = "session" if ev.type == "session.update" else "response"
        body = d.get(where)
        if not isinstance(body, dict):
            # a bare response.create (the session's values hold), or not an object
            # (the upstream answers as it would)
            return ev
        if where == "session" and self.hides and isinstance(body.get("instructions"), str):
            s.facts["policy.instructions"] = body["instructions"]
        held, breaches = rules.hold_session(self.policy, body, where,
                                            voice=s.facts.get("policy.voice"))
        voice = rules.sub(held, "audio", "output")
        if where == "session" and voice is not None and isinstance(voice.get("voice"), str):
            s.facts["policy.voice"] = voice["voice"]
        for b in breaches:
            s.reply(error_event(b.message, code="policy_violation",
                                param=param_for(s.client_dialect, b.param),
                                event_id=event_id_of(d)))
        if held == body:
            return ev
        out = dict(d)
        out[where] = held
        return client_out(Event.from_data(out), s, ev)

    # --- server events: the operator's instructions stay unseen ---------------

    def on_server(self, ev: Event, s: Session) -> Forward:
        d = server_data(ev)
        sess = d.get("session") if d is not None else None
        if not isinstance(sess, dict) or "instructions" not in sess:
            return ev
        out = dict(d)
        out["session"] = dict(sess, instructions=s.facts.get("policy.instructions", ""))
        return server_out(Event.from_data(out), ev.raw, ev.type)
