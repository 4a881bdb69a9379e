"""The local engine as the default channel, through the gateway, on the real
models: the relay, stages and clients cannot tell it from OpenAI."""

from __future__ import annotations

import asyncio
import base64
import json
import wave

import aiohttp
import pytest
from openai import AsyncOpenAI

from openopen8.engine.config import EngineConfig
from openopen8.engine.runtime import get_engine
from tests.conftest import start_gateway
from tests.engine.helpers import check_sdk, question_audio, silence_pcm24k  # noqa: F401
from tests.talkkit import gateway_root, run_talk

pytestmark = pytest.mark.slow

MODEL = "openopen8-local"


@pytest.fixture(scope="module")
def loaded():
    """Load the real models once for the module (shared with every gateway)."""
    get_engine(EngineConfig()).load_sync()


@pytest.fixture
async def local_gw(tmp_path, loaded):
    gw = await start_gateway(tmp_path, local_engine=True)
    try:
        yield gw, await gw.token()
    finally:
        await gw.stop()


async def test_spoken_question_through_the_gateway_with_server_vad(local_gw, question_audio):
    gw, token = local_gw
    events: list[dict] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gw.url + f"?model={MODEL}",
                                   headers={"Authorization": f"Bearer {token}"}) as ws:

            async def read_until(kind: str, timeout: float = 60) -> dict:
                while True:
                    ev = json.loads(await asyncio.wait_for(ws.receive_str(), timeout))
                    check_sdk(ev)                     # every event parses as the SDK's type
                    events.append(ev)
                    if ev["type"] == kind:
                        return ev

            await read_until("session.created")
            await ws.send_str(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "audio": {"input": {
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}}}))
            await read_until("session.updated")

            async def speak() -> None:
                pcm = question_audio + silence_pcm24k(1200)
                for i in range(0, len(pcm), 960):     # 20 ms at 24 kHz, real-time pace
                    await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                                  "audio": base64.b64encode(pcm[i:i + 960]).decode()}))
                    await asyncio.sleep(0.02)

            talking = asyncio.ensure_future(speak())
            done = await read_until("response.done")
            await talking
            if not any(e["type"] == "conversation.item.input_audio_transcription.completed" for e in events):
                await read_until("conversation.item.input_audio_transcription.completed", 20)
    kinds = [e["type"] for e in events]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped")
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert "capital" in heard["transcript"].lower() and "france" in heard["transcript"].lower()
    assert kinds.count("response.output_audio.delta") >= 3
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert transcript.strip()
    usage = done["response"]["usage"]
    assert done["response"]["status"] == "completed"
    assert usage["output_token_details"]["audio_tokens"] > 0 and usage["input_tokens"] > 0


async def test_official_sdk_text_session_against_the_local_channel(local_gw):
    gw, token = local_gw
    client = AsyncOpenAI(base_url=gw.base_url, api_key=token)
    async with client.realtime.connect(model=MODEL) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "instructions": "Answer in one short sentence."})
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the capital of France?"}]})
        await conn.response.create()
        deltas, kinds = [], []
        while True:
            ev = await asyncio.wait_for(conn.recv(), 60)
            kinds.append(ev.type)
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
            if ev.type == "response.created":
                # a second response.create while one is active is refused, session goes on
                await conn.response.create()
            if ev.type == "response.done":
                break
        assert "error" in kinds
        assert deltas and "".join(deltas).strip()
        assert "response.output_audio.delta" not in kinds
        assert ev.response.usage.output_token_details.text_tokens > 0


async def test_talk_file_against_the_local_engine(local_gw, question_audio, tmp_path):
    gw, token = local_gw
    wav_in = tmp_path / "q.wav"
    with wave.open(str(wav_in), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(question_audio)
    out = tmp_path / "reply.wav"
    run = await run_talk(gateway_root(gw.url), "--file", str(wav_in), "--out", str(out),
                         "--timeout", "60", token=token, model=MODEL, timeout=120)
    assert run.code == 0, str(run)
    with wave.open(str(out), "rb") as w:
        assert w.getnframes() > 0
    assert "capital" in run.stdout.lower() or "capital" in run.stderr.lower(), str(run)


async def test_local_is_not_offered_when_a_stored_channel_serves_the_model(tmp_path, loaded):
    gw = await start_gateway(tmp_path, local_engine=True)
    try:
        token = await gw.token()
        await gw.channel("remote", "http://127.0.0.1:9/v1", [MODEL])
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(gw.url + f"?model={MODEL}&token={token}")
        assert exc.value.status == 502          # the operator's channel wins, and is down
    finally:
        await gw.stop()
