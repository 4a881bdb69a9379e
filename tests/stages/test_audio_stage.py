"""The audio stage: client formats on one side, upstream formats on the other."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from openai.types.realtime import RealtimeClientEventParam as GAClientEventParam

from openopen8.audio import g711
from openopen8.audio.formats import PCM24
from openopen8.relay.stage import Chain
from openopen8.stages.audio import AudioStage
from openopen8.stages.dialect import DialectStage

from .helpers import client_to_upstream, make_session, strict, upstream_to_client, wire


def tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype("<i2")


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def appends(raw: bytes, chunk: int) -> list[dict]:
    return [{"type": "input_audio_buffer.append", "audio": b64(raw[i:i + chunk])}
            for i in range(0, len(raw), chunk)]


def upstream_audio(events: list[dict]) -> bytes:
    return b"".join(unb64(e["audio"]) for e in events if e["type"] == "input_audio_buffer.append")


def ga_update(**audio) -> dict:
    return {"type": "session.update", "session": {"type": "realtime", "audio": audio}}


# ------------------------------------------------------------------- input
def test_16k_pcm_input_reaches_upstream_as_24k_one_and_a_half_times_the_bytes():
    s = make_session()
    chain = Chain([AudioStage()])
    x = tone(440, 16000, 1.0).tobytes()
    up, replies = client_to_upstream(chain, s, [
        ga_update(input={"format": {"type": "audio/pcm", "rate": 16000}}),
        *appends(x, 641),                     # odd-sized chunks: 20 ms + 1 byte
        {"type": "input_audio_buffer.commit"},
    ])
    assert replies == []
    assert up[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    strict(up[0], GAClientEventParam)
    assert up[-1]["type"] == "input_audio_buffer.commit"
    got = upstream_audio(up)
    assert len(got) == len(x) * 3 // 2
    assert abs(peak_hz(np.frombuffer(got, "<i2"), 24000) - 440) < 2


def test_input_rate_hint_for_a_client_that_never_declares_its_rate():
    """seeds/003 streams 16 kHz PCM but never says so: ?input_rate=16000."""
    s = make_session(facts={"input_rate": 16000})
    chain = Chain([DialectStage("client"), AudioStage()])
    x = tone(300, 16000, 0.5).tobytes()
    up, _ = client_to_upstream(chain, s, [
        {"type": "session.update", "session": {"type": "realtime", "modalities": ["audio", "text"],
                                               "turn_detection": {"type": "server_vad"}}},
        *appends(x, 640), {"type": "input_audio_buffer.commit"}])
    assert len(upstream_audio(up)) == len(x) * 3 // 2
    # and the client is told its own format
    out = upstream_to_client(chain, s, [{"type": "session.updated", "event_id": "e", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}}])
    assert out[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}


def test_beta_client_gives_its_rate_in_input_audio_sample_rate():
    s = make_session(client_dialect="beta", facts={"dialect_source": "header"})
    chain = Chain([DialectStage("client"), AudioStage()])
    up, _ = client_to_upstream(chain, s, [{"type": "session.update", "session": {
        "input_audio_format": "pcm16", "input_audio_sample_rate": 16000,
        "output_audio_format": "pcm16", "output_audio_sample_rate": 16000}}])
    assert up[0]["session"]["audio"] == {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}}}
    strict(up[0], GAClientEventParam)
    out = upstream_to_client(chain, s, [{"type": "session.updated", "event_id": "e", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                                      "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}}])
    sess = out[0]["session"]
    assert sess["input_audio_format"] == "pcm16" and sess["input_audio_sample_rate"] == 16000
    assert sess["output_audio_format"] == "pcm16" and sess["output_audio_sample_rate"] == 16000


def test_ulaw_8k_passes_through_to_openai_untouched():
    s = make_session()
    chain = Chain([AudioStage()])
    client_to_upstream(chain, s, [ga_update(input={"format": {"type": "audio/pcmu"}},
                                            output={"format": {"type": "audio/pcmu"}})])
    for d in ({"type": "input_audio_buffer.append", "audio": b64(b"\xff" * 160)},):
        ev = wire(d)
        assert chain.client(ev, s)[0] is ev
    ev = wire({"type": "response.output_audio.delta", "item_id": "i", "delta": b64(b"\x7f" * 80)})
    assert chain.server(ev, s)[0] is ev


def test_ulaw_8k_is_decoded_and_resampled_for_an_upstream_without_g711():
    s = make_session()
    chain = Chain([AudioStage(upstream_formats={PCM24})])
    x = tone(440, 8000, 1.0)
    ulaw = g711.ulaw_encode(x)
    up, _ = client_to_upstream(chain, s, [ga_update(input={"format": {"type": "audio/pcmu"}}),
                                          *appends(ulaw, 160), {"type": "input_audio_buffer.commit"}])
    assert up[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    got = upstream_audio(up)
    assert len(got) == len(ulaw) * 6          # 8 kHz 1 byte -> 24 kHz 2 bytes
    assert abs(peak_hz(np.frombuffer(got, "<i2"), 24000) - 440) < 2


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_pcm_rates(rate):
    s = make_session()
    chain = Chain([AudioStage()])
    x = tone(1000, rate, 0.5).tobytes()
    up, _ = client_to_upstream(chain, s, [
        ga_update(input={"format": {"type": "audio/pcm", "rate": rate}}),
        *appends(x, rate // 50 * 2), {"type": "input_audio_buffer.commit"}])
    got = upstream_audio(up)
    assert len(got) == (len(x) // 2) * 24000 // rate * 2
    assert abs(peak_hz(np.frombuffer(got, "<i2"), 24000) - 1000) < 3


def test_commit_and_clear_flush_the_resampler_tail_first():
    s = make_session(facts={"input_rate": 16000})
    chain = Chain([AudioStage()])
    x = tone(440, 16000, 0.02).tobytes()       # one 20 ms chunk: soxr holds all of it
    up, _ = client_to_upstream(chain, s, [{"type": "input_audio_buffer.append", "audio": b64(x)},
                                          {"type": "input_audio_buffer.clear"}])
    assert [e["type"] for e in up] == ["input_audio_buffer.append", "input_audio_buffer.clear"]
    assert len(upstream_audio(up)) == len(x) * 3 // 2
    # nothing pending: commit goes alone
    up, _ = client_to_upstream(chain, s, [{"type": "input_audio_buffer.commit"}])
    assert up == [{"type": "input_audio_buffer.commit"}]


def test_time_fields_mean_the_same_on_both_sides():
    """Conversion keeps duration to the sample, so ms fields pass unchanged."""
    s = make_session(facts={"input_rate": 16000, "output_rate": 8000})
    chain = Chain([AudioStage()])
    x = tone(440, 16000, 0.7).tobytes()
    up, _ = client_to_upstream(chain, s, [*appends(x, 640), {"type": "input_audio_buffer.commit"},
                                          {"type": "conversation.item.truncate", "item_id": "A",
                                           "content_index": 0, "audio_end_ms": 321}])
    client_ms = len(x) / 2 / 16000 * 1000
    upstream_ms = len(upstream_audio(up)) / 2 / 24000 * 1000
    assert client_ms == upstream_ms == 700
    assert up[-1]["audio_end_ms"] == 321
    ev = {"type": "input_audio_buffer.speech_started", "event_id": "e", "audio_start_ms": 120,
          "item_id": "U"}
    assert upstream_to_client(chain, s, [ev]) == [ev]


def test_unsupported_formats_are_refused_with_invalid_value():
    s = make_session()
    chain = Chain([AudioStage()])
    up, replies = client_to_upstream(chain, s, [
        dict(ga_update(input={"format": {"type": "audio/pcm", "rate": 12345}}), event_id="u1"),
        ga_update(output={"format": {"type": "audio/opus"}})])
    assert up == []                           # discarded whole, as OpenAI does
    assert [(r["error"]["code"], r["error"]["param"]) for r in replies] == [
        ("invalid_value", "session.audio.input.format.rate"),
        ("invalid_value", "session.audio.output.format.type")]
    assert replies[0]["error"]["event_id"] == "u1"


def test_unsupported_beta_format_is_refused_with_the_beta_field_name():
    s = make_session(client_dialect="beta", facts={"dialect_source": "header"})
    chain = Chain([DialectStage("client"), AudioStage()])
    up, replies = client_to_upstream(chain, s, [
        {"type": "session.update", "session": {"input_audio_format": "mp3"}},
        {"type": "session.update", "session": {"output_audio_format": "pcm16",
                                               "output_audio_sample_rate": 11111}}])
    assert up == []
    assert [r["error"]["param"] for r in replies] == ["session.input_audio_format",
                                                      "session.output_audio_sample_rate"]
    assert "g711_ulaw" in replies[0]["error"]["message"]


# ------------------------------------------------------------------ output
def test_output_deltas_arrive_at_the_clients_rate():
    s = make_session()
    chain = Chain([AudioStage()])
    up, _ = client_to_upstream(chain, s, [ga_update(output={"format": {"type": "audio/pcm",
                                                                       "rate": 16000}})])
    assert up[0]["session"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    y = tone(660, 24000, 1.0).tobytes()
    step = 4800                               # 100 ms deltas
    events = [{"type": "response.created", "event_id": "c", "response": {"id": "r1"}}]
    events += [{"type": "response.output_audio.delta", "event_id": f"d{i}", "response_id": "r1",
                "item_id": "A", "output_index": 0, "content_index": 0,
                "delta": b64(y[i:i + step])} for i in range(0, len(y), step)]
    events += [{"type": "response.output_audio.done", "event_id": "x", "response_id": "r1",
                "item_id": "A", "output_index": 0, "content_index": 0},
               {"type": "response.done", "event_id": "z", "response": {"id": "r1"}}]
    out = upstream_to_client(chain, s, events)
    assert [e["type"] for e in out][-2:] == ["response.output_audio.done", "response.done"]
    deltas = [e for e in out if e["type"] == "response.output_audio.delta"]
    assert all(d["item_id"] == "A" and d["response_id"] == "r1" for d in deltas)
    got = b"".join(unb64(d["delta"]) for d in deltas)
    assert len(got) == len(y) * 2 // 3
    assert abs(peak_hz(np.frombuffer(got, "<i2"), 16000) - 660) < 2


def test_output_as_ulaw_from_a_pcm_only_upstream():
    s = make_session(facts={})
    chain = Chain([AudioStage(upstream_formats={PCM24})])
    client_to_upstream(chain, s, [ga_update(output={"format": {"type": "audio/pcmu"}})])
    y = tone(440, 24000, 0.5).tobytes()
    out = upstream_to_client(chain, s, [
        {"type": "response.output_audio.delta", "item_id": "A", "content_index": 0,
         "delta": b64(y)},
        {"type": "response.output_audio.done", "item_id": "A", "content_index": 0}])
    got = b"".join(unb64(d["delta"]) for d in out if d["type"] == "response.output_audio.delta")
    assert len(got) == len(y) // 2 // 3
    pcm = g711.ulaw_decode(got)
    assert abs(peak_hz(pcm, 8000) - 440) < 2


def test_a_cancelled_response_drops_its_output_stream():
    s = make_session(facts={"output_rate": 16000})
    chain = Chain([AudioStage()])
    y = tone(440, 24000, 0.05).tobytes()
    upstream_to_client(chain, s, [{"type": "response.output_audio.delta", "response_id": "r1",
                                   "item_id": "A", "content_index": 0, "delta": b64(y)},
                                  {"type": "response.done", "response": {"id": "r1"}}])
    assert s.facts["audio.state"].out_convs == {}


def test_per_response_output_format():
    s = make_session(facts={"output_rate": 16000})
    chain = Chain([AudioStage()])
    up, replies = client_to_upstream(chain, s, [
        {"type": "response.create", "response": {"audio": {"output": {
            "format": {"type": "audio/pcm", "rate": 16000}}}}},
        {"type": "response.create", "response": {"audio": {"output": {
            "format": {"type": "audio/pcmu"}}}}}])
    assert up == [{"type": "response.create", "response": {"audio": {"output": {
        "format": {"type": "audio/pcm", "rate": 24000}}}}}]
    assert replies[0]["error"]["param"] == "response.audio.output.format"


def test_item_audio_is_converted_both_ways():
    s = make_session(facts={"input_rate": 16000})
    chain = Chain([AudioStage()])
    clip = tone(440, 16000, 0.1).tobytes()
    up, _ = client_to_upstream(chain, s, [{"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": b64(clip)}]}}])
    assert len(unb64(up[0]["item"]["content"][0]["audio"])) == len(clip) * 3 // 2
    back = upstream_to_client(chain, s, [{"type": "conversation.item.retrieved", "item": up[0]["item"]}])
    assert len(unb64(back[0]["item"]["content"][0]["audio"])) == len(clip)


# --------------------------------------------------------------- fast path
def test_matching_formats_forward_the_same_event_untouched():
    s = make_session()
    chain = Chain([AudioStage()])
    client_to_upstream(chain, s, [ga_update(input={"format": {"type": "audio/pcm", "rate": 24000}})])
    for d in ({"type": "input_audio_buffer.append", "audio": b64(b"\x00\x01" * 480)},
              {"type": "input_audio_buffer.commit"},
              ga_update(input={"format": {"type": "audio/pcm", "rate": 24000}})):
        ev = wire(d)
        raw = ev.raw
        out = chain.client(ev, s)
        assert out == [ev] and out[0] is ev and ev.raw == raw
    for d in ({"type": "response.output_audio.delta", "item_id": "A", "delta": b64(b"\0\0" * 480)},
              {"type": "response.output_audio.done", "item_id": "A"},
              {"type": "session.updated", "session": {"type": "realtime", "audio": {
                  "input": {"format": {"type": "audio/pcm", "rate": 24000}}}}}):
        ev = wire(d)
        raw = ev.raw
        out = chain.server(ev, s)
        assert out == [ev] and out[0] is ev and ev.raw == raw


def test_append_fast_path_does_not_parse():
    s = make_session()
    chain = Chain([AudioStage()])
    ev = wire({"type": "input_audio_buffer.append", "audio": b64(b"\0\0" * 2400)})
    chain.client(ev, s)
    assert ev._data is None
    ev = wire({"type": "response.output_audio.delta", "delta": b64(b"\0\0" * 2400)})
    chain.server(ev, s)
    assert ev._data is None


def test_full_beta_chain_at_16k_both_ways():
    """Beta client, 16 kHz in and out, through dialect + audio stages."""
    s = make_session(client_dialect="beta", facts={"dialect_source": "header", "input_rate": 16000,
                                                   "output_rate": 16000})
    chain = Chain([DialectStage("client"), AudioStage(), DialectStage("upstream")])
    x = tone(500, 16000, 0.5).tobytes()
    up, _ = client_to_upstream(chain, s, [
        {"type": "session.update", "session": {"input_audio_format": "pcm16",
                                               "output_audio_format": "pcm16", "voice": "ash"}},
        *appends(x, 640), {"type": "input_audio_buffer.commit"}])
    for e in up:
        strict(e, GAClientEventParam)
    assert up[0]["session"]["audio"]["input"]["format"]["rate"] == 24000
    assert len(upstream_audio(up)) == len(x) * 3 // 2
    y = tone(500, 24000, 0.5).tobytes()
    out = upstream_to_client(chain, s, [
        {"type": "response.output_audio.delta", "event_id": "d", "response_id": "r",
         "item_id": "A", "output_index": 0, "content_index": 0, "delta": b64(y)},
        {"type": "response.output_audio.done", "event_id": "x", "response_id": "r",
         "item_id": "A", "output_index": 0, "content_index": 0}])
    assert [e["type"] for e in out][-1] == "response.audio.done"
    got = b"".join(unb64(e["delta"]) for e in out if e["type"] == "response.audio.delta")
    assert len(got) == len(y) * 2 // 3
