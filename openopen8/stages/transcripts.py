"""The session log: a session's turns, for the console's detail view.

Placed in the chain (pipeline.py) only for sessions whose transcripts are
logged (``log_transcripts``: the token's own setting, else the gateway's;
off by default), between the dialect stages, so it reads GA events only.
It sees a handful of event types and changes none of them:

* ``conversation.item.input_audio_transcription.completed`` -- the user's
  words (``user``, with the transcription's usage and cost);
* ``conversation.item.create`` from the client -- a typed user message
  (``user``) or a tool's result (``tool_result``, its ``output``);
* ``response.output_audio_transcript.done`` / ``response.output_text.done``
  -- what the assistant said or wrote (``assistant``);
* ``response.function_call_arguments.done`` -- a tool call (``tool_call``:
  the function's name, its arguments);
* ``response.done`` -- the response's usage and cost, put on its last turn;
* ``session.created`` / ``session.updated`` -- the transcription model, which
  prices the user's transcriptions (as metering does).

Audio is never read.  Turns go to a *writer* (openopen8/turnlog.py) with a
synchronous, non-blocking call; the stage does no I/O.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..billing import PriceTable, parse_usage
from ..events import Event
from ..relay.stage import Forward, Session
from ..store.console_sql import Turn
from .metering import UNKNOWN_TRANSCRIBER
from .shapes import server_data

TRANSCRIPTION_DONE = "conversation.item.input_audio_transcription.completed"
_ASSISTANT = {"response.output_audio_transcript.done": "transcript",
              "response.output_text.done": "text"}
_TOOL_CALL = "response.function_call_arguments.done"
_SESSIONS = frozenset({"session.created", "session.updated"})
_SERVER = frozenset({TRANSCRIPTION_DONE, _TOOL_CALL, "response.done", *_ASSISTANT, *_SESSIONS})
_CLIENT = frozenset({"conversation.item.create"})
#: a turn's text is cut at this many characters (a runaway tool output)
MAX_TEXT = 20_000


class Writer(Protocol):
    def add(self, turns: list[Turn]) -> None: ...


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage_json(u: Any) -> dict[str, Any] | None:
    """The usage as the upstream reported it, kept small (no nested detail
    beyond numbers and short strings)."""
    return u if isinstance(u, dict) else None


class TranscriptStage:
    name = "transcripts"

    def __init__(self, writer: Writer, prices: PriceTable) -> None:
        self.writer = writer
        self.prices = prices
        self.seq = 0
        self._local = False
        self.transcriber: str | None = None
        #: a response's turns, held until its response.done brings the usage
        self._pending: dict[str, list[Turn]] = {}

    def sees_client(self, t: str | None, s: Session) -> bool:
        return t in _CLIENT

    def sees_server(self, t: str | None, s: Session) -> bool:
        return t in _SERVER

    def on_open(self, s: Session) -> None:
        self._local = getattr(s.channel, "type", None) == "local"

    def _turn(self, s: Session, kind: str, text: str, **kw: Any) -> Turn:
        self.seq += 1
        return Turn(session_id=s.id, seq=self.seq, kind=kind, text=text, **kw)

    def _cost(self, model: str, usage: Any) -> int | None:
        tokens = parse_usage(usage)
        if tokens is None:
            return None
        try:
            return self.prices.cost(model, tokens, local=self._local)[0]
        except (ArithmeticError, ValueError):
            return None

    def on_client(self, ev: Event, s: Session) -> Forward:
        try:
            d = ev.data if ev.invalid is None else None
        except ValueError:      # not JSON: the client is told by the stages that judge it
            return ev
        item = d.get("item") if isinstance(d, dict) else None
        if not isinstance(item, dict):
            return ev
        if item.get("type") == "function_call_output":
            out = _text(item.get("output"))
            if out is not None:
                self.writer.add([self._turn(s, "tool_result", out,
                                            ref=_str(item.get("call_id")))])
        elif item.get("type") == "message" and item.get("role") == "user":
            content = item.get("content")
            parts = [_text(c.get("text")) for c in (content if isinstance(content, list) else ())
                     if isinstance(c, dict) and c.get("type") == "input_text"]
            text = "\n".join(p for p in parts if p)
            if text:
                self.writer.add([self._turn(s, "user", text, ref=_str(item.get("id")))])
        return ev

    def on_server(self, ev: Event, s: Session) -> Forward:
        d = server_data(ev)
        if d is None:
            return ev
        t = ev.type
        if t == TRANSCRIPTION_DONE:
            text = _text(d.get("transcript"))
            if text is not None:
                u = d.get("usage")
                ran = u.get("model") if isinstance(u, dict) else None
                model = ran if isinstance(ran, str) and ran else self.transcriber
                self.writer.add([self._turn(
                    s, "user", text, ref=_str(d.get("item_id")), usage=_usage_json(u),
                    cost_nanos=self._cost(model or UNKNOWN_TRANSCRIBER, u))])
        elif t in _SESSIONS:
            sess = d.get("session")
            audio = sess.get("audio") if isinstance(sess, dict) else None
            inp = audio.get("input") if isinstance(audio, dict) else None
            if isinstance(inp, dict) and "transcription" in inp:
                tr = inp["transcription"]
                model = tr.get("model") if isinstance(tr, dict) else None
                self.transcriber = model if isinstance(model, str) and model else None
        elif t in _ASSISTANT:
            text = _text(d.get(_ASSISTANT[t]))
            if text is not None:
                self._hold(d, self._turn(s, "assistant", text, ref=_str(d.get("item_id"))))
        elif t == _TOOL_CALL:
            args = _text(d.get("arguments"))
            if args is not None:
                self._hold(d, self._turn(s, "tool_call", args, ref=_str(d.get("call_id")),
                                         name=_str(d.get("name"))))
        elif t == "response.done":
            resp = d.get("response")
            rid = resp.get("id") if isinstance(resp, dict) else None
            turns = self._pending.pop(rid, []) if isinstance(rid, str) else []
            if turns:
                u = resp.get("usage")
                turns[-1].usage = _usage_json(u)
                turns[-1].cost_nanos = self._cost(s.model, u)
                self.writer.add(turns)
        return ev

    def _hold(self, d: dict[str, Any], turn: Turn) -> None:
        rid = d.get("response_id")
        if isinstance(rid, str):
            self._pending.setdefault(rid, []).append(turn)
        else:
            self.writer.add([turn])

    def on_close(self, s: Session) -> None:
        """Turns of responses that never finished are kept, without usage."""
        for turns in self._pending.values():
            self.writer.add(turns)
        self._pending.clear()
