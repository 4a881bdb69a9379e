"""Beta clients and non-24 kHz audio through the gateway to a GA upstream
that, like OpenAI, refuses beta fields and the beta header."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.standin import Script, StandIn

PCM24 = {"type": "audio/pcm", "rate": 24000}


@pytest.fixture
async def wired(gateway):
    async with StandIn() as up:
        await gateway.channel("standin", up.base_url, ["gpt-realtime"])
        yield gateway, up, await gateway.token()


def tone(rate: int, ms: int, hz: float = 440.0, amp: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def peak_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spec))])


def ulaw_encode(pcm: bytes) -> bytes:
    from openopen8.audio.g711 import ulaw_encode as enc  # checked bit-exact in tests/audio
    return enc(np.frombuffer(pcm, "<i2"))


async def test_official_beta_sdk_client_through_the_gateway_to_ga(wired):
    gateway, up, token = wired
    client = AsyncOpenAI(api_key=token, websocket_base_url=gateway.base_url.replace("http", "ws"))
    async with client.beta.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"modalities": ["text", "audio"], "voice": "alloy",
                                           "input_audio_format": "pcm16", "temperature": 0.7,
                                           "turn_detection": None})
        kinds = []
        while True:
            ev = await asyncio.wait_for(conn.recv(), 5)
            kinds.append(ev.type)
            if ev.type == "session.updated":
                break
        assert ev.session.modalities and set(ev.session.modalities) == {"text", "audio"}
        assert ev.session.voice == "alloy" and ev.session.input_audio_format == "pcm16"
        await conn.conversation.item.create(item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]})
        await conn.response.create()
        audio, transcript = 0, ""
        while True:
            ev = await asyncio.wait_for(conn.recv(), 5)
            kinds.append(ev.type)
            if ev.type == "response.audio.delta":
                audio += len(base64.b64decode(ev.delta))
            elif ev.type == "response.audio_transcript.delta":
                transcript += ev.delta
            elif ev.type == "response.done":
                break
        assert audio > 0 and transcript == up.script.text
        assert "conversation.item.created" in kinds
        assert not any(k.startswith(("response.output_audio", "response.output_text",
                                     "conversation.item.added", "conversation.item.done"))
                       for k in kinds)
        # temperature was dropped with a warning, not refused upstream
        assert any(k == "error" for k in kinds)
    s = up.sessions[-1]
    assert "OpenAI-Beta" not in s.headers
    upd = next(e for e in s.received if e["type"] == "session.update")
    assert upd["session"]["type"] == "realtime" and "temperature" not in upd["session"]
    assert upd["session"]["output_modalities"] == ["audio"]
    assert upd["session"]["audio"]["output"]["voice"] == "alloy"
    assert not [e for e in s.sent if e == "error"]   # the upstream accepted everything


async def ws_session(gateway, token, query=""):
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}{query}",
                               max_msg_size=0)
    return http, ws


async def read_until(ws, kind, limit=500):
    seen = []
    for _ in range(limit):
        ev = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
        seen.append(ev)
        if ev["type"] == kind:
            return seen
    raise AssertionError(kind)


async def test_16khz_input_reaches_upstream_at_24khz_with_the_same_tone(wired):
    gateway, up, token = wired
    http, ws = await ws_session(gateway, token)
    try:
        await ws.send_str(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000},
                                                    "turn_detection": None}}}}))
        updated = (await read_until(ws, "session.updated"))[-1]
        # the client sees the format it asked for, not the upstream's
        assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
        pcm = tone(16000, 1000, hz=440)
        for i in range(0, len(pcm), 640):                       # 20 ms chunks
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm[i:i + 640]).decode()}))
        await ws.send_str(json.dumps({"type": "input_audio_buffer.commit"}))
        await read_until(ws, "input_audio_buffer.committed")
    finally:
        await ws.close()
        await http.close()
    s = up.sessions[-1]
    assert s.input_formats[-1] == PCM24
    got = bytes(s.input_audio)
    assert len(got) == len(pcm) * 3 // 2
    assert abs(peak_hz(got, 24000) - 440) < 5


async def test_8khz_pcm_input_is_tripled_and_ulaw_passes_through_natively(wired):
    gateway, up, token = wired
    http, ws = await ws_session(gateway, token, "&input_rate=8000")   # the URL hint
    try:
        pcm = tone(8000, 500, hz=300)
        for i in range(0, len(pcm), 320):
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm[i:i + 320]).decode()}))
        await ws.send_str(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"},
                                                    "turn_detection": None}}}}))
        await read_until(ws, "session.updated")
        ulaw = ulaw_encode(tone(8000, 500, hz=300))
        await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(ulaw).decode()}))
        await ws.send_str(json.dumps({"type": "input_audio_buffer.commit"}))
        await read_until(ws, "input_audio_buffer.committed")
    finally:
        await ws.close()
        await http.close()
    s = up.sessions[-1]
    assert s.input_formats[0] == PCM24 and s.input_formats[-1] == {"type": "audio/pcmu"}
    # the stand-in records appended bytes as sent; the first 500 ms were 8 kHz PCM made 24 kHz
    first = bytes(s.input_audio[: len(pcm) * 3])
    assert abs(peak_hz(first, 24000) - 300) < 5
    # OpenAI accepts G.711 natively: the μ-law bytes arrive untouched, no conversion work
    assert bytes(s.input_audio[len(pcm) * 3:]) == ulaw


async def test_output_deltas_arrive_at_the_clients_rate(wired):
    gateway, up, token = wired
    up.scripts.append(Script(audio_deltas=4, audio_delta_ms=100))
    http, ws = await ws_session(gateway, token)
    try:
        await ws.send_str(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}}))
        await read_until(ws, "session.updated")
        await ws.send_str(json.dumps({"type": "response.create"}))
        events = await read_until(ws, "response.done")
    finally:
        await ws.close()
        await http.close()
    pcm = b"".join(base64.b64decode(e["delta"]) for e in events
                   if e["type"] == "response.output_audio.delta")
    assert up.sessions[-1].session["audio"]["output"]["format"] == PCM24   # upstream spoke 24 kHz
    assert len(pcm) == 4 * 100 * 16 * 2                                     # 400 ms at 16 kHz
    assert abs(peak_hz(pcm, 16000) - 440) < 5


async def test_raw_client_written_from_the_seed_document_completes_a_voice_turn(wired):
    """Only what seeds/000 documents: ?token=, beta names, a flat session."""
    gateway, up, token = wired
    up.scripts.append(Script(text="Paris is the capital.", audio_deltas=3))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}") as ws:
            first = json.loads(await ws.receive_str())
            assert first["type"] == "session.created"
            await ws.send_str(json.dumps({"type": "session.update", "session": {
                "modalities": ["text", "audio"], "instructions": "Answer briefly.",
                "voice": "alloy", "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                "input_audio_transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 200},
                "temperature": 0.8}}))
            speech = tone(24000, 600) + bytes(24000 * 2 * 600 // 1000)   # speech then silence
            for i in range(0, len(speech), 960 * 2):
                await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": base64.b64encode(speech[i:i + 1920]).decode()}))
            events = await read_until(ws, "response.done")
    kinds = [e["type"] for e in events]
    for k in ("session.updated", "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
              "conversation.item.created", "response.audio.delta", "response.audio_transcript.delta"):
        assert k in kinds, k
    assert "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta") \
        == "Paris is the capital."
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["usage"]["total_tokens"] > 0
    assert done["output"][0]["content"][0]["type"] == "audio"      # beta content type
    upd = up.sessions[-1].received[0]
    assert upd["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
