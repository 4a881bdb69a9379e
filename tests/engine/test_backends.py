"""The optional backends on their real packages: webrtcvad, espeak-ng,
whisper base (joined from its two packages), the Silero stream against the
batch reference, the grammar-constrained tool call of the llama backend, and
the chat-completions backend against a local OpenAI-compatible stream."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aiohttp import web

from openopen8.engine.backends import assets
from openopen8.engine.backends.base import LlmRequest
from openopen8.engine.backends.llm_chat import ChatCompletionsLlm
from openopen8.engine.codec import resample

from .helpers import QUESTION, synthesize_pcm24k

pytestmark = pytest.mark.slow


def speech16k(text: str = QUESTION) -> np.ndarray:
    pcm = np.frombuffer(synthesize_pcm24k(text, lead_ms=500, tail_ms=500), dtype="<i2")
    return resample(pcm, 24000, 16000)


async def test_webrtc_vad_finds_the_speech():
    from openopen8.engine.backends.vad import WebrtcVad
    vad = WebrtcVad(2)
    vad.load()
    st = vad.stream()
    probs = []
    x = speech16k()
    for i in range(0, x.size, 320):
        probs += await st.probabilities(x[i:i + 320])
    speech = [i for i, p in enumerate(probs) if p > 0.5]
    assert speech, probs
    assert 8 <= speech[0] <= 24                      # ~500 ms lead-in, 30 ms frames
    assert sum(probs[:10]) == 0


async def test_silero_stream_matches_faster_whisper_batch(tmp_path):
    from faster_whisper.vad import get_vad_model
    from openopen8.engine.backends.vad import SileroVad
    vad = SileroVad(str(tmp_path))
    vad.load()
    x = speech16k()
    st = vad.stream()
    probs = []
    for i in range(0, x.size, 320):                  # 20 ms appends
        probs += await st.probabilities(x[i:i + 320])
    n = len(probs) * 512
    ref = get_vad_model()(x[:n].astype(np.float32) / 32768.0).reshape(-1)
    assert np.allclose(probs, ref, atol=1e-3)
    assert max(probs) > 0.9 and min(probs[:10]) < 0.1


async def test_espeak_fallback_speaks_at_24k():
    from openopen8.engine.backends.tts import EspeakTts
    tts = EspeakTts()
    tts.load()
    pcm = await tts.synthesize("Hello there, this is a test.")
    assert pcm.dtype == np.int16
    assert 0.8 < pcm.size / 24000 < 4.0
    assert np.abs(pcm).max() > 1000


async def test_whisper_base_is_joined_once_and_checked(tmp_path):
    path = assets.whisper_base_dir(tmp_path)
    model = path / "model.bin"
    assert model.stat().st_size == 145217532
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.bin",
                                                      "tokenizer.json", "vocabulary.txt"]
    mtime = model.stat().st_mtime_ns
    assert assets.whisper_base_dir(tmp_path) == path      # reused, not rebuilt
    assert model.stat().st_mtime_ns == mtime
    from openopen8.engine.backends.stt import WhisperStt
    stt = WhisperStt("base", str(tmp_path))
    stt.load()
    tr = await stt.transcribe(speech16k())
    assert "capital" in tr.text.lower() and "france" in tr.text.lower()


async def test_local_llm_forced_tool_call_is_well_formed():
    from openopen8.engine.backends.llm_llama import LlamaLlm
    from openopen8.engine.config import default_cache_dir
    llm = LlamaLlm(str(default_cache_dir()))
    llm.load()
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}},
             {"type": "function", "name": "set_timer", "description": "Start a timer",
              "parameters": {"type": "object",
                             "properties": {"minutes": {"type": "integer"}},
                             "required": ["minutes"]}}]
    req = LlmRequest(messages=[{"role": "user", "content": "What's the weather in Paris?"}],
                     tools=tools, tool_choice={"type": "function", "name": "get_weather"},
                     max_tokens=60)
    chunks = [c async for c in llm.stream(req)]
    calls = [c.tool_call for c in chunks if c.tool_call]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    args = json.loads(calls[0].arguments)
    assert isinstance(args.get("city"), str)
    req.tool_choice = "required"
    calls = [c.tool_call async for c in llm.stream(req) if c.tool_call]
    assert len(calls) == 1 and calls[0].name in ("get_weather", "set_timer")
    json.loads(calls[0].arguments)


async def test_chat_completions_backend_streams_text_and_tool_calls():
    seen = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen["body"] = body
        seen["auth"] = request.headers.get("Authorization")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj):
            await resp.write(f"data: {json.dumps(obj)}\n\n".encode())
        if body.get("tools"):
            await send({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_9",
                        "function": {"name": "get_weather", "arguments": "{\"ci"}}]}}]})
            await send({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {
                "arguments": "ty\": \"Paris\"}"}}]}, "finish_reason": "tool_calls"}]})
        else:
            for w in ["The", " capital", " is", " Paris."]:
                await send({"choices": [{"delta": {"content": w}}]})
            await send({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        await send({"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 4}})
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        llm = ChatCompletionsLlm(f"http://127.0.0.1:{port}/v1", "tiny", api_key="sk-secret")
        llm.load()
        assert "sk-secret" not in repr(llm)
        req = LlmRequest(messages=[{"role": "user", "content": "capital?"}], max_tokens=20)
        stream = llm.stream(req)
        text = "".join([c.text async for c in stream])
        assert text == "The capital is Paris."
        assert (stream.stats.prompt_tokens, stream.stats.completion_tokens) == (21, 4)
        assert seen["auth"] == "Bearer sk-secret" and seen["body"]["stream"] is True
        req = LlmRequest(messages=[{"role": "user", "content": "weather?"}],
                         tools=[{"type": "function", "name": "get_weather",
                                 "parameters": {"type": "object"}}],
                         tool_choice={"type": "function", "name": "get_weather"})
        stream = llm.stream(req)
        calls = [c.tool_call async for c in stream if c.tool_call]
        assert calls[0].name == "get_weather" and calls[0].call_id == "call_9"
        assert json.loads(calls[0].arguments) == {"city": "Paris"}
        assert stream.stats.finish_reason == "tool_calls"
        assert seen["body"]["tools"][0]["function"]["name"] == "get_weather"
        assert seen["body"]["tool_choice"] == {"type": "function",
                                               "function": {"name": "get_weather"}}
    finally:
        await runner.cleanup()


def test_short_window_loop_is_recognised():
    from openopen8.engine.backends.stt import _repeats
    for looped in ("What is 2 plus 2? What is two plus 2",
                   "What is the largest planet in our solar system? What is this largest planet?",
                   "Hi, I'm Maria. Hi, Hi, Maria.",
                   "Do you remember my name? Do you Remember my name"):
        assert _repeats(looped), looped
    for said in ("What is the capital of France?", "Hello there. How are you today?",
                 "I like tea. Can you tell me a joke?", ""):
        assert not _repeats(said), said


async def test_short_window_does_not_say_a_natural_voice_twice():
    """Piper's natural voice, transcribed on the short window, made Whisper
    say the question again in other words; the engine hears it once."""
    from piper.config import SynthesisConfig

    from openopen8.engine.backends.stt import WhisperStt
    from openopen8.engine.backends.tts import PiperTts
    from openopen8.engine.config import default_cache_dir
    tts = PiperTts(str(default_cache_dir()))
    tts.load()
    tts.syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0)
    stt = WhisperStt("tiny.en", str(default_cache_dir()))
    stt.load()
    heard = []
    for q in ("What is two plus two?", "Do you remember my name?"):
        tr = await stt.transcribe(resample(tts._run(q), 24000, 16000))
        heard.append(tr.text)
        assert tr.text.count("?") + tr.text.count(".") <= 1, tr.text
        assert len(tr.text.split()) <= len(q.split()) + 1, tr.text
    assert stt.fallbacks >= 1, heard        # the loop was caught, not avoided
