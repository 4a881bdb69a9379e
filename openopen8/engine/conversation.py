"""Conversation items: storage, the client's item shapes, and the chat
history an LLM sees.

An :class:`Item` keeps the GA item dict the client sees plus what the engine
needs on the side: the audio bytes (so ``conversation.item.retrieve`` can
return them), the user audio's transcript for the LLM even when input
transcription events are off, and for model audio the alignment marks
``(audio_end_ms, transcript_length)`` written with every audio delta, which
is how barge-in and ``conversation.item.truncate`` know what had been said
by a given millisecond.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .codec import (AudioDecodeError, b64decode, b64encode, bytes_per_ms, format_rate,
                    resample, wire_to_pcm)
from .sessionconfig import ProtocolError


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class Item:
    id: str
    data: dict[str, Any]                 # the GA item, without audio bytes
    audio: bytearray = field(default_factory=bytearray)
    audio_fmt: str = ""
    audio_ms: float = 0.0
    pcm16k: np.ndarray | None = None     # user audio waiting for STT
    stt_text: str | None = None          # user audio: what STT heard
    stt_pending: bool = False
    marks: list[tuple[float, int]] = field(default_factory=list)
    full_text: str = ""                  # model audio: transcript of the audio kept
    response_id: str | None = None

    @property
    def type(self) -> str:
        return self.data.get("type", "")

    @property
    def role(self) -> str | None:
        return self.data.get("role")

    def public(self, with_audio: bool = False) -> dict[str, Any]:
        """The item as sent to the client (a copy)."""
        d = dict(self.data)
        if "content" in d:
            content = [dict(c) for c in d["content"]]
            if with_audio and self.audio:
                for c in content:
                    if c.get("type") in ("input_audio", "output_audio"):
                        c["audio"] = b64encode(bytes(self.audio))
            d["content"] = content
        return d

    def is_model_audio(self) -> bool:
        return (self.type == "message" and self.role == "assistant"
                and any(c.get("type") == "output_audio" for c in self.data.get("content", [])))

    def spoken_text(self) -> str:
        """User/assistant/system text as the LLM should read it."""
        parts = []
        for c in self.data.get("content", []):
            t = c.get("type")
            if t in ("input_text", "output_text", "text"):
                parts.append(c.get("text") or "")
            elif t == "input_audio":
                parts.append(self.stt_text if self.stt_text is not None
                             else (c.get("transcript") or ""))
            elif t in ("output_audio", "audio"):
                parts.append(c.get("transcript") or "")
        return " ".join(p.strip() for p in parts if p and p.strip())

    def text_at(self, ms: float) -> str:
        """The transcript spoken by ``ms`` (model audio), from the alignment marks."""
        keep = 0
        for end_ms, length in self.marks:
            if end_ms <= ms + 1e-6:
                keep = length
            else:
                break
        return self.full_text[:keep].rstrip()

    def set_transcript(self, text: str) -> None:
        for c in self.data.get("content", []):
            if c.get("type") == "output_audio":
                c["transcript"] = text

    def cut_at(self, ms: float) -> str:
        """Keep the audio and transcript up to ``ms`` only; returns the transcript."""
        text = self.text_at(ms)
        self.marks = [m for m in self.marks if m[0] <= ms + 1e-6]
        self.full_text = self.full_text[: self.marks[-1][1]] if self.marks else ""
        if self.audio_fmt:
            nbytes = int(ms * bytes_per_ms(self.audio_fmt))
            if self.audio_fmt == "audio/pcm":
                nbytes -= nbytes % 2
            del self.audio[nbytes:]
        self.audio_ms = min(self.audio_ms, ms)
        self.set_transcript(text)
        return text


class Conversation:
    """Ordered items with a cap: the oldest go first when it is exceeded."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: dict[str, Item] = {}
        self._order: list[str] = []

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._order)

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def last_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def items(self) -> list[Item]:
        return [self._items[i] for i in self._order]

    def previous_id(self, item_id: str) -> str | None:
        idx = self._order.index(item_id)
        return self._order[idx - 1] if idx > 0 else None

    def add(self, item: Item, previous_item_id: str | None = None,
            at_root: bool = False) -> str | None:
        """Insert; returns the id of the item before it (None at the start)."""
        if at_root:
            self._order.insert(0, item.id)
        elif previous_item_id is not None:
            self._order.insert(self._order.index(previous_item_id) + 1, item.id)
        else:
            self._order.append(item.id)
        self._items[item.id] = item
        self._enforce_cap(keep=item.id)
        return self.previous_id(item.id)

    def delete(self, item_id: str) -> Item | None:
        item = self._items.pop(item_id, None)
        if item is not None:
            self._order.remove(item_id)
        return item

    def _enforce_cap(self, keep: str) -> None:
        while len(self._order) > self.max_items:
            victim = next((i for i in self._order if i != keep), None)
            if victim is None:
                return
            self.delete(victim)


# ------------------------------------------------------- client item → Item

def item_from_client(raw: Any, input_fmt: str) -> Item:
    """Validate a ``conversation.item.create`` item."""
    if not isinstance(raw, dict):
        raise ProtocolError("missing_required_parameter",
                            "Missing required parameter: 'item'.", "item")
    kind = raw.get("type", "message")
    item_id = raw.get("id") or new_id("item")
    if not isinstance(item_id, str) or len(item_id) > 64:
        raise ProtocolError("invalid_value", "Invalid 'item.id'.", "item.id")
    if kind == "message":
        return _message(raw, item_id, input_fmt)
    if kind == "function_call":
        name, args = raw.get("name"), raw.get("arguments", "")
        if not isinstance(name, str) or not isinstance(args, str):
            raise ProtocolError("missing_required_parameter",
                                "A function_call item needs 'name' and string 'arguments'.",
                                "item.name")
        return Item(item_id, {"id": item_id, "type": "function_call", "object": "realtime.item",
                              "status": "completed", "call_id": raw.get("call_id") or
                              new_id("call"), "name": name, "arguments": args})
    if kind == "function_call_output":
        call_id, output = raw.get("call_id"), raw.get("output")
        if not isinstance(call_id, str) or not isinstance(output, str):
            raise ProtocolError("missing_required_parameter",
                                "A function_call_output item needs string 'call_id' and "
                                "'output'.", "item.call_id")
        return Item(item_id, {"id": item_id, "type": "function_call_output",
                              "object": "realtime.item", "status": "completed",
                              "call_id": call_id, "output": output})
    raise ProtocolError("invalid_value",
                        "Invalid 'item.type': expected 'message', 'function_call' or "
                        "'function_call_output'.", "item.type")


_ALLOWED = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio", "text", "audio"),
}


def _message(raw: dict[str, Any], item_id: str, input_fmt: str) -> Item:
    role = raw.get("role")
    if role not in _ALLOWED:
        raise ProtocolError("invalid_value",
                            "Invalid 'item.role': expected 'user', 'assistant' or 'system'.",
                            "item.role")
    content = raw.get("content")
    if not isinstance(content, list) or not content:
        raise ProtocolError("missing_required_parameter",
                            "Missing required parameter: 'item.content'.", "item.content")
    item = Item(item_id, {})
    out = []
    for i, c in enumerate(content):
        t = c.get("type") if isinstance(c, dict) else None
        if t not in _ALLOWED[role]:
            raise ProtocolError("invalid_value",
                                f"Invalid 'item.content[{i}].type' for role {role}.",
                                f"item.content[{i}].type")
        if t == "input_audio":
            audio = c.get("audio")
            pcm = np.zeros(0, dtype=np.int16)
            if isinstance(audio, str) and audio:
                try:
                    wire = b64decode(audio)
                except AudioDecodeError as exc:
                    raise ProtocolError("invalid_value", str(exc),
                                        f"item.content[{i}].audio") from None
                item.audio += wire
                item.audio_fmt = input_fmt
                item.audio_ms = len(wire) / bytes_per_ms(input_fmt)
                pcm = resample(wire_to_pcm(input_fmt, wire), format_rate(input_fmt), 16000)
            transcript = c.get("transcript")
            if isinstance(transcript, str) and transcript:
                item.stt_text = transcript
            elif pcm.size:
                item.pcm16k = pcm
                item.stt_pending = True
            else:
                item.stt_text = ""
            out.append({"type": "input_audio", "transcript": transcript
                        if isinstance(transcript, str) else None})
        elif t == "input_image":
            out.append({"type": "input_image", **{k: c[k] for k in ("image_url", "detail")
                                                 if k in c}})
        elif t in ("output_audio", "audio"):
            out.append({"type": "output_audio", "transcript": c.get("transcript") or ""})
        else:
            text = c.get("text")
            if not isinstance(text, str):
                raise ProtocolError("missing_required_parameter",
                                    f"Missing required parameter: 'item.content[{i}].text'.",
                                    f"item.content[{i}].text")
            out.append({"type": "output_text" if t == "text" else t, "text": text})
    item.data = {"id": item_id, "type": "message", "object": "realtime.item",
                 "status": "completed", "role": role, "content": out}
    return item


# ----------------------------------------------------------- LLM history

@dataclass
class History:
    messages: list[dict[str, Any]]
    #: audio items the prompt contains (their transcripts stand in for audio)
    audio_ms_in: float = 0.0
    transcript_text: str = ""


def build_history(items: list[Item], instructions: str, budget_tokens: int,
                  count: Callable[[str], int],
                  examples: list[dict[str, Any]] | None = None) -> History:
    """Chat messages for ``items``, newest first until ``budget_tokens``.

    The instructions (and the persona's ``examples`` after them, outside the
    budget: a constant prefix that stays in llama.cpp's KV cache) always stay.  A history that starts with an assistant
    or tool message is trimmed to start at a user message, so small models
    do not see a reply without its question.
    """
    picked: list[tuple[Item, dict[str, Any]]] = []
    used = 0
    for item in reversed(items):
        msg = _message_for(item)
        if msg is None:
            continue
        cost = count(str(msg.get("content") or "")) + 4
        if picked and used + cost > budget_tokens:
            break
        used += cost
        picked.append((item, msg))
    picked.reverse()
    while picked and picked[0][1]["role"] in ("assistant", "tool") and len(picked) > 1:
        picked.pop(0)
    hist = History(messages=[{"role": "system", "content": instructions}] if instructions
                   else [])
    hist.messages += [dict(m) for m in examples or ()]
    texts = []
    for item, msg in picked:
        hist.messages.append(msg)
        if item.audio_ms and item.type == "message":
            hist.audio_ms_in += item.audio_ms
            texts.append(item.spoken_text())
    hist.transcript_text = " ".join(texts)
    return hist


def _message_for(item: Item) -> dict[str, Any] | None:
    t = item.type
    if t == "message":
        text = item.spoken_text()
        if not text:
            return None
        return {"role": item.role, "content": text}
    if t == "function_call":
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": item.data.get("call_id"), "type": "function",
            "function": {"name": item.data.get("name"),
                         "arguments": item.data.get("arguments") or "{}"}}]}
    if t == "function_call_output":
        return {"role": "tool", "tool_call_id": item.data.get("call_id"),
                "content": item.data.get("output") or ""}
    return None

