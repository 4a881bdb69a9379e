"""The endpoint with the deterministic backends: the driver around the state
machine (VAD on appends, STT and response tasks, outbox, barge-in purge,
backpressure, close)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from openopen8.engine.backends.base import Backends
from openopen8.engine.backends.fake import FakeLlm, FakeStt, FakeTts, FakeVad
from openopen8.engine.config import EngineConfig
from openopen8.engine.endpoint import LocalEndpoint
from openopen8.engine.runtime import LocalEngine
from openopen8.events import Event
from openopen8.providers.base import ConnectRequest, UpstreamError
from openopen8.providers.local import LocalProvider

from .helpers import Client, silence_pcm24k, tone_pcm24k

FAKE = dict(vad="fake", stt="fake", llm="fake", tts="fake")


def endpoint(llm=None, stt=None, tts=None, **cfg) -> LocalEndpoint:
    b = Backends(vad=FakeVad(), stt=stt or FakeStt(text="what time is it"),
                 llm=llm or FakeLlm(), tts=tts or FakeTts())
    conf = {**dict(silence_duration_ms=200, audio_delta_ms=100), **cfg}
    return LocalEndpoint(b, EngineConfig(**FAKE, **conf), "sess_t", "openopen8-local")


async def test_voice_turn_through_the_endpoint():
    ep = endpoint()
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}})
    await c.until("session.updated")
    await c.append_audio(silence_pcm24k(300) + tone_pcm24k(600) + silence_pcm24k(400))
    done = await c.until("response.done")
    await c.drain(0.1)
    t = c.types()
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed", "conversation.item.added",
             "conversation.item.done", "response.created", "response.output_item.added",
             "conversation.item.added", "response.content_part.added",
             "response.output_audio.done", "response.output_audio_transcript.done",
             "response.content_part.done", "conversation.item.done",
             "response.output_item.done", "response.done"]
    pos = [t.index(x, t.index(order[i - 1]) + 1 if i else 0) for i, x in enumerate(order)]
    assert pos == sorted(pos)
    started = c.of("input_audio_buffer.speech_started")[0]
    stopped = c.of("input_audio_buffer.speech_stopped")[0]
    assert started["audio_start_ms"] == 0          # 300 ms of lead-in, 300 ms of padding
    assert 850 <= stopped["audio_end_ms"] <= 1150
    assert c.of("conversation.item.input_audio_transcription.completed")[0][
        "transcript"] == "what time is it"
    deltas = c.of("response.output_audio.delta")
    assert len(deltas) >= 3
    assert all(len(base64.b64decode(d["delta"])) <= 48 * 100 for d in deltas)
    spoken = "".join(d["delta"] for d in c.of("response.output_audio_transcript.delta"))
    assert spoken == "You said: what time is it."
    assert c.of("response.output_audio_transcript.done")[0]["transcript"] == spoken
    usage = done["response"]["usage"]
    assert usage["output_token_details"]["audio_tokens"] > 0
    assert usage["input_token_details"]["audio_tokens"] > 0
    await ep.close()


async def test_text_only_response_and_tool_call():
    ep = endpoint()
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    await c.until("response.done")
    assert "".join(d["delta"] for d in c.of("response.output_text.delta")) == "You said: hi."
    await c.send({"type": "response.create", "response": {
        "output_modalities": ["text"], "tool_choice": "required",
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]}})
    done = await c.until("response.done")
    call = c.of("response.function_call_arguments.done")[0]
    assert call["name"] == "lookup" and call["arguments"] == '{"value": 1}'
    assert done["response"]["output"][0]["type"] == "function_call"
    await ep.close()


async def test_second_response_create_gets_the_openai_error():
    ep = endpoint(llm=FakeLlm(reply="word " * 20, delay=0.02))
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    await c.until("response.created")
    await c.send({"type": "response.create", "event_id": "again"})
    err = await c.until("error")
    assert err["error"]["code"] == "conversation_already_has_active_response"
    assert err["error"]["event_id"] == "again"
    await c.until("response.done")
    await ep.close()


async def test_barge_in_cancels_and_drops_queued_audio():
    reply = " ".join(f"Sentence number {i}." for i in range(30))
    ep = endpoint(llm=FakeLlm(reply=reply), tts=FakeTts(ms_per_char=60, delay=0.03),
                  max_queued_audio_ms=100000, max_reply_sentences=0)
    c = Client(ep)
    await c.until("session.created")
    await c.append_audio(tone_pcm24k(500) + silence_pcm24k(300))
    await c.until("response.output_audio.delta")
    await asyncio.sleep(0.2)            # the client stops reading; audio piles up
    assert ep.session.active is not None
    queued = sum(1 for o in ep._out if o.droppable)
    assert queued > 5
    await c.append_audio(tone_pcm24k(200))     # the user talks over it
    rest = await c.drain(0.2)
    t = [e["type"] for e in rest]
    i = t.index("input_audio_buffer.speech_started")
    assert "response.output_audio.delta" not in t[i:]
    delivered = t.count("response.output_audio.delta")
    assert delivered < queued
    done = [e for e in rest if e["type"] == "response.done"][-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    said = done["output"][0]["content"][0]["transcript"]
    assert reply.startswith(said) and len(said) < len(reply) // 2
    await asyncio.sleep(0.05)
    assert not ep._runners                       # the runner was stopped
    await ep.close()


async def test_backpressure_pauses_the_response():
    ep = endpoint(llm=FakeLlm(reply=" ".join(f"w{i}" for i in range(80))),
                  tts=FakeTts(ms_per_char=60), max_queued_audio_ms=500)
    c = Client(ep, sdk_check=False)
    await c.until("session.created")
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}})
    await c.send({"type": "response.create"})
    await asyncio.sleep(0.3)
    assert ep._queued_audio_ms <= 500 + 100
    assert ep._runners, "the response should be waiting for room, not finished"
    done = await c.until("response.done", timeout=20)
    assert done["response"]["status"] == "completed"
    await ep.close()


async def test_response_cancel_through_the_endpoint():
    ep = endpoint(llm=FakeLlm(reply="slow " * 50, delay=0.02))
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "response.cancel"})
    assert (await c.until("error"))["error"]["code"] == "response_cancel_not_active"
    await c.send({"type": "response.create"})
    await c.until("response.created")
    await asyncio.sleep(0.1)
    await c.send({"type": "response.cancel"})
    done = await c.until("response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    await asyncio.sleep(0.1)
    assert not ep._runners
    await ep.close()


async def test_failures_become_failed_responses_and_transcription_failed():
    ep = endpoint(llm=FakeLlm(fail=True), stt=FakeStt(fail=True))
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"transcription": {"model": "x"}, "turn_detection": None}}}})
    await c.send({"type": "input_audio_buffer.append",
                  "audio": base64.b64encode(tone_pcm24k(300)).decode()})
    await c.send({"type": "input_audio_buffer.commit"})
    await c.until("conversation.item.input_audio_transcription.failed")
    await c.send({"type": "response.create"})
    done = await c.until("response.done")
    assert done["response"]["status"] == "failed"
    await ep.close()


async def test_bad_frames_get_openai_errors():
    ep = endpoint()
    c = Client(ep)
    await c.until("session.created")
    await ep.send(Event("{not json"))
    assert (await c.until("error"))["error"]["code"] == "invalid_json"
    await ep.send(Event('{"event_id": "x"}'))
    assert (await c.until("error"))["error"]["code"] == "invalid_event"
    binary = Event()
    binary.invalid = "binary"
    await ep.send(binary)
    assert (await c.until("error"))["error"]["code"] == "invalid_event"
    await ep.close()


async def test_close_ends_recv_and_refuses_send():
    ep = endpoint(llm=FakeLlm(reply="x " * 100, delay=0.01))
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "response.create"})
    await c.until("response.created")
    await ep.close(1000, "bye")
    while (ev := await asyncio.wait_for(ep.recv(), 1)) is not None:
        pass
    assert ep.close_code == 1000
    assert not ep._runners
    with pytest.raises(ConnectionError):
        await ep.send(Event.from_data({"type": "response.create"}))


async def test_local_provider_serves_its_model_only():
    prov = LocalProvider(EngineConfig(**FAKE))
    assert prov.dialect == "ga"
    ep = await prov.connect(ConnectRequest(model="openopen8-local", session_id="sess_x"))
    c = Client(ep)
    created = await c.until("session.created")
    assert created["session"]["id"] == "sess_x"
    await ep.close()
    with pytest.raises(UpstreamError) as err:
        await prov.connect(ConnectRequest(model="gpt-realtime", session_id="s"))
    assert err.value.kind == "rejected"


async def test_missing_dependency_names_the_extra(monkeypatch):
    import openopen8.engine.backends.assets as assets
    from openopen8.engine.backends.base import MissingDependency

    def missing(module, pip_name, backend):
        raise MissingDependency(pip_name, backend)
    monkeypatch.setattr(assets, "package_dir", missing)
    from openopen8.engine.backends.vad import SileroVad
    b = Backends(vad=SileroVad("/tmp/none"), stt=FakeStt(), llm=FakeLlm(), tts=FakeTts())
    prov = LocalProvider(EngineConfig(**FAKE), engine=LocalEngine(EngineConfig(**FAKE), b))
    with pytest.raises(UpstreamError) as err:
        await prov.connect(ConnectRequest(model="openopen8-local", session_id="s"))
    assert err.value.kind == "unavailable"
    assert "faster-whisper" in err.value.detail and "openopen8[local]" in err.value.detail


async def test_speculative_transcription_is_reused_or_dropped():
    stt = FakeStt(text_for=lambda pcm: f"{pcm.size} samples")
    ep = endpoint(stt=stt, silence_duration_ms=300, speculative_stt_ms=100)
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"transcription": {"model": "x"}}}}})
    await c.until("session.updated")
    # one clean turn: transcribed once, at the pause, before the turn ended
    await c.append_audio(tone_pcm24k(600) + silence_pcm24k(500))
    done = await c.until("conversation.item.input_audio_transcription.completed")
    assert len(stt.calls) == 1
    assert 16 * 700 <= int(done["transcript"].split()[0]) <= 16 * 1000
    await c.until("response.done")
    # a pause, then more speech: the first guess is dropped, the words after
    # the pause are in the transcript
    await c.append_audio(tone_pcm24k(500) + silence_pcm24k(150) + tone_pcm24k(400)
                         + silence_pcm24k(500))
    done = await c.until("conversation.item.input_audio_transcription.completed")
    assert len(stt.calls) == 3
    assert int(done["transcript"].split()[0]) >= 16 * 1150
    await ep.close()


class BrokenTts(FakeTts):
    async def synthesize(self, text, voice=None):
        raise RuntimeError("tts exploded")


async def test_tts_failure_fails_the_response_without_hanging():
    ep = endpoint(llm=FakeLlm(reply=" ".join(f"Sentence {i}." for i in range(40))),
                  tts=BrokenTts())
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}})
    await c.send({"type": "response.create"})
    done = await c.until("response.done", timeout=5)
    assert done["response"]["status"] == "failed"
    assert "tts exploded" in done["response"]["status_details"]["error"]["message"]
    await ep.close()


async def test_response_work_starts_at_the_pause_and_is_adopted():
    llm = FakeLlm()
    ep = endpoint(llm=llm, silence_duration_ms=300, speculative_stt_ms=100)
    c = Client(ep)
    await c.until("session.created")
    talk = asyncio.ensure_future(
        c.append_audio(tone_pcm24k(600) + silence_pcm24k(600), realtime=True))
    done = await c.until("response.done", timeout=5)
    await talk
    assert len(llm.requests) == 1          # the speculative run was the response
    assert llm.requests[0].messages[-1] == {"role": "user", "content": "what time is it"}
    assert done["response"]["status"] == "completed"
    said = c.of("response.output_audio_transcript.done")[0]["transcript"]
    assert said == "You said: what time is it."
    # the conversation changed after the pause: the guess is not used
    llm.requests.clear()
    talk = asyncio.ensure_future(
        c.append_audio(tone_pcm24k(600) + silence_pcm24k(150), realtime=True))
    await talk
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "system", "content": [{"type": "input_text",
                                                           "text": "new fact"}]}})
    await c.append_audio(silence_pcm24k(500), realtime=True)
    await c.until("response.done", timeout=5)
    assert len(llm.requests) == 2
    assert llm.requests[1].messages[-2]["content"] == "new fact"
    await ep.close()


async def _semantic_turn(text: str) -> int:
    """A 600 ms utterance heard as ``text`` under semantic_vad: how long after
    the speech the turn ended (on the audio timeline)."""
    ep = endpoint(stt=FakeStt(text=text))
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "auto"}}}}})
    await c.until("session.updated")
    await c.append_audio(tone_pcm24k(600) + silence_pcm24k(1400), realtime=True)
    stopped = await c.until("input_audio_buffer.speech_stopped", timeout=5)
    await c.until("response.done", timeout=5)
    await ep.close()
    assert len(c.of("input_audio_buffer.speech_stopped")) == 1
    return stopped["audio_end_ms"] - 600


async def test_semantic_vad_ends_a_complete_turn_early_and_waits_on_an_unfinished_one():
    # FakeLlm cannot judge: a question mark counts as complete, no
    # an open last word as unfinished (SEMANTIC["auto"]: 150 / 900 / 1200 ms)
    assert await _semantic_turn("what time is it?") < 700
    assert await _semantic_turn("what time is the") >= 1200
    # a lone opening word waits like a sentence that may go on (900 ms)
    assert 900 <= await _semantic_turn("Hello?") < 1200
    assert await _semantic_turn("Yes?") < 700


async def test_a_clipped_reply_ends_at_a_sentence():
    reply = "The capital is Paris. It is a big city with many old streets."
    for modality in ("audio", "text"):
        ep = endpoint(llm=FakeLlm(reply=reply))
        c = Client(ep)
        await c.until("session.created")
        await c.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text",
                                                             "text": "Paris?"}]}})
        await c.send({"type": "response.create", "response": {
            "output_modalities": [modality], "max_output_tokens": 9}})
        r = (await c.until("response.done"))["response"]
        assert r["status"] == "incomplete"
        part = r["output"][0]["content"][0]
        assert (part.get("transcript") or part.get("text")) == "The capital is Paris."
        await ep.close()


async def test_a_spoken_reply_stops_after_three_sentences_and_completes():
    llm = FakeLlm(reply="One. Two. Three. Four. Five.")
    ep = endpoint(llm=llm)
    c = Client(ep)
    await c.until("session.created")
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go."}]}})
    await c.send({"type": "response.create"})
    r = (await c.until("response.done"))["response"]
    assert r["status"] == "completed"
    assert r["output"][0]["content"][0]["transcript"] == "One. Two. Three."
    await ep.close()
