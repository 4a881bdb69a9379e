"""Helpers for engine tests: drive an endpoint with dicts, synthesize speech,
and check every server event against the official SDK's types.

``synthesize_pcm24k(text)`` speaks ``text`` with the engine's own Piper voice
(loaded once per test process) and returns 24 kHz pcm16 bytes, the GA input
format; ``question_audio`` is a pytest fixture with "What is the capital of
France?".  The gateway and SDK tests can reuse both.
"""

from __future__ import annotations

import asyncio
import base64
import time
from functools import lru_cache
from typing import Any

import numpy as np
import pytest

from openopen8.events import Event

QUESTION = "What is the capital of France?"


# ------------------------------------------------------------ SDK checking

@lru_cache(maxsize=1)
def _adapter():
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter
    return TypeAdapter(RealtimeServerEvent)


def check_sdk(ev: dict[str, Any]) -> Any:
    """Validate one server event as ``openai.types.realtime.RealtimeServerEvent``
    (a real pydantic validation, not the SDK's unchecked construct)."""
    model = _adapter().validate_python(ev)
    assert model.type == ev["type"], (model.type, ev["type"])
    return model


# ------------------------------------------------------------ speech

@lru_cache(maxsize=1)
def _piper():
    from openopen8.engine.backends.tts import PiperTts
    from openopen8.engine.config import default_cache_dir
    tts = PiperTts(str(default_cache_dir()))
    tts.load()
    return tts


@lru_cache(maxsize=16)
def synthesize_pcm24k(text: str, lead_ms: int = 300, tail_ms: int = 0) -> bytes:
    """``text`` spoken by Piper, 24 kHz mono pcm16 little-endian, with
    ``lead_ms`` of silence before it and ``tail_ms`` after."""
    pcm = _piper()._run(text)
    lead = np.zeros(24 * lead_ms, dtype=np.int16)
    tail = np.zeros(24 * tail_ms, dtype=np.int16)
    return np.concatenate([lead, pcm, tail]).astype("<i2").tobytes()


@pytest.fixture(scope="session")
def question_audio() -> bytes:
    """"What is the capital of France?" as 24 kHz pcm16 bytes (Piper)."""
    return synthesize_pcm24k(QUESTION)


def silence_pcm24k(ms: int) -> bytes:
    return bytes(48 * ms)


def tone_pcm24k(ms: int, amplitude: int = 8000, hz: float = 220.0) -> bytes:
    t = np.arange(24 * ms, dtype=np.float32) / 24000
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype("<i2").tobytes()


# ------------------------------------------------------------ a test client

class Client:
    """Sends dicts to an endpoint and collects what comes back, validating
    every server event with the SDK when ``sdk_check`` is set."""

    def __init__(self, ep: Any, sdk_check: bool = True) -> None:
        self.ep = ep
        self.sdk_check = sdk_check
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self._seen = 0

    async def send(self, ev: dict[str, Any]) -> None:
        await self.ep.send(Event.from_data(ev))

    async def append_audio(self, pcm: bytes, chunk_ms: int = 20, realtime: bool = False,
                           bytes_per_ms: int = 48) -> None:
        """Stream ``pcm`` in ``chunk_ms`` appends (at real-time pace if asked)."""
        step = chunk_ms * bytes_per_ms
        t0 = time.monotonic()
        for i, off in enumerate(range(0, len(pcm), step)):
            await self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(pcm[off:off + step]).decode()})
            if realtime:
                delay = t0 + (i + 1) * chunk_ms / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        ev = await asyncio.wait_for(self.ep.recv(), timeout)
        assert ev is not None, "endpoint closed"
        d = ev.data
        if self.sdk_check:
            check_sdk(d)
        self.events.append(d)
        self.times.append(time.monotonic())
        return d

    async def until(self, type_: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """Read events until one of ``type_`` (with the given fields) arrives."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {type_} within {timeout}s; got "
                                     f"{[e['type'] for e in self.events[-15:]]}")
            d = await self.next(left)
            if d["type"] == type_ and all(d.get(k) == v for k, v in match.items()):
                return d

    async def drain(self, quiet: float = 0.2) -> list[dict[str, Any]]:
        """Everything that arrives until ``quiet`` seconds pass with nothing."""
        out = []
        while True:
            try:
                out.append(await self.next(quiet))
            except asyncio.TimeoutError:
                return out

    def types(self, since: int = 0) -> list[str]:
        return [e["type"] for e in self.events[since:]]

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]


async def open_client(engine, **update) -> "Client":
    """A session on ``engine`` after ``session.created`` -- and, given
    ``update``, the ``session.updated`` of that GA session update."""
    ep = await engine.open_session("", "openopen8-local")
    c = Client(ep)
    await c.until("session.created")
    if update:
        await c.send({"type": "session.update", "session": {"type": "realtime", **update}})
        await c.until("session.updated")
    return c
