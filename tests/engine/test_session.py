"""The protocol state machine alone: client events in, server events out.

No models, no sockets: responses are driven by calling the ``resp_*`` hooks
a runner would call.  Every server event is validated against the official
SDK's ``RealtimeServerEvent``.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from openopen8.engine.backends.base import LlmStats
from openopen8.engine.config import DEFAULT_INSTRUCTIONS, VOICE_EXAMPLES, EngineConfig
from openopen8.engine.session import (CancelResponse, DetectSpeech, EngineSession, ResetVad,
                                      StartResponse, Transcribe)

from .helpers import check_sdk, silence_pcm24k, tone_pcm24k


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(**cfg) -> tuple[EngineSession, Clock]:
    clock = Clock()
    cfg.setdefault("voice_examples", False)     # tests of the history see only its items
    s = EngineSession(EngineConfig(vad="fake", stt="fake", llm="fake", tts="fake", **cfg),
                      "sess_test", "openopen8-local", lambda t: len(t.split()), clock)
    return s, clock


def drain(s: EngineSession) -> list[dict]:
    out = [o.event for o in s.out]
    s.out.clear()
    for e in out:
        check_sdk(e)
    return out


def effects(s: EngineSession) -> list:
    e, s.effects = s.effects, []
    return e


def types(evs: list[dict]) -> list[str]:
    return [e["type"] for e in evs]


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def error_of(evs: list[dict]) -> dict:
    errs = [e for e in evs if e["type"] == "error"]
    assert len(errs) == 1, types(evs)
    return errs[0]["error"]


def manual(s: EngineSession) -> None:
    s.client_event({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
    drain(s)
    effects(s)


def user_text(s: EngineSession, text: str) -> str:
    s.client_event({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    evs = drain(s)
    return evs[0]["item"]["id"]


def start(s: EngineSession, response: dict | None = None):
    s.client_event({"type": "response.create", **({"response": response} if response else {})})
    evs = drain(s)
    eff = [e for e in effects(s) if isinstance(e, StartResponse)]
    assert types(evs) == ["response.created"], types(evs)
    assert len(eff) == 1
    return eff[0].resp, evs[0]


# ------------------------------------------------------------------ session

def test_session_created_announces_ga_defaults():
    s, _ = make()
    [ev] = drain(s)
    assert ev["type"] == "session.created"
    sess = ev["session"]
    assert sess["type"] == "realtime" and sess["model"] == "openopen8-local"
    assert sess["output_modalities"] == ["audio"]
    assert sess["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert sess["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert any(isinstance(e, ResetVad) for e in effects(s))


def test_session_update_applies_known_fields_and_ignores_unknown():
    s, _ = make()
    drain(s)
    s.client_event({"type": "session.update", "session": {
        "type": "realtime", "instructions": "Be brief.", "output_modalities": ["text"],
        "tools": [{"type": "function", "name": "get_time", "parameters": {"type": "object"}}],
        "tool_choice": "required", "max_output_tokens": 50, "some_future_field": 1,
        "audio": {"input": {"format": {"type": "audio/pcmu"},
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "threshold": 0.7,
                                               "silence_duration_ms": 300,
                                               "create_response": False}},
                  "output": {"format": {"type": "audio/pcma"}, "voice": "marin"}}}})
    [ev] = drain(s)
    assert ev["type"] == "session.updated"
    sess = ev["session"]
    assert sess["instructions"] == "Be brief."
    assert sess["output_modalities"] == ["text"]
    assert sess["tools"][0]["name"] == "get_time" and sess["tool_choice"] == "required"
    assert sess["max_output_tokens"] == 50
    assert "some_future_field" not in sess
    td = sess["audio"]["input"]["turn_detection"]
    assert td["threshold"] == 0.7 and td["silence_duration_ms"] == 300
    assert td["create_response"] is False and td["prefix_padding_ms"] == 300
    assert sess["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert sess["audio"]["output"] == {"format": {"type": "audio/pcma"}, "voice": "marin",
                                       "speed": 1.0}
    assert s.turns.threshold == 0.7 and s.turns.silence_duration_ms == 300


@pytest.mark.parametrize("session,code,param", [
    ({"instructions": "x"}, "missing_required_parameter", "session.type"),
    ({"type": "transcription"}, "invalid_value", "session.type"),
    ({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
     "integer_below_min_value", "session.audio.input.format.rate"),
    ({"type": "realtime", "output_modalities": ["audio", "text"]}, "invalid_value",
     "session.output_modalities"),
    ({"type": "realtime", "tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
    ({"type": "realtime", "max_output_tokens": 0}, "invalid_value",
     "session.max_output_tokens"),
])
def test_session_update_errors_discard_the_whole_update(session, code, param):
    s, _ = make()
    drain(s)
    before = s.session
    s.client_event({"type": "session.update", "event_id": "client_1",
                    "session": {**session, "instructions": "changed?"}})
    err = error_of(drain(s))
    assert err["code"] == code and err["param"] == param
    assert err["event_id"] == "client_1"
    assert s.session is before and s.session["instructions"] != "changed?"


def test_unknown_client_event_is_invalid_value():
    s, _ = make()
    drain(s)
    s.client_event({"type": "session.bogus", "event_id": "e1"})
    err = error_of(drain(s))
    assert err["code"] == "invalid_value" and err["param"] == "type"
    assert "response.create" in err["message"]


# ------------------------------------------------------------ input buffer

def test_append_errors():
    s, _ = make()
    drain(s)
    s.client_event({"type": "input_audio_buffer.append"})
    assert error_of(drain(s))["code"] == "missing_required_parameter"
    s.client_event({"type": "input_audio_buffer.append", "audio": "not base64!!"})
    assert error_of(drain(s))["code"] == "invalid_value"


def test_commit_needs_100ms():
    s, _ = make()
    manual(s)
    s.client_event({"type": "input_audio_buffer.commit"})
    err = error_of(drain(s))
    assert err["code"] == "input_audio_buffer_commit_empty"
    assert "0.00ms" in err["message"]
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(silence_pcm24k(60))})
    s.client_event({"type": "input_audio_buffer.commit"})
    assert error_of(drain(s))["code"] == "input_audio_buffer_commit_empty"


def test_commit_creates_user_audio_item_and_asks_for_transcription():
    s, _ = make()
    manual(s)
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(tone_pcm24k(300))})
    assert drain(s) == []
    assert not any(isinstance(e, DetectSpeech) for e in effects(s))   # VAD off
    s.client_event({"type": "input_audio_buffer.commit"})
    evs = drain(s)
    assert types(evs) == ["input_audio_buffer.committed", "conversation.item.added",
                          "conversation.item.done"]
    item_id = evs[0]["item_id"]
    assert evs[0]["previous_item_id"] is None
    assert evs[1]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    [tr] = [e for e in effects(s) if isinstance(e, Transcribe)]
    assert tr.item.id == item_id
    assert abs(tr.item.pcm16k.size - 16 * 300) < 160          # 16 kHz, ~300 ms
    assert tr.item.audio_ms == pytest.approx(300)
    # the buffer is empty again
    s.client_event({"type": "input_audio_buffer.commit"})
    assert error_of(drain(s))["code"] == "input_audio_buffer_commit_empty"


def test_clear_empties_the_buffer():
    s, _ = make()
    manual(s)
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(tone_pcm24k(300))})
    s.client_event({"type": "input_audio_buffer.clear"})
    assert types(drain(s)) == ["input_audio_buffer.cleared"]
    s.client_event({"type": "input_audio_buffer.commit"})
    assert error_of(drain(s))["code"] == "input_audio_buffer_commit_empty"


def test_transcription_events_only_when_enabled():
    s, _ = make()
    manual(s)
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(tone_pcm24k(200))})
    s.client_event({"type": "input_audio_buffer.commit"})
    drain(s)
    [tr] = [e for e in effects(s) if isinstance(e, Transcribe)]
    s.transcribed(tr.item, "hello there", 0.2)
    assert drain(s) == []
    assert tr.item.stt_text == "hello there"          # the LLM still hears it
    s.client_event({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}})
    drain(s)
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(tone_pcm24k(200))})
    s.client_event({"type": "input_audio_buffer.commit"})
    drain(s)
    [tr] = [e for e in effects(s) if isinstance(e, Transcribe)]
    s.transcribed(tr.item, "second", 0.2)
    evs = drain(s)
    assert types(evs) == ["conversation.item.input_audio_transcription.delta",
                          "conversation.item.input_audio_transcription.completed"]
    assert evs[1]["transcript"] == "second" and evs[1]["item_id"] == tr.item.id
    assert evs[1]["usage"] == {"type": "duration", "seconds": 0.2}
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(tone_pcm24k(200))})
    s.client_event({"type": "input_audio_buffer.commit"})
    drain(s)
    [tr] = [e for e in effects(s) if isinstance(e, Transcribe)]
    s.transcription_failed(tr.item, "boom")
    assert types(drain(s)) == ["conversation.item.input_audio_transcription.failed"]


# ------------------------------------------------------------ server VAD

def test_server_vad_turn_commits_and_creates_a_response():
    s, clock = make(prefix_padding_ms=300, silence_duration_ms=200)
    drain(s)
    effects(s)
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(silence_pcm24k(1000))})
    assert any(isinstance(e, DetectSpeech) for e in effects(s))
    s.speech_probabilities([0.0] * 50, 20)          # 1 s of silence
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(tone_pcm24k(600))})
    effects(s)
    s.speech_probabilities([1.0] * 30, 20)          # 600 ms of speech
    evs = drain(s)
    assert types(evs) == ["input_audio_buffer.speech_started"]
    assert evs[0]["audio_start_ms"] == 700          # 1000 - 300 ms padding
    item_id = evs[0]["item_id"]
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(silence_pcm24k(300))})
    effects(s)
    s.speech_probabilities([0.0] * 15, 20)
    evs = drain(s)
    assert types(evs) == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                          "conversation.item.added", "conversation.item.done",
                          "response.created"]
    assert evs[0]["audio_end_ms"] == 1800 and evs[0]["item_id"] == item_id
    assert evs[1]["item_id"] == item_id
    eff = effects(s)
    [tr] = [e for e in eff if isinstance(e, Transcribe)]
    assert tr.item.audio_ms == pytest.approx(1100)   # 700..1800
    assert any(isinstance(e, StartResponse) for e in eff)
    assert s.active is not None


def test_server_vad_without_create_response():
    s, _ = make()
    s.client_event({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "create_response": False}}}}})
    drain(s)
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(tone_pcm24k(1500))})
    s.speech_probabilities([1.0] * 20 + [0.0] * 40, 20)
    assert "response.created" not in types(drain(s))


# ------------------------------------------------------------ items

def test_item_create_order_root_and_previous_item():
    s, _ = make()
    drain(s)
    a = user_text(s, "first")
    s.client_event({"type": "conversation.item.create", "previous_item_id": "root",
                    "item": {"type": "message", "role": "system",
                             "content": [{"type": "input_text", "text": "sys"}]}})
    evs = drain(s)
    assert types(evs) == ["conversation.item.added", "conversation.item.done"]
    assert evs[0]["previous_item_id"] is None
    root = evs[0]["item"]["id"]
    s.client_event({"type": "conversation.item.create", "previous_item_id": root,
                    "item": {"id": "item_mine", "type": "message", "role": "assistant",
                             "content": [{"type": "output_text", "text": "hi"}]}})
    evs = drain(s)
    assert evs[0]["previous_item_id"] == root and evs[0]["item"]["id"] == "item_mine"
    assert [i.id for i in s.conv.items()] == [root, "item_mine", a]
    s.client_event({"type": "conversation.item.create", "previous_item_id": "nope",
                    "item": {"type": "message", "role": "user",
                             "content": [{"type": "input_text", "text": "x"}]}})
    err = error_of(drain(s))
    assert err["code"] == "invalid_value" and err["param"] == "previous_item_id"
    s.client_event({"type": "conversation.item.create", "item": {
        "type": "message", "role": "robot", "content": [{"type": "input_text", "text": "x"}]}})
    assert error_of(drain(s))["param"] == "item.role"


def test_item_create_with_audio_and_function_output():
    s, _ = make()
    drain(s)
    s.client_event({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_audio", "audio": b64(tone_pcm24k(250))}]}})
    evs = drain(s)
    assert evs[0]["item"]["content"][0]["type"] == "input_audio"
    assert "audio" not in evs[0]["item"]["content"][0]
    [tr] = [e for e in effects(s) if isinstance(e, Transcribe)]
    assert tr.item.audio_ms == pytest.approx(250)
    s.client_event({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "{\"t\": 1}"}})
    evs = drain(s)
    assert evs[1]["item"]["type"] == "function_call_output"
    assert evs[1]["item"]["call_id"] == "call_1"


def test_item_delete_and_retrieve():
    s, _ = make()
    drain(s)
    s.client_event({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_audio", "audio": b64(tone_pcm24k(100))}]}})
    item_id = drain(s)[0]["item"]["id"]
    s.client_event({"type": "conversation.item.retrieve", "item_id": item_id})
    [ev] = drain(s)
    assert ev["type"] == "conversation.item.retrieved"
    assert base64.b64decode(ev["item"]["content"][0]["audio"]) == tone_pcm24k(100)
    s.client_event({"type": "conversation.item.retrieve", "item_id": "item_missing"})
    assert error_of(drain(s))["code"] == "item_retrieve_invalid_item_id"
    s.client_event({"type": "conversation.item.delete", "item_id": item_id})
    [ev] = drain(s)
    assert ev["type"] == "conversation.item.deleted" and ev["item_id"] == item_id
    assert item_id not in s.conv
    s.client_event({"type": "conversation.item.delete", "item_id": item_id})
    assert error_of(drain(s))["code"] == "item_delete_invalid_item_id"


def test_conversation_is_bounded():
    s, _ = make(max_items=5)
    drain(s)
    ids = [user_text(s, f"m{i}") for i in range(8)]
    assert [i.id for i in s.conv.items()] == ids[-5:]


# ------------------------------------------------------------ responses

def test_text_response_events_and_usage():
    s, _ = make()
    drain(s)
    user = user_text(s, "hello world")
    resp, created = start(s, {"output_modalities": ["text"], "metadata": {"k": "v"}})
    r = created["response"]
    assert r["status"] == "in_progress" and r["usage"] is None
    assert r["output_modalities"] == ["text"] and r["metadata"] == {"k": "v"}
    assert r["conversation_id"].startswith("conv_")
    req = s.llm_request(resp)
    assert req.messages[-1] == {"role": "user", "content": "hello world"}
    s.resp_text(resp.id, "Hi")
    s.resp_text(resp.id, " there.")
    s.resp_finish(resp.id, LlmStats(prompt_tokens=12, completion_tokens=3))
    evs = drain(s)
    assert types(evs) == [
        "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "conversation.item.done", "response.output_item.done",
        "response.done"]
    assert evs[1]["previous_item_id"] == user
    assert evs[2]["part"] == {"type": "text", "text": ""}
    assert evs[5]["text"] == "Hi there."
    done = evs[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [{"type": "output_text", "text": "Hi there."}]
    u = done["usage"]
    assert u["input_token_details"]["text_tokens"] == 12
    assert u["output_token_details"] == {"text_tokens": 3, "audio_tokens": 0}
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"] == 15
    assert s.active is None


def test_audio_response_follows_openai_order_and_counts_audio():
    s, clock = make()
    drain(s)
    user_text(s, "hi")
    resp, _ = start(s)
    pcm = bytes(48 * 120)
    s.resp_audio(resp.id, pcm, 120.0, "Hello")
    s.resp_audio(resp.id, pcm, 120.0, " world.")
    s.resp_finish(resp.id, LlmStats(prompt_tokens=5, completion_tokens=2))
    evs = drain(s)
    assert types(evs) == [
        "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_audio_transcript.delta", "response.output_audio.delta",
        "response.output_audio_transcript.delta", "response.output_audio.delta",
        "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "conversation.item.done", "response.output_item.done",
        "response.done"]
    assert evs[2]["part"] == {"type": "audio", "transcript": ""}
    assert evs[8]["transcript"] == "Hello world."
    item = evs[11]["item"]
    assert item["status"] == "completed"
    assert item["content"] == [{"type": "output_audio", "transcript": "Hello world."}]
    usage = evs[-1]["response"]["usage"]
    assert usage["output_token_details"] == {"text_tokens": 2, "audio_tokens": 5}  # 240ms/50


def test_second_response_create_while_active_is_refused():
    s, _ = make()
    drain(s)
    user_text(s, "hi")
    resp, _ = start(s)
    s.client_event({"type": "response.create", "event_id": "evt_2"})
    err = error_of(drain(s))
    assert err["code"] == "conversation_already_has_active_response"
    assert err["event_id"] == "evt_2"
    # an out-of-band response may run beside it
    oob, created = start(s, {"conversation": "none", "output_modalities": ["text"]})
    assert created["response"]["conversation_id"] is None
    s.resp_text(oob.id, "side")
    s.resp_finish(oob.id, LlmStats())
    evs = drain(s)
    assert "conversation.item.added" not in types(evs)
    assert evs[-1]["response"]["status"] == "completed"
    assert len(s.conv) == 1 and s.active is resp


def test_out_of_band_response_with_input_references_and_inline_items():
    s, _ = make()
    drain(s)
    a = user_text(s, "alpha")
    user_text(s, "beta")
    resp, _ = start(s, {"conversation": "none", "output_modalities": ["text"], "input": [
        {"type": "item_reference", "id": a},
        {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                          "text": "gamma"}]}]})
    req = s.llm_request(resp)
    assert [m["content"] for m in req.messages[1:]] == ["alpha", "gamma"]
    s.client_event({"type": "response.create", "response": {
        "conversation": "none", "input": [{"type": "item_reference", "id": "item_x"}]}})
    assert error_of(drain(s))["code"] == "invalid_value"


def test_response_cancel():
    s, _ = make()
    drain(s)
    s.client_event({"type": "response.cancel"})
    assert error_of(drain(s))["code"] == "response_cancel_not_active"
    user_text(s, "hi")
    resp, _ = start(s, {"output_modalities": ["text"]})
    s.resp_text(resp.id, "partial")
    drain(s)
    s.client_event({"type": "response.cancel"})
    evs = drain(s)
    assert types(evs)[-1] == "response.done"
    done = evs[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    assert any(isinstance(e, CancelResponse) and e.resp_id == resp.id for e in effects(s))
    assert s.active is None
    # a late runner callback changes nothing
    s.resp_text(resp.id, "late")
    s.resp_finish(resp.id, LlmStats())
    assert drain(s) == []
    s.client_event({"type": "response.cancel", "response_id": resp.id})
    assert error_of(drain(s))["code"] == "response_cancel_not_active"


def test_default_persona_has_its_examples_and_other_instructions_none():
    s, _ = make(voice_examples=True)
    drain(s)
    user_text(s, "hi")
    resp, _ = start(s)
    msgs = s.llm_request(resp).messages
    assert msgs[0] == {"role": "system", "content": DEFAULT_INSTRUCTIONS}
    assert [m["role"] for m in msgs[1:-1]] == ["user", "assistant"] * len(VOICE_EXAMPLES)
    assert msgs[-1] == {"role": "user", "content": "hi"}
    resp2, _ = start(s, {"conversation": "none", "instructions": "Be a pirate."})
    assert [m["role"] for m in s.llm_request(resp2).messages] == ["system", "user"]


def test_engine_token_cap_completes_but_the_clients_makes_it_incomplete():
    s, _ = make()
    drain(s)
    user_text(s, "hi")
    resp, _ = start(s)                   # max_output_tokens "inf": the engine's own cap
    s.resp_text(resp.id, "One. Two.")
    s.resp_finish(resp.id, LlmStats(completion_tokens=120, finish_reason="length"))
    assert drain(s)[-1]["response"]["status"] == "completed"


def test_max_output_tokens_makes_the_response_incomplete():
    s, _ = make()
    drain(s)
    user_text(s, "hi")
    resp, _ = start(s, {"output_modalities": ["text"], "max_output_tokens": 3})
    assert s.llm_request(resp).max_tokens == 3
    s.resp_text(resp.id, "one two three")
    s.resp_finish(resp.id, LlmStats(completion_tokens=3, finish_reason="length"))
    done = drain(s)[-1]["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}


def test_failed_response():
    s, _ = make()
    drain(s)
    user_text(s, "hi")
    resp, _ = start(s)
    s.resp_finish(resp.id, None, "RuntimeError: backend down")
    done = drain(s)[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["error"]["type"] == "server_error"


def test_function_call_output_item():
    s, _ = make()
    drain(s)
    user_text(s, "what time is it")
    resp, _ = start(s, {"tools": [{"type": "function", "name": "get_time"}],
                        "tool_choice": "required"})
    req = s.llm_request(resp)
    assert req.tools[0]["name"] == "get_time" and req.tool_choice == "required"
    s.resp_tool_call(resp.id, "get_time", '{"tz": "UTC"}')
    s.resp_finish(resp.id, LlmStats(finish_reason="tool_calls"))
    evs = drain(s)
    assert types(evs) == [
        "response.output_item.added", "conversation.item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "conversation.item.done", "response.output_item.done", "response.done"]
    done_args = evs[3]
    assert done_args["name"] == "get_time" and done_args["arguments"] == '{"tz": "UTC"}'
    call_id = done_args["call_id"]
    out_item = evs[-1]["response"]["output"][0]
    assert out_item["type"] == "function_call" and out_item["status"] == "completed"
    # the tool result goes back in, and the next response sees both
    s.client_event({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call_id, "output": "12:00"}})
    drain(s)
    resp2, _ = start(s)
    msgs = s.llm_request(resp2).messages
    assert msgs[-2]["tool_calls"][0]["function"]["name"] == "get_time"
    assert msgs[-1] == {"role": "tool", "tool_call_id": call_id, "content": "12:00"}


# ------------------------------------------------------------ barge-in, truncate

def audio_response(s: EngineSession, clock: Clock, words: list[str], ms_each: float = 200):
    user_text(s, "tell me")
    resp, _ = start(s)
    for i, w in enumerate(words):
        s.resp_audio(resp.id, bytes(int(48 * ms_each)), ms_each, w if i == 0 else " " + w)
    drain(s)
    return resp


def test_barge_in_keeps_only_what_was_spoken():
    s, clock = make()
    drain(s)
    resp = audio_response(s, clock, ["one", "two", "three", "four", "five"])
    # the client got three deltas (600 ms) and has played 450 ms of them
    for _ in range(3):
        s.audio_delivered(resp.id, 200)
    clock.t += 0.45
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(tone_pcm24k(200))})
    s.speech_probabilities([1.0] * 4, 20)
    evs = drain(s)
    assert types(evs) == [
        "input_audio_buffer.speech_started", "response.output_audio.done",
        "response.output_audio_transcript.done", "response.content_part.done",
        "conversation.item.done", "response.output_item.done", "response.done"]
    # VAD needed 80 ms to confirm speech: the user started at 370 ms of playback
    assert evs[2]["transcript"] == "one"
    done = evs[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["status"] == "incomplete"
    assert done["output"][0]["content"][0]["transcript"] == "one"
    assert any(isinstance(e, CancelResponse) for e in effects(s))
    item = s.conv.get(done["output"][0]["id"])
    assert item.audio_ms == 600                 # delivered audio stays for truncate
    assert s.llm_request(start(s)[0]).messages[-1]["content"] == "one"


def test_barge_in_respects_interrupt_response_false():
    s, clock = make()
    s.client_event({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}}}})
    drain(s)
    resp = audio_response(s, clock, ["one", "two"])
    s.speech_probabilities([1.0] * 4, 20)
    assert types(drain(s)) == ["input_audio_buffer.speech_started"]
    assert s.active is resp


def test_truncate_cuts_transcript_at_audio_end_ms():
    s, clock = make()
    drain(s)
    resp = audio_response(s, clock, ["alpha", "beta", "gamma", "delta"])
    s.resp_finish(resp.id, LlmStats())
    item_id = drain(s)[-1]["response"]["output"][0]["id"]
    s.client_event({"type": "conversation.item.truncate", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": 5000})
    err = error_of(drain(s))
    assert err["code"] == "invalid_value" and "shorter than 5000ms" in err["message"]
    s.client_event({"type": "conversation.item.truncate", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": 450})
    [ev] = drain(s)
    assert ev == {**ev, "type": "conversation.item.truncated", "item_id": item_id,
                  "content_index": 0, "audio_end_ms": 450}
    item = s.conv.get(item_id)
    assert item.data["content"][0]["transcript"] == "alpha beta"
    assert item.audio_ms == 450 and len(item.audio) == 450 * 48
    s.client_event({"type": "conversation.item.retrieve", "item_id": item_id})
    got = drain(s)[0]["item"]
    assert got["content"][0]["transcript"] == "alpha beta"
    assert len(base64.b64decode(got["content"][0]["audio"])) == 450 * 48


def test_truncate_errors():
    s, _ = make()
    drain(s)
    text_id = user_text(s, "hello")
    s.client_event({"type": "conversation.item.truncate", "item_id": "item_nope",
                    "content_index": 0, "audio_end_ms": 10})
    assert error_of(drain(s))["code"] == "item_truncate_invalid_item_id"
    s.client_event({"type": "conversation.item.truncate", "item_id": text_id,
                    "content_index": 0, "audio_end_ms": 10})
    assert error_of(drain(s))["code"] == "unsupported_content_type"


def test_truncate_of_a_response_still_running_stops_it_first():
    s, clock = make()
    drain(s)
    resp = audio_response(s, clock, ["a", "b", "c"])
    item_id = resp.msg.id
    for _ in range(3):
        s.audio_delivered(resp.id, 200)
    clock.t += 1.0
    s.client_event({"type": "conversation.item.truncate", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": 200})
    evs = drain(s)
    assert types(evs)[-2:] == ["response.done", "conversation.item.truncated"]
    assert evs[-2]["response"]["status"] == "cancelled"
    assert s.conv.get(item_id).data["content"][0]["transcript"] == "a"


def test_history_budget_keeps_recent_items():
    s, _ = make(history_tokens=12)
    drain(s)
    for i in range(10):
        user_text(s, f"message number {i}")
    resp, _ = start(s)
    msgs = s.llm_request(resp).messages
    assert msgs[0]["role"] == "system"
    assert msgs[-1]["content"] == "message number 9"
    assert len(msgs) < 6


def test_speech_probabilities_are_ignored_without_turn_detection():
    s, _ = make()
    manual(s)
    s.speech_probabilities([1.0] * 50, 20)
    assert drain(s) == []


def test_g711_input_format_is_decoded():
    s, _ = make()
    s.client_event({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}}}})
    drain(s)
    effects(s)
    s.client_event({"type": "input_audio_buffer.append", "audio": b64(b"\xff" * 8 * 200)})
    s.client_event({"type": "input_audio_buffer.commit"})
    evs = drain(s)
    assert types(evs)[0] == "input_audio_buffer.committed"
    [tr] = [e for e in effects(s) if isinstance(e, Transcribe)]
    assert tr.item.audio_ms == pytest.approx(200)
    assert abs(tr.item.pcm16k.size - 3200) < 100
    assert np.abs(tr.item.pcm16k).max() < 50          # 0xff is mu-law silence
