"""The client's view of a conversation, fed server events (no I/O).

It answers the questions the driver asks between events: which responses
are running, which function calls wait for an answer, whether every input
has had its reply (so the run can end), and what the summary says.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from .audio import AudioFormat


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: str
    response_id: str
    answered: bool = False


@dataclass
class Turn:
    """One input of the user's and everything it caused (tool round trips included)."""

    trigger: str          # "speech stopped", "commit", "text"
    at: float
    #: the first reply the user meets: audio, or text in a text-only session
    first_reply_at: float | None = None
    #: when the client sent the last sound of this speech (a file's last frame
    #: above its noise floor), before the server's VAD waited out its silence
    speech_end_at: float | None = None

    @property
    def latency(self) -> float | None:
        """From the trigger (the server's ``speech_stopped``, a commit, a text)."""
        return None if self.first_reply_at is None else self.first_reply_at - self.at

    @property
    def heard_latency(self) -> float | None:
        """From the end of the speech: what a listener waits."""
        if self.first_reply_at is None or self.speech_end_at is None:
            return None
        return self.first_reply_at - self.speech_end_at


@dataclass
class ResponseStat:
    id: str
    created_at: float
    #: what the client was waiting on: "speech stopped", "commit", "text", "tool output"
    trigger: str | None = None
    trigger_at: float | None = None
    first_audio_at: float | None = None
    first_text_at: float | None = None
    audio_bytes: int = 0
    status: str = "in_progress"
    reason: str | None = None
    usage: dict | None = None
    done: bool = False
    calls: list[ToolCall] = field(default_factory=list)

    def latency(self, text_replies: bool = False) -> float | None:
        """Seconds from the trigger to the first audio delta (the first text
        delta in a text-only session)."""
        first = self.first_text_at if text_replies else self.first_audio_at
        if first is None or self.trigger_at is None:
            return None
        return first - self.trigger_at


class Conversation:
    def __init__(self, out_fmt: AudioFormat | None = None) -> None:
        self.out_fmt = out_fmt or AudioFormat()
        self.session: dict | None = None
        self.session_updated = False
        self.responses: dict[str, ResponseStat] = {}
        self.active: set[str] = set()
        self.errors: list[dict] = []
        self.reply_audio = bytearray()
        self.speaking = False
        self.speech_seen = False
        self.speech_stopped = 0
        self.commits = 0
        self.transcripts: dict[str, str] = {}    # user item id -> transcript
        self.awaiting_transcript: set[str] = set()
        self.transcribing = False
        self._n = 0                  # events seen
        self._last_commit = -1       # event number of the last commit
        self._last_created = -1      # … of the last response.created
        self._expected = 0           # response.create sent, response.created not yet seen
        self._trigger: tuple[str, float] | None = None
        self.turns: list[Turn] = []
        #: replies are text (``output_modalities: ["text"]``): latency counts to the first text
        self.text_replies = False
        self._speech_end: float | None = None    # client's last speech end, not yet claimed

    # what the client did -------------------------------------------------------------------
    def mark(self, trigger: str, now: float) -> None:
        """The client just ended its input (commit, text, tool output): the next
        response's latency counts from here."""
        self._trigger = (trigger, now)
        if trigger != "tool output":
            self.turns.append(Turn(trigger, now))

    def speech_ended(self, now: float) -> None:
        """The client just sent the last sound of a stretch of speech; the
        server's next ``speech_stopped`` is for it."""
        self._speech_end = now

    def expect_response(self) -> None:
        """The client sent ``response.create``."""
        self._expected += 1

    # what the server said ------------------------------------------------------------------
    def on_event(self, etype: str, ev: dict, now: float) -> None:
        """``etype`` is the GA name (see :func:`wire.canonical`)."""
        self._n += 1
        if etype in ("session.created", "session.updated"):
            self.session = ev.get("session") if isinstance(ev.get("session"), dict) else {}
            self.session_updated = self.session_updated or etype == "session.updated"
        elif etype == "error":
            self.errors.append(ev.get("error") if isinstance(ev.get("error"), dict) else {})
        elif etype == "input_audio_buffer.speech_started":
            self.speaking = self.speech_seen = True
        elif etype == "input_audio_buffer.speech_stopped":
            self.speaking = False
            self.speech_stopped += 1
            self.mark("speech stopped", now)
            self.turns[-1].speech_end_at, self._speech_end = self._speech_end, None
        elif etype == "input_audio_buffer.committed":
            self.commits += 1
            self._last_commit = self._n
            if self.transcribing and ev.get("item_id"):
                self.awaiting_transcript.add(ev["item_id"])
        elif etype == "conversation.item.input_audio_transcription.completed":
            self.transcripts[ev.get("item_id", "")] = ev.get("transcript") or ""
            self.awaiting_transcript.discard(ev.get("item_id", ""))
        elif etype == "conversation.item.input_audio_transcription.failed":
            self.awaiting_transcript.discard(ev.get("item_id", ""))
        elif etype == "response.created":
            self._on_created(ev, now)
        elif etype == "response.output_audio.delta":
            r = self._response(ev, now)
            try:
                chunk = base64.b64decode(ev.get("delta") or "")
            except (binascii.Error, ValueError):
                chunk = b""
            if r.first_audio_at is None:
                r.first_audio_at = now
            if not self.text_replies:
                self._replied(now)
            r.audio_bytes += len(chunk)
            self.reply_audio += chunk
        elif etype in ("response.output_text.delta", "response.output_audio_transcript.delta"):
            r = self._response(ev, now)
            if r.first_text_at is None:
                r.first_text_at = now
            if self.text_replies:
                self._replied(now)
        elif etype == "response.output_item.done":
            self._add_call(ev.get("item"), ev.get("response_id"), now)
        elif etype == "response.done":
            self._on_done(ev, now)

    def _replied(self, now: float) -> None:
        if self.turns and self.turns[-1].first_reply_at is None:
            self.turns[-1].first_reply_at = now

    def _response(self, ev: dict, now: float) -> ResponseStat:
        rid = ev.get("response_id") or (ev.get("response") or {}).get("id") or "?"
        r = self.responses.get(rid)
        if r is None:  # an event for a response we never saw created
            r = self.responses[rid] = ResponseStat(rid, now)
        return r

    def _on_created(self, ev: dict, now: float) -> None:
        r = self._response(ev, now)
        r.created_at = now
        if self._trigger is not None:
            r.trigger, r.trigger_at = self._trigger
            self._trigger = None
        self.active.add(r.id)
        self._last_created = self._n
        self._expected = max(0, self._expected - 1)

    def _add_call(self, item: object, response_id: object, now: float) -> None:
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return
        if item.get("status") not in (None, "completed") or not item.get("call_id"):
            return
        r = self._response({"response_id": response_id}, now)
        if any(c.call_id == item["call_id"] for c in r.calls):
            return
        r.calls.append(ToolCall(item["call_id"], str(item.get("name") or ""),
                                str(item.get("arguments") or ""), r.id))

    def _on_done(self, ev: dict, now: float) -> None:
        resp = ev.get("response") if isinstance(ev.get("response"), dict) else {}
        r = self._response(ev, now)
        r.done = True
        r.status = resp.get("status") or "completed"
        details = resp.get("status_details") or {}
        r.reason = details.get("reason") if isinstance(details, dict) else None
        r.usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else None
        self.active.discard(r.id)
        if r.status == "completed":
            for item in resp.get("output") or []:
                self._add_call(item, r.id, now)
        else:  # a cancelled or failed response's calls are not to be answered
            for c in r.calls:
                c.answered = True

    # questions -----------------------------------------------------------------------------
    def calls_to_answer(self) -> list[ToolCall]:
        """Function calls of finished responses that the client has not answered."""
        return [c for r in self.responses.values() if r.done for c in r.calls if not c.answered]

    def settled(self) -> bool:
        """Every input has had its reply: no speech in progress, no response
        running or asked for, no call unanswered, and a response started after
        the last commit."""
        return (bool(self.responses) and not self.speaking and not self.active
                and self._expected == 0 and not self.calls_to_answer()
                and self._last_created > self._last_commit)

    def usage_total(self) -> dict:
        tot: dict = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                     "input_text": 0, "input_audio": 0, "cached": 0,
                     "output_text": 0, "output_audio": 0}
        for r in self.responses.values():
            u = r.usage or {}
            for k in ("input_tokens", "output_tokens", "total_tokens"):
                tot[k] += int(u.get(k) or 0)
            ind, outd = u.get("input_token_details") or {}, u.get("output_token_details") or {}
            tot["input_text"] += int(ind.get("text_tokens") or 0)
            tot["input_audio"] += int(ind.get("audio_tokens") or 0)
            tot["cached"] += int(ind.get("cached_tokens") or 0)
            tot["output_text"] += int(outd.get("text_tokens") or 0)
            tot["output_audio"] += int(outd.get("audio_tokens") or 0)
        return tot

    @property
    def reply_seconds(self) -> float:
        return self.out_fmt.ms_of(len(self.reply_audio)) / 1000
