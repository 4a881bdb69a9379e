"""``openopen8 talk`` run for real (a subprocess) against a gateway on loopback
whose channel is the stand-in OpenAI upstream."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import numpy as np
import pytest
from typer.testing import CliRunner

from openopen8.cli import app

from .standin import Script, StandIn
from .talkkit import finish_talk, gateway_root, run_talk, start_talk, tone_wav, wav_info

MODEL = "gpt-realtime"
REPLY = "Hello from the stand-in."
WEATHER_TOOL = [{"type": "function", "name": "get_weather", "description": "Weather in a city.",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}}]


@dataclass
class Setup:
    url: str            # what a user passes to --url: ws://127.0.0.1:PORT
    token: str
    upstream: StandIn
    gateway: Any

    async def talk(self, *args: str, token: str | None = "default", **kw: Any):
        return await run_talk(self.url, *args, model=MODEL,
                              token=self.token if token == "default" else token, **kw)


@pytest.fixture
async def setup(gateway) -> AsyncIterator[Setup]:
    async with StandIn(ping_interval=0) as up:
        await gateway.channel("standin", up.base_url, [MODEL])
        yield Setup(gateway_root(gateway.url), await gateway.token(), up, gateway)


def latencies(summary: str, first: str) -> tuple[list[int], list[int]]:
    """The summary's per-turn figures in ms: from the end of the speech sent,
    and from the server's speech_stopped."""
    heard = re.findall(rf"end of speech \(last sound sent\) → {first}: (\d+) ms", summary)
    server = re.findall(rf"server's speech_stopped → {first}: (\d+) ms", summary)
    return [int(v) for v in heard], [int(v) for v in server]


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * rate / len(x))


async def test_file_in_real_time_gives_captions_reply_wav_and_summary(setup, tmp_path):
    wav = tone_wav(tmp_path / "in.wav", rate=16000, channels=2, tone_ms=600, tail_ms=300)
    out = tmp_path / "reply.wav"
    t0 = time.monotonic()
    run = await setup.talk("--file", str(wav), "--out", str(out))
    elapsed = time.monotonic() - t0
    assert run.code == 0, run
    # captions: the user's transcript and the assistant's, each on its labelled line
    assert "you ▸ hello there" in run.stdout, run
    assert f"assistant ▸ {REPLY}" in run.stdout, run
    assert "speech started" in run.stdout and "speech stopped" in run.stdout
    # the summary: latency from end of speech, reply duration, usage from response.done
    heard, server = latencies(run.stdout, "first audio")
    assert len(heard) == len(server) == 1, run
    assert "reply audio: 0.30 s (pcm16, 24000 Hz)" in run.stdout, run
    assert "total 320" in run.stdout, run
    # the reply WAV: 3 deltas of 100 ms at 24 kHz mono
    assert wav_info(out) == (24000, 1, 7200)
    # real-time pace: a 1.0 s file takes at least 1.0 s to send
    assert elapsed >= 1.0
    # what the upstream got: 24 kHz mono PCM16, the 440 Hz tone intact after 16k->24k + downmix
    s = setup.upstream.sessions[-1]
    first = s.received[0]
    assert first["type"] == "session.update" and first["session"]["type"] == "realtime"
    assert s.input_formats == [{"type": "audio/pcm", "rate": 24000}]
    assert len(s.input_audio) >= 48000  # the 1.0 s file (+ trailing silence)
    assert abs(dominant_hz(bytes(s.input_audio), 24000) - 440) < 5


async def test_json_prints_every_server_event_as_a_line(setup, tmp_path):
    wav = tone_wav(tmp_path / "in.wav", rate=44100, channels=1)
    run = await setup.talk("--file", str(wav), "--fast", "--json")
    assert run.code == 0, run
    events = run.events()  # every line parses
    types = [e["type"] for e in events]
    assert types[0] == "session.created" and "session.updated" in types
    for t in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
              "input_audio_buffer.committed", "response.created", "response.output_audio.delta",
              "response.output_audio_transcript.done", "response.done"):
        assert t in types, t
    assert types.index("input_audio_buffer.speech_stopped") < types.index("response.created")
    assert len(types) == len(setup.upstream.sessions[-1].sent)  # nothing left out
    assert "summary" in run.stderr and "assistant ▸" not in run.stdout


async def test_manual_commits_and_asks_for_the_response(setup, tmp_path):
    wav = tone_wav(tmp_path / "in.wav", rate=8000, channels=1, tone_ms=300, tail_ms=0)
    out = tmp_path / "reply.wav"
    run = await setup.talk("--file", str(wav), "--fast", "--manual", "--out", str(out))
    assert run.code == 0, run
    s = setup.upstream.sessions[-1]
    assert s.received[0]["session"]["audio"]["input"]["turn_detection"] is None
    sent = [e["type"] for e in s.received]
    assert sent[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert not any(e["type"] == "input_audio_buffer.speech_started" for e in s.sent)
    assert re.search(r"commit sent → first audio: \d+ ms", run.stdout), run
    assert "end of speech" not in run.stdout       # the client's own commit is the trigger
    assert wav_info(out)[2] > 0


async def test_tool_call_round_trip(setup, tmp_path):
    setup.upstream.script = Script(text="It is 21 degrees in Paris.",
                                   function_call=("get_weather", '{"city": "Paris"}'))
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(WEATHER_TOOL))
    run = await setup.talk("--text", "What is the weather in Paris?", "--tools", str(tools),
                           "--tool-result", 'get_weather={"temp_c": 21}')
    assert run.code == 0, run
    assert 'get_weather({"city": "Paris"})' in run.stdout, run
    assert 'get_weather → {"temp_c": 21}' in run.stdout, run
    assert "assistant ▸ It is 21 degrees in Paris." in run.stdout, run
    s = setup.upstream.sessions[-1]
    assert s.received[0]["session"]["tools"] == WEATHER_TOOL
    call = next(e["item"] for e in s.sent if e["type"] == "response.output_item.done")
    outputs = [e for e in s.received if e["type"] == "conversation.item.create"
               and e["item"]["type"] == "function_call_output"]
    assert len(outputs) == 1
    assert outputs[0]["item"]["call_id"] == call["call_id"]
    assert json.loads(outputs[0]["item"]["output"]) == {"temp_c": 21}
    # the turn continues: response.create after the output, and two responses in all
    assert s.received[-1]["type"] == "response.create"
    assert sum(e["type"] == "response.done" for e in s.sent) == 2


async def test_tool_call_answered_at_the_prompt(setup, tmp_path):
    """No --tool-result: with a terminal on stdin, talk asks for the result."""
    setup.upstream.script = Script(text="Cold in Oslo.", function_call=("get_weather", '{"city": "Oslo"}'))
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(WEATHER_TOOL))
    master, slave = pty.openpty()
    try:
        os.write(master, b'not json\n{"temp_c": -3}\n')  # a typo first, then the answer
        proc = await start_talk(setup.url, "--text", "Weather in Oslo?", "--tools", str(tools),
                                model=MODEL, token=setup.token, stdin=slave)
        run = await finish_talk(proc)
    finally:
        os.close(slave)
        os.close(master)
    assert run.code == 0, run
    assert "result of get_weather" in run.stderr and "not JSON" in run.stderr, run
    out = next(e for e in setup.upstream.sessions[-1].received
               if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output")
    assert json.loads(out["item"]["output"]) == {"temp_c": -3}
    assert "assistant ▸ Cold in Oslo." in run.stdout


async def test_tool_call_without_a_result_and_no_terminal_fails_plainly(setup, tmp_path):
    setup.upstream.script = Script(function_call=("get_weather", '{"city": "Oslo"}'))
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(WEATHER_TOOL))
    run = await setup.talk("--text", "Weather?", "--tools", str(tools))
    assert run.code == 1, run
    assert "get_weather" in run.stderr and "--tool-result" in run.stderr


async def test_two_utterances_are_both_answered_before_the_end(setup, tmp_path):
    """The run ends after the reply to the *last* input, even when the second
    utterance barges in on the first reply."""
    setup.upstream.script = Script(audio_deltas=3, delay=0.05)
    wav = tone_wav(tmp_path / "in.wav", bursts=2, tone_ms=300, gap_ms=500)
    run = await setup.talk("--file", str(wav), "--fast", "--json")
    assert run.code == 0, run
    types = run.types()
    assert types.count("input_audio_buffer.committed") == 2
    assert types.count("response.done") == types.count("response.created") == 2
    last = [e for e in run.events() if e["type"] == "response.done"][-1]
    assert last["response"]["status"] == "completed"
    # sent --fast, only the server's figure means something (the first reply was cut: —)
    assert run.stderr.count("server's speech_stopped → first audio:") == 2, run
    assert "end of speech" not in run.stderr


async def test_latency_counts_from_the_end_of_speech_as_well_as_from_speech_stopped(setup, tmp_path):
    """The server's speech_stopped comes a VAD silence window (200 ms here)
    after the speech ends; the summary also measures from the moment the
    speech's last frame was sent, per turn (issue 13, item 6)."""
    setup.upstream.script = Script(audio_deltas=3, delay=0.05)
    wav = tone_wav(tmp_path / "in.wav", bursts=2, tone_ms=300, gap_ms=500)
    run = await setup.talk("--file", str(wav))          # real time
    assert run.code == 0, run
    heard, server = latencies(run.stdout, "first audio")
    assert len(heard) == len(server) == 2, run
    silence_ms = setup.upstream.sessions[-1].session["audio"]["input"]["turn_detection"][
        "silence_duration_ms"]
    for h, v in zip(heard, server):
        # sent at real-time pace, speech_stopped cannot come before the silence window has passed
        assert h >= v + silence_ms * 0.75, run
    assert "(what a listener waits)" in run.stdout and "turn 2: " in run.stdout


@pytest.mark.parametrize("how", ["text", "file"])
async def test_text_only_summary_speaks_of_first_text(setup, tmp_path, how):
    args = ("--text", "hi") if how == "text" else (
        "--file", str(tone_wav(tmp_path / "in.wav", tone_ms=400)))
    run = await setup.talk(*args, "--text-only")
    assert run.code == 0, run
    summary = run.stdout[run.stdout.index("summary"):]
    assert "first audio" not in summary and "reply audio:" not in summary, run
    assert re.search(r"→ first text +reply audio", summary), run        # the table's column
    if how == "text":
        assert re.search(r"text sent → first text: \d+ ms", summary), run
    else:
        heard, server = latencies(summary, "first text")
        assert len(heard) == len(server) == 1, run


async def test_ctrl_c_closes_cleanly(setup, tmp_path):
    wav = tone_wav(tmp_path / "in.wav", tone_ms=5000)
    proc = await start_talk(setup.url, "--file", str(wav), model=MODEL, token=setup.token)
    s = await setup.upstream.session(timeout=10)
    deadline = time.monotonic() + 10
    while len(s.input_audio) < 4800 and time.monotonic() < deadline:  # 100 ms streamed
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    run = await finish_talk(proc, timeout=10)
    assert run.code == 130, run
    await asyncio.wait_for(s.closed.wait(), 5)
    assert s.close_code == 1000
    assert len(s.input_audio) < 5 * 48000  # it stopped streaming


async def test_text_turn(setup, tmp_path):
    out = tmp_path / "reply.wav"
    run = await setup.talk("--text", "Say hello.", "--out", str(out))
    assert run.code == 0, run
    assert "you ▸ Say hello." in run.stdout
    assert f"assistant ▸ {REPLY}" in run.stdout
    item = next(e for e in setup.upstream.sessions[-1].received if e["type"] == "conversation.item.create")
    assert item["item"]["content"] == [{"type": "input_text", "text": "Say hello."}]
    assert wav_info(out)[2] == 7200


async def test_bad_token_is_refused_with_the_gateways_message(setup):
    run = await setup.talk("--text", "hi", token="oo8_not-a-token")
    assert run.code == 1, run
    assert "HTTP 401" in run.stderr and "invalid_api_key" in run.stderr
    assert "Incorrect API key provided." in run.stderr
    missing = await setup.talk("--text", "hi", token=None)
    assert missing.code == 1 and "HTTP 401" in missing.stderr
    assert "You didn't provide an API key" in missing.stderr
    # and what to do about it, in talk's own terms
    for r in (run, missing):
        assert "hint:" in r.stderr and "--token" in r.stderr and "OPENOPEN8_TOKEN" in r.stderr, r
        assert "openopen8 tokens create" in r.stderr
    assert not setup.upstream.sessions  # refused before anything reached the upstream


async def test_no_server_says_which_host_and_port_and_to_serve():
    with socket.socket() as sock:           # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = await run_talk(f"ws://127.0.0.1:{port}", "--text", "hi", token="oo8_x")
    assert run.code == 1, run
    assert f"cannot connect to 127.0.0.1:{port} (connection refused)" in run.stderr, run
    assert "openopen8 serve" in run.stderr and "ssl:default" not in run.stderr, run


async def test_wss_to_a_plain_server_suggests_ws():
    async with StandIn(ping_interval=0) as up:     # a plain ws:// server that answers TLS at once
        run = await run_talk(gateway_root(up.url).replace("ws://", "wss://"), "--text", "hi",
                             model=MODEL, token="sk-good")
    assert run.code == 1, run
    assert "over TLS (wrong version number)" in run.stderr and "use ws://" in run.stderr, run
    assert "ssl:default" not in run.stderr


async def test_tls_mismatches_say_what_to_do(tmp_path):
    from .conftest import start_gateway
    from .tls import make_cert
    cert, key = make_cert(tmp_path)
    g = await start_gateway(tmp_path, tls_cert=cert, tls_key=key)
    try:
        token = await g.token()
        untrusted = await run_talk(gateway_root(g.url), "--text", "hi", model=MODEL, token=token)
        assert untrusted.code == 1, untrusted
        assert "TLS certificate is not trusted here (self-signed certificate)" in untrusted.stderr
        plain = await run_talk(gateway_root(g.url).replace("wss://", "ws://"), "--text", "hi",
                               model=MODEL, token=token)
        assert plain.code == 1, plain
        assert "closed the connection without answering (if the gateway serves TLS, use wss://)" \
            in plain.stderr, plain
    finally:
        await g.stop()


async def test_error_event_ends_the_run_non_zero(setup):
    async def fail_response(session, ev):
        if ev["type"] == "response.create":
            await session.error("The server had an error while processing your request.",
                                "server_error", type="server_error")
            return True
    setup.upstream.on_event = fail_response
    run = await setup.talk("--text", "hi")
    assert run.code == 1, run
    assert "server_error" in run.stderr and "had an error" in run.stderr


async def test_upstream_drop_mid_reply_is_a_plain_close_error(setup):
    setup.upstream.script = Script(close_after="response.output_audio.delta", close_code=None)
    run = await setup.talk("--text", "hi")
    assert run.code == 1, run
    assert "closed the connection" in run.stderr or "connection was lost" in run.stderr


async def test_g711_session_format_end_to_end(setup, tmp_path):
    wav = tone_wav(tmp_path / "in.wav", rate=22050, channels=2)
    out = tmp_path / "reply.wav"
    run = await setup.talk("--file", str(wav), "--fast", "--audio-format", "pcmu", "--out", str(out))
    assert run.code == 0, run
    s = setup.upstream.sessions[-1]
    assert s.input_formats == [{"type": "audio/pcmu"}]
    assert len(s.input_audio) >= 8000  # 1 s at 8 kHz, one byte a sample
    rate, channels, frames = wav_info(out)
    assert (rate, channels, frames) == (8000, 1, 2400)


async def test_beta_dialect_through_the_gateway_to_a_beta_upstream(gateway, tmp_path):
    """Beta end to end where no translation is needed: the upstream is an Azure
    preview deployment, which speaks beta itself."""
    async with StandIn(ping_interval=0) as up:
        await gateway.channel("azure-preview", up.azure_endpoint, [MODEL], type="azure",
                              api_version="2025-04-01-preview")
        token = await gateway.token()
        wav = tone_wav(tmp_path / "in.wav")
        out = tmp_path / "reply.wav"
        run = await run_talk(gateway_root(gateway.url), "--file", str(wav), "--fast", "--json",
                             "--dialect", "beta", "--voice", "verse", "--out", str(out),
                             model=MODEL, token=token)
        assert run.code == 0, run
        types = run.types()
        assert "response.audio.delta" in types and "response.output_audio.delta" not in types
        upd = up.sessions[-1].received[0]
        assert upd["type"] == "session.update" and "type" not in upd["session"]
        assert upd["session"]["input_audio_format"] == "pcm16"
        assert upd["session"]["voice"] == "verse"
        assert upd["session"]["turn_detection"] == {"type": "server_vad"}
        assert wav_info(out) == (24000, 1, 7200)


async def test_beta_dialect_through_the_gateway_to_a_ga_upstream(setup, tmp_path):
    """The client speaks beta; the gateway's dialect stage translates for OpenAI GA."""
    wav = tone_wav(tmp_path / "in.wav")
    out = tmp_path / "reply.wav"
    run = await setup.talk("--file", str(wav), "--fast", "--json", "--dialect", "beta",
                           "--out", str(out))
    assert run.code == 0, run
    types = run.types()
    assert "response.audio.delta" in types and "conversation.item.created" in types
    assert not {"response.output_audio.delta", "conversation.item.added"} & set(types)
    created = run.events()[0]
    assert created["type"] == "session.created" and "input_audio_format" in created["session"]
    s = setup.upstream.sessions[-1]
    assert s.received[0]["session"]["type"] == "realtime"  # GA upstream got GA
    assert wav_info(out) == (24000, 1, 7200)


async def test_16khz_session_through_the_gateways_audio_stage(setup, tmp_path):
    """Ask for PCM16 at 16 kHz: the client sends and receives 16 kHz, the gateway
    converts to and from OpenAI's 24 kHz."""
    wav = tone_wav(tmp_path / "in.wav", rate=44100, channels=2)
    out = tmp_path / "reply.wav"
    run = await setup.talk("--file", str(wav), "--fast", "--audio-rate", "16000", "--out", str(out))
    assert run.code == 0, run
    assert "pcm16 16000 Hz in, pcm16 16000 Hz out" in run.stdout, run
    s = setup.upstream.sessions[-1]
    assert s.input_formats == [{"type": "audio/pcm", "rate": 24000}]
    assert abs(dominant_hz(bytes(s.input_audio), 24000) - 440) < 5
    rate, channels, frames = wav_info(out)
    assert (rate, channels) == (16000, 1) and abs(frames - 4800) <= 16  # 0.3 s


async def test_beta_header_is_sent(tmp_path):
    """Straight at a GA server (the stand-in, as OpenAI since 2026-05): the beta
    header is refused with an error event and close 4000, shown plainly."""
    async with StandIn(ping_interval=0) as up:
        run = await run_talk(up.url.split("/v1/realtime")[0], "--text", "hi", "--dialect", "beta",
                             model=MODEL, token="sk-good")
    assert run.code == 1, run
    assert up.sessions[-1].headers.get("OpenAI-Beta") == "realtime=v1"
    assert "beta_api_shape_disabled" in run.stderr and "4000" in run.stderr


async def test_mic_says_clearly_why_it_cannot_run(setup):
    run = await setup.talk("--mic")
    assert run.code == 1, run
    assert any(why in run.stderr for why in ("'mic' extra", "PortAudio", "no microphone",
                                             "audio devices")), run
    assert not setup.upstream.sessions  # it failed before connecting


@pytest.mark.parametrize("args, message", [
    ((), "exactly one of --file PATH, --mic or --text"),
    (("--text", "a", "--mic"), "got --mic and --text"),
    (("--file", "/nonexistent.wav"), "no such file"),
    (("--text", "a", "--tool-result", "x=1"), "which --tools does not declare"),
    (("--text", "a", "--audio-format", "opus"), "unknown audio format"),
    (("--text", "a", "--dialect", "v2"), "--dialect must be ga or beta"),
    (("--text", "a", "--url", "ftp://x"), "--url must look like ws://host:port"),
])
def test_usage_errors_exit_2_before_connecting(args, message):
    result = CliRunner().invoke(app, ["talk", "--url", "ws://127.0.0.1:9", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
