"""Golden pairs: every renamed event and session field, both directions.

Each pair is (beta, GA).  Beta -> GA is checked at the client edge on the
way in (client events) and at the upstream edge on the way in (server
events); GA -> beta at the client edge on the way out and at the upstream
edge on the way out.
"""

from __future__ import annotations

import copy

import pytest

from openopen8 import dialects as D
from openopen8.relay.stage import Chain
from openopen8.stages.dialect import DialectStage

from .helpers import client_to_upstream, make_session, upstream_to_client

# ------------------------------------------------------------------ sessions
#: (beta session fields, GA session fields); GA gets "type": "realtime"
SESSION_PAIRS = [
    ({"modalities": ["audio", "text"]}, {"output_modalities": ["audio"]}),
    ({"modalities": ["text"]}, {"output_modalities": ["text"]}),
    ({"voice": "alloy"}, {"audio": {"output": {"voice": "alloy"}}}),
    ({"speed": 1.2}, {"audio": {"output": {"speed": 1.2}}}),
    ({"input_audio_format": "pcm16"},
     {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}),
    ({"input_audio_format": "g711_ulaw"}, {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}),
    ({"input_audio_format": "g711_alaw"}, {"audio": {"input": {"format": {"type": "audio/pcma"}}}}),
    ({"output_audio_format": "pcm16"},
     {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}}}}),
    ({"output_audio_format": "g711_ulaw"}, {"audio": {"output": {"format": {"type": "audio/pcmu"}}}}),
    ({"output_audio_format": "g711_alaw"}, {"audio": {"output": {"format": {"type": "audio/pcma"}}}}),
    # the gateway's extension for other PCM rates
    ({"input_audio_format": "pcm16", "input_audio_sample_rate": 16000},
     {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}),
    ({"output_audio_format": "pcm16", "output_audio_sample_rate": 8000},
     {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 8000}}}}),
    ({"input_audio_transcription": {"model": "whisper-1", "language": "en"}},
     {"audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"}}}}),
    ({"input_audio_transcription": None}, {"audio": {"input": {"transcription": None}}}),
    ({"input_audio_noise_reduction": {"type": "near_field"}},
     {"audio": {"input": {"noise_reduction": {"type": "near_field"}}}}),
    ({"turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                         "silence_duration_ms": 500, "create_response": True,
                         "interrupt_response": True}},
     {"audio": {"input": {"turn_detection": {
         "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
         "silence_duration_ms": 500, "create_response": True, "interrupt_response": True}}}}),
    ({"turn_detection": {"type": "semantic_vad", "eagerness": "low"}},
     {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}}),
    ({"turn_detection": None}, {"audio": {"input": {"turn_detection": None}}}),
    ({"max_response_output_tokens": 512}, {"max_output_tokens": 512}),
    ({"max_response_output_tokens": "inf"}, {"max_output_tokens": "inf"}),
    # same name in both dialects: passed through
    ({"instructions": "Be brief."}, {"instructions": "Be brief."}),
    ({"tools": [{"type": "function", "name": "f", "description": "d",
                 "parameters": {"type": "object", "properties": {}}}], "tool_choice": "auto"},
     {"tools": [{"type": "function", "name": "f", "description": "d",
                 "parameters": {"type": "object", "properties": {}}}], "tool_choice": "auto"}),
    ({"tracing": "auto", "truncation": "auto", "include": None},
     {"tracing": "auto", "truncation": "auto", "include": None}),
    # unknown fields pass through untouched
    ({"x_vendor_field": {"a": 1}}, {"x_vendor_field": {"a": 1}}),
    # all of it at once, nested under one "audio"
    ({"modalities": ["audio", "text"], "voice": "verse", "input_audio_format": "pcm16",
      "output_audio_format": "g711_ulaw", "turn_detection": None, "speed": 1.0,
      "input_audio_transcription": {"model": "gpt-4o-transcribe"}},
     {"output_modalities": ["audio"],
      "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                          "turn_detection": None,
                          "transcription": {"model": "gpt-4o-transcribe"}},
                "output": {"voice": "verse", "format": {"type": "audio/pcmu"}, "speed": 1.0}}}),
]


def _ga(fields):
    return {"type": "realtime", **copy.deepcopy(fields)}


@pytest.mark.parametrize("beta,ga", SESSION_PAIRS)
def test_session_fields_beta_to_ga(beta, ga):
    out, dropped = D.session_to_ga(copy.deepcopy(beta))
    assert out == _ga(ga)
    assert dropped == []


@pytest.mark.parametrize("beta,ga", SESSION_PAIRS)
def test_session_fields_ga_to_beta(beta, ga):
    assert D.session_to_beta(_ga(ga)) == beta


def test_beta_modalities_any_order_is_ga_audio():
    assert D.session_to_ga({"modalities": ["text", "audio"]})[0]["output_modalities"] == ["audio"]


def test_temperature_and_client_secret_are_dropped():
    out, dropped = D.session_to_ga({"temperature": 0.8, "voice": "ash", "client_secret": None})
    assert out == {"type": "realtime", "audio": {"output": {"voice": "ash"}}}
    assert dropped == ["temperature"]


def test_ga_field_wins_over_its_beta_alias():
    out, _ = D.session_to_ga({"type": "realtime", "voice": "ash",
                              "audio": {"output": {"voice": "marin"}},
                              "modalities": ["text"], "output_modalities": ["audio"]})
    assert out == {"type": "realtime", "output_modalities": ["audio"],
                   "audio": {"output": {"voice": "marin"}}}


def test_rate_hint_gives_the_rate_of_pcm16():
    out, _ = D.session_to_ga({"input_audio_format": "pcm16", "output_audio_format": "pcm16"},
                             input_rate=16000, output_rate=None)
    assert out["audio"] == {"input": {"format": {"type": "audio/pcm", "rate": 16000}},
                            "output": {"format": {"type": "audio/pcm", "rate": 24000}}}
    # an explicit field beats the hint
    out, _ = D.session_to_ga({"input_audio_format": "pcm16", "input_audio_sample_rate": 48000},
                             input_rate=16000)
    assert out["audio"]["input"]["format"]["rate"] == 48000


def test_transcription_session_pair():
    beta = {"input_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "gpt-4o-transcribe", "prompt": "x"},
            "turn_detection": {"type": "server_vad"},
            "input_audio_noise_reduction": {"type": "far_field"},
            "include": ["item.input_audio_transcription.logprobs"]}
    ga = {"type": "transcription",
          "audio": {"input": {"format": {"type": "audio/pcmu"},
                              "transcription": {"model": "gpt-4o-transcribe", "prompt": "x"},
                              "turn_detection": {"type": "server_vad"},
                              "noise_reduction": {"type": "far_field"}}},
          "include": ["item.input_audio_transcription.logprobs"]}
    assert D.transcription_session_to_ga(dict(beta, modalities=["text"]))[0] == ga
    assert D.session_to_beta(ga) == beta


# --------------------------------------------------- client events (requests)
CLIENT_PAIRS = [
    # session.update: beta has no session.type
    ({"type": "session.update", "event_id": "c1",
      "session": {"modalities": ["text"], "voice": "alloy", "input_audio_format": "g711_alaw"}},
     {"type": "session.update", "event_id": "c1",
      "session": {"type": "realtime", "output_modalities": ["text"],
                  "audio": {"input": {"format": {"type": "audio/pcma"}},
                            "output": {"voice": "alloy"}}}}),
    # response.create options (protocol.md §3.4)
    ({"type": "response.create",
      "response": {"modalities": ["audio", "text"], "voice": "sage",
                   "output_audio_format": "g711_ulaw", "max_response_output_tokens": 100,
                   "instructions": "x", "conversation": "none", "metadata": {"k": "v"},
                   "tool_choice": "none"}},
     {"type": "response.create",
      "response": {"output_modalities": ["audio"], "max_output_tokens": 100,
                   "instructions": "x", "conversation": "none", "metadata": {"k": "v"},
                   "tool_choice": "none",
                   "audio": {"output": {"voice": "sage", "format": {"type": "audio/pcmu"}}}}}),
    ({"type": "response.create",
      "response": {"modalities": ["text"],
                   "input": [{"type": "message", "role": "assistant",
                              "content": [{"type": "text", "text": "earlier"}]},
                             {"type": "item_reference", "id": "item_1"}]}},
     {"type": "response.create",
      "response": {"output_modalities": ["text"],
                   "input": [{"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": "earlier"}]},
                             {"type": "item_reference", "id": "item_1"}]}}),
    # assistant history: content types
    ({"type": "conversation.item.create", "previous_item_id": "root",
      "item": {"type": "message", "role": "assistant",
               "content": [{"type": "text", "text": "Hello"}]}},
     {"type": "conversation.item.create", "previous_item_id": "root",
      "item": {"type": "message", "role": "assistant",
               "content": [{"type": "output_text", "text": "Hello"}]}}),
    ({"type": "conversation.item.create",
      "item": {"type": "message", "role": "assistant",
               "content": [{"type": "audio", "transcript": "Hi"}]}},
     {"type": "conversation.item.create",
      "item": {"type": "message", "role": "assistant",
               "content": [{"type": "output_audio", "transcript": "Hi"}]}}),
    # unchanged events
    ({"type": "conversation.item.create",
      "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]}},
     {"type": "conversation.item.create",
      "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]}}),
    ({"type": "conversation.item.create",
      "item": {"type": "function_call_output", "call_id": "call_1", "output": "{}"}},
     {"type": "conversation.item.create",
      "item": {"type": "function_call_output", "call_id": "call_1", "output": "{}"}}),
    ({"type": "input_audio_buffer.append", "audio": "AAAA"},
     {"type": "input_audio_buffer.append", "audio": "AAAA"}),
    ({"type": "input_audio_buffer.commit"}, {"type": "input_audio_buffer.commit"}),
    ({"type": "input_audio_buffer.clear"}, {"type": "input_audio_buffer.clear"}),
    ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 10},
     {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 10}),
    ({"type": "response.cancel"}, {"type": "response.cancel"}),
    ({"type": "x.unknown", "whatever": [1, 2]}, {"type": "x.unknown", "whatever": [1, 2]}),
]


@pytest.mark.parametrize("beta,ga", CLIENT_PAIRS)
def test_client_event_beta_to_ga_at_client_edge(beta, ga):
    s = make_session(client_dialect="beta", facts={"dialect_source": "header"})
    up, replies = client_to_upstream(Chain([DialectStage("client")]), s, [beta])
    assert up == [ga]
    assert replies == []


@pytest.mark.parametrize("beta,ga", CLIENT_PAIRS)
def test_client_event_ga_to_beta_at_upstream_edge(beta, ga):
    s = make_session(upstream_dialect="beta")
    up, _ = client_to_upstream(Chain([DialectStage("upstream")]), s, [ga])
    expect = copy.deepcopy(beta)
    if expect["type"] == "response.create" and "modalities" in expect["response"]:
        # GA ["audio"] is beta ["audio","text"]
        expect["response"]["modalities"] = (["audio", "text"] if "audio" in
                                            expect["response"]["modalities"] else ["text"])
    assert up == [expect]


def test_transcription_session_update_becomes_ga_session_update():
    s = make_session(client_dialect="beta", facts={"dialect_source": "header"})
    beta = {"type": "transcription_session.update", "event_id": "t1",
            "session": {"input_audio_format": "pcm16",
                        "input_audio_transcription": {"model": "whisper-1"}}}
    up, _ = client_to_upstream(Chain([DialectStage("client")]), s, [beta])
    assert up == [{"type": "session.update", "event_id": "t1",
                   "session": {"type": "transcription", "audio": {"input": {
                       "format": {"type": "audio/pcm", "rate": 24000},
                       "transcription": {"model": "whisper-1"}}}}}]
    # and back, for a beta upstream
    s2 = make_session(upstream_dialect="beta")
    back, _ = client_to_upstream(Chain([DialectStage("upstream")]), s2, up)
    assert back == [{"type": "transcription_session.update", "event_id": "t1",
                     "session": beta["session"]}]


# --------------------------------------------------------------- server events
def _common(**kw):
    return {"event_id": "event_1", "response_id": "resp_1", "item_id": "item_A",
            "output_index": 0, "content_index": 0, **kw}


RENAMED = [
    ("response.audio.delta", "response.output_audio.delta", {"delta": "AAAA"}),
    ("response.audio.done", "response.output_audio.done", {}),
    ("response.text.delta", "response.output_text.delta", {"delta": "Hel"}),
    ("response.text.done", "response.output_text.done", {"text": "Hello"}),
    ("response.audio_transcript.delta", "response.output_audio_transcript.delta", {"delta": "Hel"}),
    ("response.audio_transcript.done", "response.output_audio_transcript.done",
     {"transcript": "Hello"}),
]

GA_SESSION_OBJECT = {
    "type": "realtime", "object": "realtime.session", "id": "sess_1", "model": "gpt-realtime",
    "expires_at": 1760000000, "output_modalities": ["audio"], "instructions": "Be brief.",
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": None,
                        "noise_reduction": None,
                        "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                           "prefix_padding_ms": 300, "silence_duration_ms": 200,
                                           "idle_timeout_ms": None, "create_response": True,
                                           "interrupt_response": True}},
              "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy",
                         "speed": 1.0}},
    "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None,
    "truncation": "auto", "prompt": None, "include": None,
}
BETA_SESSION_OBJECT = {
    "object": "realtime.session", "id": "sess_1", "model": "gpt-realtime",
    "expires_at": 1760000000, "modalities": ["audio", "text"], "instructions": "Be brief.",
    "input_audio_format": "pcm16", "input_audio_transcription": None,
    "input_audio_noise_reduction": None,
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                       "silence_duration_ms": 200, "idle_timeout_ms": None,
                       "create_response": True, "interrupt_response": True},
    "output_audio_format": "pcm16", "voice": "alloy", "speed": 1.0,
    "tools": [], "tool_choice": "auto", "max_response_output_tokens": "inf", "tracing": None,
    "truncation": "auto", "prompt": None, "include": None,
}

ITEM_A_GA = {"id": "item_A", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_audio", "transcript": "Hello"}]}
ITEM_A_BETA = {"id": "item_A", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "audio", "transcript": "Hello"}]}
ITEM_T_GA = {"id": "item_T", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Hi"}]}
ITEM_T_BETA = {"id": "item_T", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "text", "text": "Hi"}]}

GA_RESPONSE = {"object": "realtime.response", "id": "resp_1", "status": "completed",
               "status_details": None, "output": [ITEM_A_GA], "conversation_id": "conv_1",
               "output_modalities": ["audio"], "max_output_tokens": "inf",
               "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "alloy"}},
               "usage": {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2},
               "metadata": None}
BETA_RESPONSE = {"object": "realtime.response", "id": "resp_1", "status": "completed",
                 "status_details": None, "output": [ITEM_A_BETA], "conversation_id": "conv_1",
                 "modalities": ["audio", "text"], "max_output_tokens": "inf",
                 "output_audio_format": "g711_ulaw", "voice": "alloy",
                 "usage": {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2},
                 "metadata": None}

SERVER_PAIRS = [
    *[({"type": b, **_common(**extra)}, {"type": g, **_common(**extra)}) for b, g, extra in RENAMED],
    ({"type": "session.created", "event_id": "e", "session": BETA_SESSION_OBJECT},
     {"type": "session.created", "event_id": "e", "session": GA_SESSION_OBJECT}),
    ({"type": "session.updated", "event_id": "e", "session": BETA_SESSION_OBJECT},
     {"type": "session.updated", "event_id": "e", "session": GA_SESSION_OBJECT}),
    ({"type": "response.created", "event_id": "e", "response": dict(BETA_RESPONSE, output=[])},
     {"type": "response.created", "event_id": "e", "response": dict(GA_RESPONSE, output=[])}),
    ({"type": "response.done", "event_id": "e", "response": BETA_RESPONSE},
     {"type": "response.done", "event_id": "e", "response": GA_RESPONSE}),
    ({"type": "response.output_item.done", "event_id": "e", "response_id": "resp_1",
      "output_index": 0, "item": ITEM_A_BETA},
     {"type": "response.output_item.done", "event_id": "e", "response_id": "resp_1",
      "output_index": 0, "item": ITEM_A_GA}),
    ({"type": "response.output_item.added", "event_id": "e", "response_id": "resp_1",
      "output_index": 0, "item": ITEM_T_BETA},
     {"type": "response.output_item.added", "event_id": "e", "response_id": "resp_1",
      "output_index": 0, "item": ITEM_T_GA}),
    ({"type": "conversation.item.retrieved", "event_id": "e", "item": ITEM_T_BETA},
     {"type": "conversation.item.retrieved", "event_id": "e", "item": ITEM_T_GA}),
    # unchanged (part types stay text/audio in GA, per captures)
    ({"type": "response.content_part.added", **_common(part={"type": "audio", "transcript": ""})},
     {"type": "response.content_part.added", **_common(part={"type": "audio", "transcript": ""})}),
    ({"type": "input_audio_buffer.speech_started", "event_id": "e", "audio_start_ms": 100,
      "item_id": "item_U"},
     {"type": "input_audio_buffer.speech_started", "event_id": "e", "audio_start_ms": 100,
      "item_id": "item_U"}),
    ({"type": "rate_limits.updated", "event_id": "e",
      "rate_limits": [{"name": "tokens", "limit": 10, "remaining": 9, "reset_seconds": 1.0}]},
     {"type": "rate_limits.updated", "event_id": "e",
      "rate_limits": [{"name": "tokens", "limit": 10, "remaining": 9, "reset_seconds": 1.0}]}),
    ({"type": "error", "event_id": "e", "error": {"type": "invalid_request_error",
                                                  "code": "invalid_value", "message": "m",
                                                  "param": "session.voice", "event_id": None}},
     {"type": "error", "event_id": "e", "error": {"type": "invalid_request_error",
                                                  "code": "invalid_value", "message": "m",
                                                  "param": "session.audio.output.voice",
                                                  "event_id": None}}),
    ({"type": "x.future_event", "event_id": "e", "obfuscation": "abc"},
     {"type": "x.future_event", "event_id": "e", "obfuscation": "abc"}),
]


@pytest.mark.parametrize("beta,ga", SERVER_PAIRS, ids=lambda d: d["type"])
def test_server_event_ga_to_beta_at_client_edge(beta, ga):
    s = make_session(client_dialect="beta", facts={"dialect_source": "header"})
    out = upstream_to_client(Chain([DialectStage("client")]), s, [copy.deepcopy(ga)])
    assert out == [beta]


@pytest.mark.parametrize("beta,ga", [p for p in SERVER_PAIRS if p[1]["type"] != "error"],
                         ids=lambda d: d["type"])
def test_server_event_beta_to_ga_at_upstream_edge(beta, ga):
    s = make_session(upstream_dialect="beta")
    out = upstream_to_client(Chain([DialectStage("upstream")]), s, [copy.deepcopy(beta)])
    assert out == [ga]


def test_beta_upstream_error_params_pass_through_unrenamed():
    """Error params are renamed only towards a beta client; a beta upstream's
    param reaches a GA client as the upstream wrote it (documented limit)."""
    beta = {"type": "error", "event_id": "e", "error": {"type": "invalid_request_error",
            "code": "invalid_value", "message": "m", "param": "session.voice", "event_id": None}}
    s = make_session(upstream_dialect="beta")
    out = upstream_to_client(Chain([DialectStage("upstream")]), s, [copy.deepcopy(beta)])
    assert out == [beta]


def test_transcription_session_object_both_ways():
    ga = {"type": "session.updated", "event_id": "e",
          "session": {"type": "transcription", "object": "realtime.transcription_session",
                      "id": "sess_t", "audio": {"input": {"format": {"type": "audio/pcmu"},
                                                          "transcription": {"model": "whisper-1"},
                                                          "turn_detection": None}},
                      "include": None}}
    beta = {"type": "transcription_session.updated", "event_id": "e",
            "session": {"object": "realtime.transcription_session", "id": "sess_t",
                        "input_audio_format": "g711_ulaw",
                        "input_audio_transcription": {"model": "whisper-1"},
                        "turn_detection": None, "include": None}}
    s = make_session(client_dialect="beta", facts={"dialect_source": "header"})
    assert upstream_to_client(Chain([DialectStage("client")]), s, [copy.deepcopy(ga)]) == [beta]
    s = make_session(upstream_dialect="beta")
    assert upstream_to_client(Chain([DialectStage("upstream")]), s, [beta]) == [ga]


def test_error_params_named_the_beta_way():
    cases = {
        "session.audio.input.format.rate": "session.input_audio_sample_rate",
        "session.audio.input.format.type": "session.input_audio_format",
        "session.audio.input.format": "session.input_audio_format",
        "session.audio.input.turn_detection.threshold": "session.turn_detection.threshold",
        "session.audio.output.voice": "session.voice",
        "session.output_modalities": "session.modalities",
        "response.audio.output.format": "response.output_audio_format",
        "session.instructions": "session.instructions",
        None: None,
    }
    for ga, beta in cases.items():
        assert D.param_to_beta(ga) == beta
