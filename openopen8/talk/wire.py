"""The client's side of the wire, in either dialect: the events it sends, and
the server event names it reads (beta names mapped to their GA names)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from .audio import AudioFormat

#: beta server event name -> the GA name the client reasons with
BETA_TO_GA = {
    "conversation.item.created": "conversation.item.added",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
}


def canonical(etype: str) -> str:
    """The GA name of a server event, whichever dialect sent it."""
    return BETA_TO_GA.get(etype, etype)


@dataclass
class SessionConfig:
    """What the client asks of the session."""

    dialect: str = "ga"
    fmt: AudioFormat = field(default_factory=AudioFormat)
    vad: bool = True
    voice: str | None = None
    instructions: str | None = None
    tools: list[dict] = field(default_factory=list)
    transcribe: str | None = "gpt-4o-mini-transcribe"
    text_only: bool = False

    def session_update(self) -> dict:
        return {"type": "session.update",
                "session": self._beta() if self.dialect == "beta" else self._ga()}

    def _ga(self) -> dict:
        a_in: dict[str, Any] = {"format": self.fmt.ga(),
                                "turn_detection": {"type": "server_vad"} if self.vad else None}
        if self.transcribe:
            a_in["transcription"] = {"model": self.transcribe}
        a_out: dict[str, Any] = {"format": self.fmt.ga()}
        if self.voice:
            a_out["voice"] = self.voice
        s: dict[str, Any] = {"type": "realtime",
                             "output_modalities": ["text"] if self.text_only else ["audio"],
                             "audio": {"input": a_in, "output": a_out}}
        return self._with_prompt(s)

    def _beta(self) -> dict:
        s: dict[str, Any] = {
            "modalities": ["text"] if self.text_only else ["audio", "text"],
            "input_audio_format": self.fmt.beta(), "output_audio_format": self.fmt.beta(),
            "turn_detection": {"type": "server_vad"} if self.vad else None,
        }
        if self.fmt.kind == "pcm16" and self.fmt.rate != 24000:
            # beta has no rate; openopen8's gateway reads this extension (OpenAI would refuse it)
            s["input_audio_sample_rate"] = s["output_audio_sample_rate"] = self.fmt.rate
        if self.transcribe:
            s["input_audio_transcription"] = {"model": self.transcribe}
        if self.voice:
            s["voice"] = self.voice
        return self._with_prompt(s)

    def _with_prompt(self, s: dict[str, Any]) -> dict[str, Any]:
        """Instructions and tools: the same fields in both dialects."""
        if self.instructions is not None:
            s["instructions"] = self.instructions
        if self.tools:
            s["tools"] = self.tools
            s["tool_choice"] = "auto"
        return s


@dataclass
class Effective:
    """What the server says the session is (from ``session.created``/``.updated``)."""

    in_fmt: AudioFormat
    out_fmt: AudioFormat
    vad: bool
    silence_ms: int | None
    transcribing: bool = False
    text_replies: bool = False


def effective(session: dict, dialect: str, asked: SessionConfig) -> Effective:
    """Read the formats and turn detection from a server session object, in
    either shape; fall back to what was asked where a field is missing."""
    if "audio" in session or dialect == "ga":
        audio = session.get("audio") or {}
        a_in, a_out = audio.get("input") or {}, audio.get("output") or {}
        in_fmt = AudioFormat.from_ga(a_in.get("format"), asked.fmt)
        out_fmt = AudioFormat.from_ga(a_out.get("format"), asked.fmt)
        td = a_in.get("turn_detection", "absent")
        tr = a_in.get("transcription", "absent")
        modalities = session.get("output_modalities")
    else:
        in_fmt = AudioFormat.from_beta(session.get("input_audio_format"), asked.fmt,
                                       session.get("input_audio_sample_rate"))
        out_fmt = AudioFormat.from_beta(session.get("output_audio_format"), asked.fmt,
                                        session.get("output_audio_sample_rate"))
        td = session.get("turn_detection", "absent")
        tr = session.get("input_audio_transcription", "absent")
        modalities = session.get("modalities")
    transcribing = bool(asked.transcribe) if tr == "absent" else bool(tr)
    text_replies = ("audio" not in modalities if isinstance(modalities, list) and modalities
                    else asked.text_only)
    if td == "absent":
        return Effective(in_fmt, out_fmt, asked.vad, None, transcribing, text_replies)
    silence = td.get("silence_duration_ms") if isinstance(td, dict) else None
    return Effective(in_fmt, out_fmt, bool(td), silence if isinstance(silence, int) else None,
                     transcribing, text_replies)


def append(chunk: bytes) -> dict:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}


def commit() -> dict:
    return {"type": "input_audio_buffer.commit"}


def response_create() -> dict:
    return {"type": "response.create"}


def user_text(text: str) -> dict:
    return {"type": "conversation.item.create",
            "item": {"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": text}]}}


def tool_output(call_id: str, output: str) -> dict:
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


def truncate(item_id: str, audio_end_ms: int) -> dict:
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": audio_end_ms}
