"""Turn-taking and reply form on the real models (Silero, whisper tiny.en,
SmolLM2, Piper): semantic_vad ends a complete question early and waits on an
unfinished one, a speculative reply is dropped when speech resumes, and a
reply clipped by max_output_tokens ends at a sentence.

Audio is streamed at real-time pace (the decisions depend on what is heard
during a pause); the assertions are on the audio timeline and on the
decisions, never on wall-clock times.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from openopen8.engine.session import SEMANTIC

from .helpers import open_client, silence_pcm24k, synthesize_pcm24k

pytestmark = pytest.mark.slow


def speech_ms(pcm: bytes) -> float:
    """Where the speech in ``pcm`` ends (ms), ignoring the synthesizer's quiet tail."""
    x = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(x) > 200)
    return (loud[-1] + 1) / 24 if loud.size else 0.0


def semantic(eagerness: str = "auto") -> dict:
    return {"input": {"transcription": {"model": "whisper-1"},
                      "turn_detection": {"type": "semantic_vad", "eagerness": eagerness}}}


async def test_semantic_vad_ends_a_complete_question_before_the_longest_wait(engine):
    c = await open_client(engine, audio=semantic())
    question = synthesize_pcm24k("What is the capital of France?")
    talk = asyncio.ensure_future(c.append_audio(question + silence_pcm24k(2000), realtime=True))
    stopped = await c.until("input_audio_buffer.speech_stopped", timeout=20)
    await c.until("response.done", timeout=20)
    await talk
    thr, short, _mid, longest = SEMANTIC["auto"]
    p_end, wait, _heard = c.ep.session.turn_hints[-1]
    assert p_end >= thr and wait == short          # judged complete
    assert stopped["audio_end_ms"] - speech_ms(question) < longest
    assert len(c.of("input_audio_buffer.speech_stopped")) == 1
    await c.ep.close()


async def test_semantic_vad_waits_through_a_pause_in_an_unfinished_question(engine):
    c = await open_client(engine, audio=semantic())
    head = synthesize_pcm24k("What is the capital of")
    tail = synthesize_pcm24k("France?", lead_ms=0)
    pause = silence_pcm24k(700)       # longer than server_vad's 400 ms, shorter than the wait
    talk = asyncio.ensure_future(c.append_audio(head + pause + tail + silence_pcm24k(2000),
                                                realtime=True))
    done = await c.until("response.done", timeout=25)
    await talk
    await c.drain(0.3)
    stops = c.of("input_audio_buffer.speech_stopped")
    assert len(stops) == 1, [s["audio_end_ms"] for s in stops]
    assert stops[0]["audio_end_ms"] > (len(head) + len(pause)) / 48
    heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert "france" in heard.lower(), heard
    assert any(w == SEMANTIC["auto"][3] for _, w, _ in c.ep.session.turn_hints)   # waited
    assert done["response"]["status"] == "completed"
    await c.ep.close()


async def test_a_speculative_reply_is_dropped_when_speech_resumes(engine):
    c = await open_client(engine, audio={"input": {
        "transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}})
    head = synthesize_pcm24k("What is the capital of")
    tail = synthesize_pcm24k("Italy?", lead_ms=0)
    talk = asyncio.ensure_future(c.append_audio(
        head + silence_pcm24k(300) + tail + silence_pcm24k(1500), realtime=True))
    done = await c.until("response.done", timeout=25)
    await talk
    stats = c.ep.stats
    # the pause started a guess (STT, then the reply's model work) that
    # speech coming back dropped; the turn's own guess was the response
    assert stats["speculations"] >= 2 and stats["pipelines_started_early"] >= 2
    assert stats["adopted"] == 1
    assert len(c.of("input_audio_buffer.speech_stopped")) == 1
    heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert "italy" in heard.lower(), heard
    assert done["response"]["status"] == "completed"
    await c.ep.close()


async def test_a_clipped_reply_ends_at_a_sentence(engine):
    c = await open_client(engine)
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Tell me about the Eiffel Tower."}]}})
    await c.send({"type": "response.create", "response": {"max_output_tokens": 16}})
    done = await c.until("response.done", timeout=20)
    r = done["response"]
    assert r["status"] == "incomplete"
    assert r["status_details"]["reason"] == "max_output_tokens"
    said = r["output"][0]["content"][0]["transcript"]
    assert said.strip() and said.rstrip()[-1] in ".!?", said
    await c.ep.close()


async def test_kv_states_bring_a_conversation_back_after_another_one(engine):
    from openopen8.engine.backends.base import LlmRequest
    llm = engine.backends.llm

    async def reply(messages):
        stream = llm.stream(LlmRequest(messages=messages, max_tokens=16, temperature=0.0))
        return "".join([c.text async for c in stream]), stream.stats

    sys_ = {"role": "system", "content": "You are a helpful assistant."}
    a = [sys_, {"role": "user", "content": "My dog is called Rex. He likes long walks "
                                           "in the park every morning."}]
    b = [sys_, {"role": "user", "content": "What is the tallest mountain on Earth? "
                                           "Please answer in one sentence."}]
    a.append({"role": "assistant", "content": (await reply(a))[0]})
    await reply(b)                                  # another session's turn in between
    a.append({"role": "user", "content": "What is my dog called?"})
    before = llm.kv.restored
    again, _ = await reply(a)
    assert llm.kv.restored == before + 1            # A's state was put back
    kv, llm.kv = llm.kv, None
    try:
        llm.llama.reset()
        fresh, _ = await reply(a)                   # the same prompt from scratch
    finally:
        llm.kv = kv
    assert again == fresh
