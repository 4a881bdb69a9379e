"""A seeded generator of ill-typed Realtime events, for fuzzing the stages.

Why a hand-written generator rather than hypothesis: the inputs that matter
are *near misses* of real events (a ``session.update`` whose
``audio.input.format`` is ``{}``), and those come from mutating a corpus of
valid events -- which is a few lines with ``random.Random(seed)``, runs
thousands of cases a second, and replays exactly from its seed.

* :data:`GA_CLIENT`, :data:`BETA_CLIENT`, :data:`GA_SERVER`,
  :data:`BETA_SERVER`: valid events of both dialects (protocol.md, the golden
  dialect tests, the stand-in upstream).
* :func:`mutate` replaces values at any depth with nasty ones, deletes keys,
  adds unknown keys, changes the type of the top-level containers.
* :func:`raw_mutate` breaks the text itself (trailing comma, lone surrogate,
  ``1e400``, truncation, duplicate ``type`` keys...).
* :func:`to_text` writes an event as a client would (stdlib ``json``: big
  integers stay integers in the text).
"""

from __future__ import annotations

import base64
import copy
import json
import random
from typing import Any

_PCM = base64.b64encode(bytes(range(256)) * 19).decode()     # ~100 ms: the resampler gives some
_ODD = base64.b64encode(bytes(333)).decode()                  # an odd byte count

_TD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
       "silence_duration_ms": 200, "idle_timeout_ms": None, "create_response": True,
       "interrupt_response": True}
_USAGE = {"total_tokens": 320, "input_tokens": 132, "output_tokens": 188,
          "input_token_details": {"text_tokens": 59, "audio_tokens": 73, "image_tokens": 0,
                                  "cached_tokens": 64,
                                  "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 64,
                                                            "image_tokens": 0}},
          "output_token_details": {"text_tokens": 41, "audio_tokens": 147}}

# ------------------------------------------------------------------ client events
GA_CLIENT: list[dict[str, Any]] = [
    {"type": "session.update", "event_id": "c_su1", "session": {
        "type": "realtime", "output_modalities": ["audio"], "instructions": "Be brief.",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000},
                            "transcription": {"model": "whisper-1"}, "turn_detection": _TD,
                            "noise_reduction": {"type": "near_field"}},
                  "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy",
                             "speed": 1.0}},
        "tools": [{"type": "function", "name": "f", "description": "d",
                   "parameters": {"type": "object", "properties": {}}}],
        "tool_choice": "auto", "max_output_tokens": "inf"}},
    {"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}},
                                      "output": {"format": {"type": "audio/pcma"}}}}},
    {"type": "session.update", "session": {
        "type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}},
    # a GA session with stray beta fields (seed 003 does this)
    {"type": "session.update", "event_id": "c_su2", "session": {
        "type": "realtime", "input_audio_format": "pcm16", "input_audio_sample_rate": 16000,
        "modalities": ["audio", "text"], "turn_detection": {"type": "server_vad"}}},
    {"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                                     "transcription": {"model": "whisper-1"}}}}},
    {"type": "session.update", "session": {
        "type": "transcription", "input_audio_format": "pcm16", "input_audio_sample_rate": 16000,
        "input_audio_transcription": {"model": "whisper-1"}, "temperature": 0.8}},
    {"type": "input_audio_buffer.append", "event_id": "c_ap", "audio": _PCM},
    {"type": "input_audio_buffer.append", "audio": _ODD},
    {"type": "input_audio_buffer.commit", "event_id": "c_co"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "previous_item_id": "root", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_audio", "audio": _PCM}, {"type": "input_text", "text": "q"}]}},
    {"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant",
        "content": [{"type": "output_audio", "audio": _PCM, "transcript": "Hi"}]}},
    {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "{}"}},
    {"type": "conversation.item.retrieve", "item_id": "item_A"},
    {"type": "conversation.item.truncate", "item_id": "item_A", "content_index": 0,
     "audio_end_ms": 1500},
    {"type": "conversation.item.delete", "item_id": "item_A"},
    {"type": "response.create"},
    {"type": "response.create", "event_id": "c_rc", "response": {
        "output_modalities": ["audio"], "instructions": "x", "conversation": "none",
        "metadata": {"k": "v"}, "tool_choice": "none", "max_output_tokens": 100,
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}, "voice": "sage"}},
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_audio", "audio": _PCM}]},
                  {"type": "item_reference", "id": "item_1"}]}},
    {"type": "response.cancel", "response_id": "resp_1"},
    {"type": "output_audio_buffer.clear"},
    {"type": "session.close"},
]

BETA_CLIENT: list[dict[str, Any]] = [
    {"type": "session.update", "event_id": "b_su", "session": {
        "modalities": ["audio", "text"], "voice": "verse", "instructions": "Be brief.",
        "input_audio_format": "pcm16", "input_audio_sample_rate": 16000,
        "output_audio_format": "g711_ulaw", "turn_detection": _TD, "speed": 1.0,
        "input_audio_transcription": {"model": "gpt-4o-transcribe"},
        "input_audio_noise_reduction": {"type": "far_field"}, "temperature": 0.8,
        "max_response_output_tokens": 512, "tools": [], "tool_choice": "auto"}},
    {"type": "session.update", "session": {"output_audio_format": "pcm16",
                                           "output_audio_sample_rate": 16000}},
    {"type": "session.update", "session": {"input_audio_sample_rate": 8000}},
    {"type": "transcription_session.update", "event_id": "b_tu", "session": {
        "input_audio_format": "g711_alaw", "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": None, "modalities": ["text"], "include": []}},
    {"type": "transcription_session.update", "session": {
        "input_audio_sample_rate": 16000, "client_secret": {"expires_after": {"seconds": 10}},
        "input_audio_noise_reduction": None}},
    {"type": "response.create", "response": {"output_audio_sample_rate": 16000, "voice": "ash"}},
    {"type": "input_audio_buffer.append", "audio": _PCM},
    {"type": "input_audio_buffer.commit"},
    {"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello"}]}},
    {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "text", "text": "Hello"},
                                                       {"type": "input_audio", "audio": _PCM}]}},
    {"type": "response.create", "event_id": "b_rc", "response": {
        "modalities": ["audio", "text"], "voice": "sage", "output_audio_format": "g711_ulaw",
        "output_audio_sample_rate": 16000, "max_response_output_tokens": 100,
        "temperature": 0.7, "instructions": "x",
        "input": [{"type": "message", "role": "assistant",
                   "content": [{"type": "text", "text": "earlier"}]}]}},
    {"type": "response.cancel"},
]

# ------------------------------------------------------------------ server events
_ITEM_GA = {"id": "item_A", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_audio", "transcript": "Hello", "audio": _PCM}]}
_ITEM_BETA = {"id": "item_A", "type": "message", "role": "assistant", "status": "in_progress",
              "content": [{"type": "audio", "transcript": "Hello"}]}
_GA_SESSION = {
    "type": "realtime", "object": "realtime.session", "id": "sess_1", "model": "gpt-realtime",
    "expires_at": 1760000000, "output_modalities": ["audio"], "instructions": "Be brief.",
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1"}, "noise_reduction": None,
                        "turn_detection": _TD},
              "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy",
                         "speed": 1.0}},
    "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None,
    "truncation": "auto", "prompt": None, "include": None}
_BETA_SESSION = {
    "object": "realtime.session", "id": "sess_1", "model": "gpt-realtime",
    "modalities": ["audio", "text"], "instructions": "Be brief.", "input_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1"}, "turn_detection": _TD,
    "output_audio_format": "g711_ulaw", "voice": "alloy", "speed": 1.0, "temperature": 0.8,
    "tools": [], "tool_choice": "auto", "max_response_output_tokens": "inf"}
_GA_RESPONSE = {"object": "realtime.response", "id": "resp_1", "status": "completed",
                "status_details": None, "output": [_ITEM_GA], "conversation_id": "conv_1",
                "output_modalities": ["audio"], "max_output_tokens": "inf",
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000},
                                     "voice": "alloy"}},
                "usage": _USAGE, "metadata": None}
_BETA_RESPONSE = {"object": "realtime.response", "id": "resp_1", "status": "completed",
                  "status_details": None, "output": [_ITEM_BETA], "conversation_id": "conv_1",
                  "modalities": ["audio", "text"], "max_output_tokens": "inf",
                  "output_audio_format": "pcm16", "voice": "alloy", "temperature": 0.8,
                  "usage": _USAGE, "metadata": None}


def _c(**kw: Any) -> dict[str, Any]:
    return {"event_id": "event_1", "response_id": "resp_1", "item_id": "item_A",
            "output_index": 0, "content_index": 0, **kw}


def _server(session: dict, response: dict, item: dict, names: dict[str, str],
            transcription: str) -> list[dict[str, Any]]:
    def n(t: str) -> str:
        return names.get(t, t)

    return [
        {"type": transcription + ".created", "event_id": "event_s", "session": session},
        {"type": transcription + ".updated", "event_id": "event_s", "session": session},
        {"type": "response.created", "event_id": "event_r",
         "response": dict(response, status="in_progress", output=[], usage=None)},
        {"type": "response.output_item.added", "event_id": "e", "response_id": "resp_1",
         "output_index": 0, "item": dict(item, status="in_progress", content=[])},
        {"type": "conversation.item.added", "event_id": "e", "previous_item_id": "item_U",
         "item": dict(item, status="in_progress")},
        {"type": "conversation.item.created", "event_id": "e", "previous_item_id": "item_U",
         "item": item},
        {"type": "response.content_part.added", **_c(part={"type": "audio", "transcript": ""})},
        {"type": n("response.output_audio.delta"), **_c(delta=_PCM)},
        {"type": n("response.output_audio.delta"), **_c(delta=_ODD)},
        {"type": n("response.output_audio_transcript.delta"), **_c(delta="Hel")},
        {"type": n("response.output_text.delta"), **_c(delta="Hel")},
        {"type": n("response.output_audio.done"), **_c()},
        {"type": n("response.output_audio_transcript.done"), **_c(transcript="Hello")},
        {"type": "response.content_part.done", **_c(part={"type": "output_text", "text": "Hi"})},
        {"type": "conversation.item.done", "event_id": "e", "previous_item_id": "item_U",
         "item": item},
        {"type": "response.output_item.done", "event_id": "e", "response_id": "resp_1",
         "output_index": 0, "item": item},
        {"type": "response.done", "event_id": "event_d", "response": response},
        {"type": "conversation.item.retrieved", "event_id": "e", "item": item},
        {"type": "conversation.item.deleted", "event_id": "e", "item_id": "item_A"},
        {"type": "conversation.item.truncated", "event_id": "e", "item_id": "item_A",
         "content_index": 0, "audio_end_ms": 100},
        {"type": "conversation.item.input_audio_transcription.completed", "event_id": "e",
         "item_id": "item_U", "content_index": 0, "transcript": "hi",
         "usage": {"type": "tokens", "total_tokens": 24, "input_tokens": 16,
                   "input_token_details": {"text_tokens": 0, "audio_tokens": 16},
                   "output_tokens": 8}},
        {"type": "conversation.item.input_audio_transcription.completed", "event_id": "e",
         "item_id": "item_V", "content_index": 0, "transcript": "hi",
         "usage": {"type": "duration", "seconds": 2.5}},
        {"type": "input_audio_buffer.speech_started", "event_id": "e", "audio_start_ms": 100,
         "item_id": "item_U"},
        {"type": "rate_limits.updated", "event_id": "e", "rate_limits": [
            {"name": "tokens", "limit": 10, "remaining": 9, "reset_seconds": 1.0}]},
        {"type": "error", "event_id": "e", "error": {
            "type": "invalid_request_error", "code": "invalid_value", "message": "m",
            "param": "session.audio.input.format.rate", "event_id": "c_su1"}},
        {"type": "x.future_event", "event_id": "e", "obfuscation": "abc"},
    ]


GA_SERVER = _server(_GA_SESSION, _GA_RESPONSE, _ITEM_GA, {}, "session") + [
    {"type": "session.updated", "event_id": "event_t", "session": {
        "type": "transcription", "object": "realtime.transcription_session", "id": "sess_t",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "noise_reduction": None,
                            "transcription": {"model": "whisper-1"}, "turn_detection": None}},
        "include": None}}]
_BETA_NAMES = {"response.output_audio.delta": "response.audio.delta",
               "response.output_audio.done": "response.audio.done",
               "response.output_text.delta": "response.text.delta",
               "response.output_audio_transcript.delta": "response.audio_transcript.delta",
               "response.output_audio_transcript.done": "response.audio_transcript.done"}
BETA_SERVER = (_server(_BETA_SESSION, _BETA_RESPONSE, _ITEM_BETA, _BETA_NAMES, "session")
               + _server({"input_audio_format": "g711_ulaw", "include": None},
                         _BETA_RESPONSE, _ITEM_BETA, _BETA_NAMES,
                         "transcription_session")[:2])

# ------------------------------------------------------------------ nasty values
_NESTED: list[Any] = [[[]], [{}], [None], {"a": {"b": {"c": []}}}, [[1, [2, [3]]]],
                      {"type": {}}, {"type": []}, {"type": None}, {"type": 1},
                      {"type": "audio/pcm", "rate": {}}, {"type": "audio/pcm", "rate": "24000"},
                      {"type": "audio/pcm", "rate": 1e308}, {"type": "audio/pcm", "rate": -1},
                      {"type": "audio/pcm", "rate": True}, {"type": "audio/pcm", "rate": 2 ** 70},
                      {"type": "audio/pcmu", "rate": []}, {"id": {}}, {"id": []}, {"id": None},
                      {"model": {}}, {"model": 5}, {"output": {}}, {"content": {}},
                      {"content": [None, 1, "x", [], {"type": {}}]},
                      {"input": {"format": {}}, "output": []}]
NASTY: list[Any] = [
    None, True, False, 0, 1, -1, 2, 0.0, -0.0, 0.5, -1.5, 1e308, -1e308, 5e-324,
    2 ** 31, 2 ** 63 - 1, -2 ** 63, 2 ** 64 - 1, 2 ** 70, -2 ** 70, 10 ** 400,
    "", " ", "0", "-1", "inf", "NaN", "null", "{}", "\x00", "é", "\u202e", "a" * 5000,
    "audio/pcm", "audio/pcmu", "pcm16", "g711_ulaw", "realtime", "transcription",
    "session.update", "response.create", "in_progress", "completed", "assistant", "user",
    "input_audio", "output_audio", "audio", "text", "resp_1", "item_A", "AAAA", "!!!!",
    {}, [], *_NESTED,
]


def nasty(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.8 or depth > 3:
        return copy.deepcopy(rng.choice(NASTY))
    if r < 0.9:
        return [nasty(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if r < 0.97:
        keys = ("type", "id", "format", "rate", "audio", "x", "")
        return {rng.choice(keys): nasty(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    deep: Any = rng.choice(([], {}))
    for _ in range(rng.randint(50, 200)):
        deep = [deep] if rng.random() < 0.5 else {"a": deep}
    return deep


# ------------------------------------------------------------------ mutations
def _paths(v: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value inside ``v`` (dict keys and list indices)."""
    out = [path]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, path + (i,))
    return out


def _get(v: Any, path: tuple) -> Any:
    for p in path:
        v = v[p]
    return v


def mutate(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A deep copy of ``event`` with one to three mutations.  The top-level
    ``type`` is kept most of the time (so the stage that handles the type is
    reached) but not always."""
    d = copy.deepcopy(event)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(d) if p and (p != ("type",) or rng.random() < 0.05)]
        op = rng.random()
        if not paths:
            op = 0.99
        if op < 0.55:                                   # replace a value
            p = rng.choice(paths)
            _get(d, p[:-1])[p[-1]] = nasty(rng)
        elif op < 0.7:                                  # delete a key / an element
            p = rng.choice(paths)
            parent = _get(d, p[:-1])
            del parent[p[-1]]
        elif op < 0.8:                                  # swap a container's kind
            p = rng.choice(paths)
            parent, v = _get(d, p[:-1]), _get(d, p)
            if isinstance(v, dict):
                parent[p[-1]] = list(v.values()) if rng.random() < 0.5 else list(v)
            elif isinstance(v, list):
                parent[p[-1]] = {str(i): x for i, x in enumerate(v)}
            else:
                parent[p[-1]] = [v] if rng.random() < 0.5 else {"type": v}
        elif op < 0.9:                                  # the top-level containers
            for k in ("session", "response", "item", "error", "part", "usage", "audio", "delta"):
                if k in d:
                    d[k] = nasty(rng)
                    break
            else:
                d[rng.choice(("session", "response", "item"))] = nasty(rng)
        else:                                           # an unknown key somewhere
            dicts = [p for p in _paths(d) if isinstance(_get(d, p), dict)]
            target = _get(d, rng.choice(dicts))
            target[rng.choice(("x_unknown", "type", "format", "rate", "id", "input", "output",
                               "audio", "usage", "event_id", "response", "session"))] = nasty(rng)
    return d


def to_text(d: Any) -> str:
    """Wire text as a client might write it: big integers stay integers."""
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


_BROKEN = [
    lambda t, r: t[:-1] + ",}",                                      # trailing comma
    lambda t, r: t[:-1] + ',"x":"\\ud800"}',                         # lone surrogate
    lambda t, r: t[:-1] + ',"x":1e400}',                             # infinity as a double
    lambda t, r: t[:-1] + ',"x":NaN}',
    lambda t, r: t[:r.randint(10, max(10, len(t) - 1))],            # truncated (type still peeked)
    lambda t, r: t[:-1] + ',"type":' + to_text(r.choice(NASTY)) + "}",   # a second type key
    lambda t, r: t[:-1] + ',"session":' + to_text(r.choice(NASTY)) + "}",
    lambda t, r: t[:-1] + ',"response":' + to_text(r.choice(NASTY)) + "}",
    lambda t, r: " " + t,
    lambda t, r: "\ufeff" + t,
    lambda t, r: t.replace('"', "'", 3),
    lambda t, r: t + t,
    lambda t, r: t.replace(":", ": ", 5),                            # Python's json spacing
    lambda t, r: t.replace(":", ": ", 1) + " ,",                     # spaced, and not JSON
    # deeper than orjson writes (254), not deeper than it reads (1024)
    lambda t, r: t[:-1] + ',"x":' + "[" * (n := r.randint(255, 1000)) + "]" * n + "}",
    lambda t, r: t.replace("}", ',"x":' + "[" * 300 + "]" * 300 + "}", 1),
]


def raw_mutate(text: str, rng: random.Random) -> str:
    text = rng.choice(_BROKEN)(text, rng)
    return rng.choice(_BROKEN)(text, rng) if rng.random() < 0.2 else text
