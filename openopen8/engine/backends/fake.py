"""Tiny deterministic backends for fast tests (no model files, no threads).

They do real, simple work so tests can fail: the VAD measures frame energy,
the STT reports what it was given, the LLM answers from the last user
message, the TTS makes a tone whose length follows the text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

import numpy as np

from .base import (Framer, LlmChunk, LlmRequest, LlmStats, ToolCall, Transcript, TTS_RATE,
                   VAD_RATE)


class EnergyVadStream:
    frame_ms = 20

    def __init__(self, level: float) -> None:
        self._level = level
        self._framer = Framer(VAD_RATE * self.frame_ms // 1000, np.int16)

    async def probabilities(self, pcm16k: np.ndarray) -> list[float]:
        frames = self._framer.push(pcm16k).astype(np.float32)
        if not len(frames):
            return []
        rms = np.sqrt(np.mean(frames * frames, axis=1))
        return [1.0 if r >= self._level else 0.0 for r in rms]


class FakeVad:
    """Energy gate: a frame whose RMS reaches ``level`` is speech."""

    name = "fake"

    def __init__(self, level: float = 500.0) -> None:
        self.level = level

    def load(self) -> None:
        pass

    def stream(self) -> EnergyVadStream:
        return EnergyVadStream(self.level)


class FakeStt:
    """Returns ``text`` (or ``text_for(pcm)``); by default describes the audio."""

    name = "fake"

    def __init__(self, text: str | None = None,
                 text_for: Callable[[np.ndarray], str] | None = None,
                 delay: float = 0.0, fail: bool = False) -> None:
        self.text = text
        self.text_for = text_for
        self.delay = delay
        self.fail = fail
        self.calls: list[int] = []

    def load(self) -> None:
        pass

    async def transcribe(self, pcm16k: np.ndarray) -> Transcript:
        self.calls.append(int(pcm16k.size))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("fake transcription failure")
        seconds = pcm16k.size / 16000
        if self.text_for is not None:
            text = self.text_for(pcm16k)
        elif self.text is not None:
            text = self.text
        else:
            text = f"audio of {round(seconds * 1000)} milliseconds"
        return Transcript(text=text, seconds=seconds)


class FakeLlmStream:
    def __init__(self, chunks: list[LlmChunk], stats: LlmStats, delay: float) -> None:
        self.stats = stats
        self._chunks = chunks
        self._delay = delay
        self._closed = False
        self.emitted = 0

    def __aiter__(self) -> AsyncIterator[LlmChunk]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[LlmChunk]:
        for c in self._chunks:
            if self._closed:
                return
            if self._delay:
                await asyncio.sleep(self._delay)
            self.emitted += 1
            self.stats.completion_tokens += 1
            yield c

    async def aclose(self) -> None:
        self._closed = True


class FakeLlm:
    """Replies ``reply`` or "You said: <last user text>." word by word.

    With tools and a ``tool_choice`` of "required" or a named function it
    calls the first (or named) tool with ``tool_args``; with "auto" it calls
    a tool only when the last user text contains the tool's name.
    """

    name = "fake"

    def __init__(self, reply: str | None = None, delay: float = 0.0,
                 tool_args: dict[str, Any] | None = None, fail: bool = False) -> None:
        self.reply = reply
        self.delay = delay
        self.tool_args = tool_args if tool_args is not None else {"value": 1}
        self.fail = fail
        self.requests: list[LlmRequest] = []

    def load(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, req: LlmRequest) -> FakeLlmStream:
        self.requests.append(req)
        if self.fail:
            raise RuntimeError("fake LLM failure")
        last_user = ""
        for m in reversed(req.messages):
            if m.get("role") == "user":
                last_user = str(m.get("content") or "")
                break
        stats = LlmStats(prompt_tokens=sum(self.count_tokens(str(m.get("content") or ""))
                                           for m in req.messages))
        tool = self._pick_tool(req, last_user)
        if tool is not None:
            stats.finish_reason = "tool_calls"
            call = ToolCall(name=tool, arguments=json.dumps(self.tool_args))
            return FakeLlmStream([LlmChunk(tool_call=call)], stats, self.delay)
        text = self.reply if self.reply is not None else f"You said: {last_user}."
        words = text.split(" ")
        chunks = [LlmChunk(text=(w if i == 0 else " " + w)) for i, w in enumerate(words)]
        if len(chunks) > req.max_tokens:
            chunks = chunks[: req.max_tokens]
            stats.finish_reason = "length"
        return FakeLlmStream(chunks, stats, self.delay)

    @staticmethod
    def _pick_tool(req: LlmRequest, last_user: str) -> str | None:
        names = [t.get("name") for t in req.tools if t.get("type", "function") == "function"]
        choice = req.tool_choice
        if not names or choice == "none":
            return None
        if isinstance(choice, dict):
            return choice.get("name")
        if choice == "required":
            return names[0]
        for n in names:
            if n and n.lower() in last_user.lower():
                return n
        return None


class FakeTts:
    """A 440 Hz tone, ``ms_per_char`` long per character of text."""

    name = "fake"

    def __init__(self, ms_per_char: float = 40.0, delay: float = 0.0) -> None:
        self.ms_per_char = ms_per_char
        self.delay = delay
        self.calls: list[str] = []

    def load(self) -> None:
        pass

    async def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        self.calls.append(text)
        if self.delay:
            await asyncio.sleep(self.delay)
        n = int(TTS_RATE * self.ms_per_char * len(text) / 1000)
        t = np.arange(n, dtype=np.float32) / TTS_RATE
        return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
