"""Frame validation: what OpenAI answers to frames that are not events.

A binary frame, text that is not JSON, or JSON without a ``type`` gets an
``error`` event (as OpenAI's own server answers) and the session goes on.
Everything else passes untouched: unknown event types are the upstream's to
judge.
"""

from __future__ import annotations

from ..events import Event, error_event
from ..relay.stage import Forward, Session

_MESSAGES = {
    "binary": ("invalid_event", "Expected a text WebSocket message with a JSON event; "
               "binary frames are not supported."),
    "invalid_json": ("invalid_json", "The event is not valid JSON."),
    "invalid_event": ("invalid_event", "The 'type' field is missing."),
}


class FrameStage:
    name = "frames"
    edge = "client"     # judges frames as the client sent them

    def on_client(self, ev: Event, s: Session) -> Forward:
        if ev.type is not None:
            return ev
        code, message = _MESSAGES.get(ev.invalid or "invalid_event", _MESSAGES["invalid_event"])
        s.reply(error_event(message, code=code))
        return None

    def on_server(self, ev: Event, s: Session) -> Forward:
        return ev

    def sees_client(self, t: str | None, s: Session) -> bool:
        return t is None          # only frames that are not events

    def sees_server(self, t: str | None, s: Session) -> bool:
        return False
