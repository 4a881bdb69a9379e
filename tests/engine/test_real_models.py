"""The engine on its real models (Silero, whisper tiny.en, SmolLM2, Piper),
driven directly as an endpoint.  Models load once for the whole module.

Every server event is validated against the official SDK's
``openai.types.realtime.RealtimeServerEvent``.
"""

from __future__ import annotations

import asyncio
import base64

import pytest


from .helpers import (QUESTION, open_client, question_audio,  # noqa: F401
                      silence_pcm24k, synthesize_pcm24k)

pytestmark = pytest.mark.slow


async def test_spoken_question_with_server_vad(engine, question_audio):
    c = await open_client(engine, audio={"input": {"transcription": {"model": "whisper-1"}}})
    talk = asyncio.ensure_future(
        c.append_audio(question_audio + silence_pcm24k(1200), chunk_ms=20, realtime=True))
    done = await c.until("response.done", timeout=30)
    await talk
    await c.drain(0.3)
    t = c.types()
    assert t.index("input_audio_buffer.speech_started") < \
        t.index("input_audio_buffer.speech_stopped") < t.index("input_audio_buffer.committed") \
        < t.index("response.created") < t.index("response.output_audio.delta") \
        < t.index("response.done")
    heard = c.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert "capital" in heard.lower() and "france" in heard.lower(), heard
    deltas = c.of("response.output_audio.delta")
    assert len(deltas) >= 5
    audio = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    assert len(audio) > 48 * 500                      # more than half a second of speech
    reply = c.of("response.output_audio_transcript.done")[0]["transcript"]
    assert reply.strip()
    assert "".join(d["delta"] for d in c.of("response.output_audio_transcript.delta")) == reply
    r = done["response"]
    assert r["status"] == "completed"
    assert r["output"][0]["content"][0]["transcript"] == reply
    u = r["usage"]
    assert u["input_token_details"]["audio_tokens"] >= 15      # ~2 s of question
    assert u["input_token_details"]["text_tokens"] > 0
    assert u["output_token_details"]["text_tokens"] > 0
    assert u["output_token_details"]["audio_tokens"] >= len(audio) // 48 // 50
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    await c.ep.close()


async def test_text_only_session(engine):
    c = await open_client(engine, output_modalities=["text"])
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}})
    await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    done = await c.until("response.done", timeout=20)
    deltas = c.of("response.output_text.delta")      # a sentence at a time
    assert len(deltas) >= 1
    text = c.of("response.output_text.done")[0]["text"]
    assert text == "".join(d["delta"] for d in deltas) and text.strip()
    assert "paris" in text.lower(), text
    assert not c.of("response.output_audio.delta")
    assert done["response"]["output"][0]["content"][0]["type"] == "output_text"
    assert done["response"]["usage"]["output_token_details"]["audio_tokens"] == 0
    await c.ep.close()


async def test_second_response_create_during_active_response(engine):
    c = await open_client(engine)
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}})
    await c.send({"type": "response.create"})
    await c.send({"type": "response.create", "event_id": "evt_dup"})
    err = await c.until("error", timeout=10)
    assert err["error"]["code"] == "conversation_already_has_active_response"
    assert err["error"]["event_id"] == "evt_dup"
    await c.until("response.done", timeout=20)
    await c.ep.close()


async def test_barge_in_then_truncate(engine):
    c = await open_client(
        engine, instructions="You are a storyteller. Always answer with a long story of at "
                             "least six sentences.")
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Tell me a long story about a brave dragon."}]}})
    await c.send({"type": "response.create"})
    first = await c.until("response.output_audio.delta", timeout=20)
    resp_id, item_id = first["response_id"], first["item_id"]
    # play back in real time what we were sent, and talk over it after ~0.5 s
    await asyncio.sleep(0.5)
    interruption = synthesize_pcm24k("Stop, please.", lead_ms=0)
    talk = asyncio.ensure_future(
        c.append_audio(interruption + silence_pcm24k(800), realtime=True))
    done = await c.until("response.done", timeout=20, **{})
    while done["response"]["id"] != resp_id:
        done = await c.until("response.done", timeout=20)
    await talk
    r = done["response"]
    assert r["status"] == "cancelled", r["status"]
    assert r["status_details"]["reason"] == "turn_detected"
    msg = r["output"][0]
    assert msg["status"] == "incomplete"
    said = msg["content"][0]["transcript"]
    full = "".join(d["delta"] for d in c.of("response.output_audio_transcript.delta")
                   if d["response_id"] == resp_id)
    assert full.startswith(said) and len(said) < len(full) + 1
    started = c.of("input_audio_buffer.speech_started")
    assert started and c.events.index(started[0]) < c.events.index(done)
    # audio of the cancelled response stops at once
    later = c.events[c.events.index(done):]
    assert not [e for e in later if e["type"] == "response.output_audio.delta"
                and e["response_id"] == resp_id]
    # the client says how much it played; the item is cut there
    await c.send({"type": "conversation.item.truncate", "item_id": item_id,
                  "content_index": 0, "audio_end_ms": 200})
    tr = await c.until("conversation.item.truncated", timeout=5)
    assert tr["audio_end_ms"] == 200
    await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
    got = (await c.until("conversation.item.retrieved", timeout=5))["item"]
    assert len(base64.b64decode(got["content"][0]["audio"])) == 200 * 48
    assert said.startswith(got["content"][0]["transcript"])
    await c.send({"type": "conversation.item.truncate", "item_id": item_id,
                  "content_index": 0, "audio_end_ms": 60000})
    assert (await c.until("error", timeout=5))["error"]["code"] == "invalid_value"
    await c.ep.close()
