"""A full beta voice turn through the chain to a GA upstream.

Client side: what a beta client sends (protocol.md §2.1, the seed document)
must reach the upstream as events the official SDK's *GA* types accept, with
no key they do not declare (OpenAI GA rejects unknown parameters).  Server
side: the GA sequence of protocol.md §7 must reach the client as events the
SDK's *beta* types accept, again with no undeclared key, and with exactly the
beta sequence.
"""

from __future__ import annotations

import base64
import copy

import numpy as np
import pytest
from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeClientEventParam as GAClientEventParam
from openai.types.realtime import RealtimeServerEvent as GAServerEvent

from openopen8.relay.stage import Chain
from openopen8.stages.audio import AudioStage
from openopen8.stages.dialect import DialectStage

from .helpers import client_to_upstream, make_session, strict, upstream_to_client, validate_model


def pcm(ms: int, rate: int = 24000) -> str:
    t = np.arange(rate * ms // 1000) / rate
    return base64.b64encode((np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes()).decode()


TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}

BETA_CLIENT_TURN = [
    {"type": "session.update", "event_id": "evt_1", "session": {
        "modalities": ["text", "audio"], "instructions": "You are terse.", "voice": "alloy",
        "input_audio_format": "pcm16", "output_audio_format": "pcm16",
        "input_audio_transcription": {"model": "whisper-1"},
        "input_audio_noise_reduction": {"type": "near_field"},
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                           "silence_duration_ms": 500, "create_response": True,
                           "interrupt_response": True},
        "tools": [TOOL], "tool_choice": "auto", "temperature": 0.8,
        "max_response_output_tokens": "inf", "speed": 1.1}},
    {"type": "input_audio_buffer.append", "audio": pcm(100)},
    {"type": "input_audio_buffer.append", "audio": pcm(100)},
    {"type": "input_audio_buffer.commit"},
    {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}},
    {"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}},
    {"type": "response.create", "response": {
        "modalities": ["text", "audio"], "instructions": "Answer.", "voice": "alloy",
        "output_audio_format": "pcm16", "temperature": 0.7, "max_response_output_tokens": 300,
        "tools": [TOOL], "tool_choice": "auto"}},
    {"type": "conversation.item.truncate", "item_id": "item_A", "content_index": 0,
     "audio_end_ms": 150},
    {"type": "response.cancel"},
    {"type": "conversation.item.retrieve", "item_id": "item_U"},
    {"type": "conversation.item.delete", "item_id": "item_U"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "{\"temp\": 21}"}},
]


#: fields the frozen beta SDK types do not declare: beta wire session fields
#: (protocol.md §3.2) and GA additions to unchanged events that pass through
#: (``function_call_arguments.done.name``, in the spec since 2026-02)
BETA_WIRE_EXTRAS = frozenset({"object", "expires_at", "prompt", "truncation", "include", "name"})


def _chain():
    return Chain([DialectStage("client"), AudioStage(), DialectStage("upstream")])


def test_beta_client_events_reach_ga_upstream_as_valid_ga():
    s = make_session(facts={"dialect_source": "header"}, client_dialect="beta")
    # the beta fixture itself is valid beta
    for d in BETA_CLIENT_TURN:
        validate_model(d, BetaClientEvent)
    up, replies = client_to_upstream(_chain(), s, copy.deepcopy(BETA_CLIENT_TURN))
    assert [e["type"] for e in up] == [e["type"] for e in BETA_CLIENT_TURN]
    for e in up:
        strict(e, GAClientEventParam)          # no key GA does not know
    sess = up[0]["session"]
    assert sess["type"] == "realtime"
    assert sess["output_modalities"] == ["audio"]
    assert sess["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert sess["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000},
                                       "voice": "alloy", "speed": 1.1}
    assert sess["max_output_tokens"] == "inf"
    assert up[5]["item"]["content"] == [{"type": "output_text", "text": "Hello!"}]
    assert up[6]["response"]["max_output_tokens"] == 300
    # the same PCM16 24 kHz audio: not even re-serialised
    assert up[1]["audio"] == BETA_CLIENT_TURN[1]["audio"]
    # one warning per dropped field
    assert [r["error"]["param"] for r in replies] == ["session.temperature", "response.temperature"]
    for r in replies:
        validate_model(r, BetaServerEvent)


def _c(**kw):
    return {"response_id": "resp_1", "item_id": "item_A", "output_index": 0, "content_index": 0,
            **kw}


USER = {"id": "item_U", "type": "message", "role": "user", "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}]}
A_START = {"id": "item_A", "type": "message", "role": "assistant", "status": "in_progress",
           "content": []}
A_DONE = {"id": "item_A", "type": "message", "role": "assistant", "status": "completed",
          "content": [{"type": "output_audio", "transcript": "Sunny."}]}
GA_SESSION = {"type": "realtime", "object": "realtime.session", "id": "sess_1",
              "model": "gpt-realtime", "expires_at": 1760000000, "output_modalities": ["audio"],
              "instructions": "You are terse.",
              "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                  "transcription": {"model": "whisper-1"},
                                  "noise_reduction": {"type": "near_field"},
                                  "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                                     "prefix_padding_ms": 300,
                                                     "silence_duration_ms": 500,
                                                     "create_response": True,
                                                     "interrupt_response": True}},
                        "output": {"format": {"type": "audio/pcm", "rate": 24000},
                                   "voice": "alloy", "speed": 1.1}},
              "tools": [TOOL], "tool_choice": "auto", "max_output_tokens": "inf",
              "tracing": None, "truncation": "auto", "prompt": None}
USAGE = {"total_tokens": 320, "input_tokens": 132, "output_tokens": 188,
         "input_token_details": {"text_tokens": 59, "audio_tokens": 73, "cached_tokens": 64},
         "output_token_details": {"text_tokens": 41, "audio_tokens": 147}}
RESP = {"object": "realtime.response", "id": "resp_1", "status": "in_progress",
        "status_details": None, "output": [], "conversation_id": "conv_1",
        "output_modalities": ["audio"], "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}},
        "usage": None, "metadata": None}

#: protocol.md §7, GA column, with a function call added
GA_SERVER_TURN = [
    {"type": "session.created", "event_id": "e01", "session": GA_SESSION},
    {"type": "session.updated", "event_id": "e02", "session": GA_SESSION},
    {"type": "input_audio_buffer.speech_started", "event_id": "e03", "audio_start_ms": 20,
     "item_id": "item_U"},
    {"type": "input_audio_buffer.speech_stopped", "event_id": "e04", "audio_end_ms": 180,
     "item_id": "item_U"},
    {"type": "input_audio_buffer.committed", "event_id": "e05", "previous_item_id": None,
     "item_id": "item_U"},
    {"type": "conversation.item.added", "event_id": "e06", "previous_item_id": None, "item": USER},
    {"type": "conversation.item.done", "event_id": "e07", "previous_item_id": None, "item": USER},
    {"type": "response.created", "event_id": "e08", "response": RESP},
    {"type": "response.output_item.added", "event_id": "e09", "response_id": "resp_1",
     "output_index": 0, "item": A_START},
    {"type": "conversation.item.added", "event_id": "e10", "previous_item_id": "item_U",
     "item": A_START},
    {"type": "response.content_part.added", "event_id": "e11",
     **_c(part={"type": "audio", "transcript": ""})},
    {"type": "response.output_audio_transcript.delta", "event_id": "e12", **_c(delta="Sun")},
    {"type": "response.output_audio.delta", "event_id": "e13", **_c(delta=pcm(40))},
    {"type": "response.output_audio.delta", "event_id": "e14", **_c(delta=pcm(40))},
    {"type": "response.output_audio_transcript.delta", "event_id": "e15", **_c(delta="ny.")},
    {"type": "response.output_audio.done", "event_id": "e16", **_c()},
    {"type": "response.output_audio_transcript.done", "event_id": "e17",
     **_c(transcript="Sunny.")},
    {"type": "response.content_part.done", "event_id": "e18",
     **_c(part={"type": "audio", "transcript": "Sunny."})},
    {"type": "conversation.item.done", "event_id": "e19", "previous_item_id": "item_U",
     "item": A_DONE},
    {"type": "response.output_item.done", "event_id": "e20", "response_id": "resp_1",
     "output_index": 0, "item": A_DONE},
    {"type": "response.output_item.added", "event_id": "e21", "response_id": "resp_1",
     "output_index": 1, "item": {"id": "item_F", "type": "function_call",
                                 "status": "in_progress", "name": "get_weather",
                                 "call_id": "call_1", "arguments": ""}},
    {"type": "conversation.item.added", "event_id": "e22", "previous_item_id": "item_A",
     "item": {"id": "item_F", "type": "function_call", "status": "in_progress",
              "name": "get_weather", "call_id": "call_1", "arguments": ""}},
    {"type": "response.function_call_arguments.delta", "event_id": "e23",
     "response_id": "resp_1", "item_id": "item_F", "output_index": 1, "call_id": "call_1",
     "delta": "{\"city\":\"Oslo\"}"},
    {"type": "response.function_call_arguments.done", "event_id": "e24",
     "response_id": "resp_1", "item_id": "item_F", "output_index": 1, "call_id": "call_1",
     "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
    {"type": "conversation.item.done", "event_id": "e25", "previous_item_id": "item_A",
     "item": {"id": "item_F", "type": "function_call", "status": "completed",
              "name": "get_weather", "call_id": "call_1", "arguments": "{\"city\":\"Oslo\"}"}},
    {"type": "response.output_item.done", "event_id": "e26", "response_id": "resp_1",
     "output_index": 1, "item": {"id": "item_F", "type": "function_call", "status": "completed",
                                 "name": "get_weather", "call_id": "call_1",
                                 "arguments": "{\"city\":\"Oslo\"}"}},
    {"type": "response.done", "event_id": "e27",
     "response": dict(RESP, status="completed", usage=USAGE, output=[
         A_DONE, {"id": "item_F", "type": "function_call", "status": "completed",
                  "name": "get_weather", "call_id": "call_1",
                  "arguments": "{\"city\":\"Oslo\"}"}])},
    {"type": "rate_limits.updated", "event_id": "e28",
     "rate_limits": [{"name": "tokens", "limit": 15000000, "remaining": 14999716,
                      "reset_seconds": 0.001}]},
    {"type": "conversation.item.input_audio_transcription.delta", "event_id": "e29",
     "item_id": "item_U", "content_index": 0, "delta": "Weather"},
    {"type": "conversation.item.input_audio_transcription.completed", "event_id": "e30",
     "item_id": "item_U", "content_index": 0, "transcript": "Weather in Oslo?",
     "usage": {"type": "duration", "seconds": 1.2}},
    {"type": "response.output_text.delta", "event_id": "e31", **_c(delta="x")},
    {"type": "response.output_text.done", "event_id": "e32", **_c(text="x")},
]

BETA_EXPECTED_TYPES = [
    "session.created", "session.updated",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.created",                          # user item, once
    "response.created", "response.output_item.added",
    "conversation.item.created",                          # assistant item, at its start
    "response.content_part.added",
    "response.audio_transcript.delta", "response.audio.delta", "response.audio.delta",
    "response.audio_transcript.delta", "response.audio.done", "response.audio_transcript.done",
    "response.content_part.done", "response.output_item.done",
    "response.output_item.added", "conversation.item.created",   # function call item
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.output_item.done", "response.done", "rate_limits.updated",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "response.text.delta", "response.text.done",
]


def test_ga_server_turn_reaches_beta_client_as_valid_beta():
    for d in GA_SERVER_TURN:                    # the fixture is valid GA
        validate_model(d, GAServerEvent)
    s = make_session(facts={"dialect_source": "header"}, client_dialect="beta")
    out = upstream_to_client(_chain(), s, copy.deepcopy(GA_SERVER_TURN))
    assert [e["type"] for e in out] == BETA_EXPECTED_TYPES
    for e in out:
        validate_model(e, BetaServerEvent)
        strict(e, BetaServerEvent, allow=BETA_WIRE_EXTRAS)  # no GA-only key leaks
    sess = out[0]["session"]
    assert sess["modalities"] == ["audio", "text"] and sess["voice"] == "alloy"
    assert sess["input_audio_format"] == "pcm16" and sess["output_audio_format"] == "pcm16"
    assert sess["turn_detection"]["silence_duration_ms"] == 500
    assert sess["max_response_output_tokens"] == "inf"
    done = out[BETA_EXPECTED_TYPES.index("response.done")]["response"]
    assert done["modalities"] == ["audio", "text"] and done["output_audio_format"] == "pcm16"
    assert done["output"][0]["content"] == [{"type": "audio", "transcript": "Sunny."}]
    assert done["usage"] == USAGE
    # audio deltas pass through byte for byte (formats match: no conversion)
    deltas = [e["delta"] for e in out if e["type"] == "response.audio.delta"]
    assert deltas == [pcm(40), pcm(40)]


def test_ga_client_turn_is_untouched_through_the_same_chain():
    """A GA client through the full chain: every event reaches the upstream
    exactly as sent."""
    s = make_session(facts={"dialect_source": "default"})
    ga_events = [
        {"type": "session.update", "session": GA_SESSION | {"object": None} and {
            "type": "realtime", "output_modalities": ["audio"],
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}},
        {"type": "input_audio_buffer.append", "audio": pcm(50)},
        {"type": "input_audio_buffer.commit"},
        {"type": "response.create", "response": {"output_modalities": ["audio"]}},
    ]
    up, replies = client_to_upstream(_chain(), s, copy.deepcopy(ga_events))
    assert up == ga_events and replies == []
    out = upstream_to_client(_chain(), s, copy.deepcopy(GA_SERVER_TURN))
    assert out == GA_SERVER_TURN


@pytest.mark.parametrize("d", BETA_CLIENT_TURN[:1])
def test_beta_update_would_be_rejected_by_ga_untranslated(d):
    """The check has teeth: the raw beta update is not valid GA."""
    with pytest.raises(AssertionError):
        strict(d, GAClientEventParam)


# ------------------------------------------------- a beta (Azure preview) upstream
def test_beta_client_through_to_a_beta_upstream_round_trips():
    """beta client -> GA inside -> beta upstream: the upstream gets valid beta."""
    s = make_session(facts={"dialect_source": "header"}, client_dialect="beta",
                     upstream_dialect="beta")
    up, _ = client_to_upstream(_chain(), s, copy.deepcopy(BETA_CLIENT_TURN))
    for e in up:
        strict(e, BetaClientEvent)
    sess = up[0]["session"]
    assert sess["modalities"] == ["audio", "text"] and sess["voice"] == "alloy"
    assert sess["input_audio_format"] == "pcm16" and sess["turn_detection"]["type"] == "server_vad"
    assert "temperature" not in sess and "type" not in sess


def test_ga_client_to_a_beta_upstream_and_its_events_back_in_ga_order():
    s = make_session(facts={"dialect_source": "default"}, upstream_dialect="beta")
    beta_turn = upstream_to_client(
        _chain(), make_session(facts={"dialect_source": "header"}, client_dialect="beta"),
        copy.deepcopy(GA_SERVER_TURN))            # the beta sequence, as a beta upstream sends it
    out = upstream_to_client(_chain(), s, beta_turn)
    assert [e["type"] for e in out] == [e["type"] for e in GA_SERVER_TURN]
    for e in out:
        validate_model(e, GAServerEvent)
        # the GA SDK types session.created's session as the *request* model,
        # which lacks the server-set id/object/expires_at the live server sends
        strict(e, GAServerEvent, allow=frozenset({"id", "object", "expires_at"}))
    done = out[[e["type"] for e in out].index("response.done")]["response"]
    assert done["output_modalities"] == ["audio"]
    assert done["output"][0]["content"][0]["type"] == "output_audio"
