"""A real browser calls the gateway over WebRTC: headless Chromium (Debian's),
its fake microphone playing a spoken question from a WAV, on a page served
from another origin (CORS), with the page's offer stripped to its 127.0.0.1
candidates (this machine allows loopback only).  Against the local engine
(offline, real models) and against the stand-in upstream (the OpenAI
channel)."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from tests.browser import chromium
from tests.conftest import start_gateway
from tests.engine.helpers import synthesize_pcm24k
from tests.standin import Script, StandIn
from tests.test_ledger_e2e import FAST, closed_sessions, eventually, table
from tests.test_webrtc import loud_ms

LEAD_MS, TAIL_MS = 2000, 20000   # the call connects in the lead; the tail outlasts the test

PAGE = """<!doctype html><meta charset="utf-8"><title>call</title><script>
window.events = []; window.levels = [];
async function call(gateway, token, model, update) {
  const pc = new RTCPeerConnection({iceServers: []});
  const dc = pc.createDataChannel("oai-events");
  dc.onmessage = (e) => window.events.push(JSON.parse(e.data));
  dc.onopen = () => { if (update) dc.send(JSON.stringify(update)); };
  const mic = await navigator.mediaDevices.getUserMedia({audio: {
    echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  pc.addTrack(mic.getAudioTracks()[0], mic);
  pc.ontrack = (e) => {
    const stream = e.streams[0] || new MediaStream([e.track]);
    const el = new Audio(); el.srcObject = stream; el.muted = true; el.play();  // feeds WebAudio
    const ctx = new AudioContext();
    const an = ctx.createAnalyser(); an.fftSize = 1024;
    ctx.createMediaStreamSource(stream).connect(an);
    const buf = new Float32Array(an.fftSize);
    setInterval(() => {
      an.getFloatTimeDomainData(buf);
      let sum = 0; for (const v of buf) sum += v * v;
      window.levels.push(Math.sqrt(sum / buf.length));
    }, 20);
  };
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((ok) => pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && ok()));
  }
  // loopback only: a browser offers every interface it has
  const sdp = pc.localDescription.sdp.split("\\r\\n")
    .filter((l) => !l.startsWith("a=candidate:") || l.includes(" 127.0.0.1 ")).join("\\r\\n");
  const r = await fetch(gateway + "/v1/realtime/calls?model=" + model, {method: "POST", body: sdp,
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/sdp"}});
  window.status = r.status; window.callLocation = r.headers.get("Location");
  const body = await r.text();
  if (r.status !== 201) return r.status;
  await pc.setRemoteDescription({type: "answer", sdp: body});
  window.pc = pc;
  return r.status;
}
</script>"""


def wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(pcm)
    return path


async def _page(_: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def page_server() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/", _page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def browser_call(g, token: str, model: str, question: bytes, tmp_path: Path,
                       update: dict | None, until: str, timeout: float = 25.0) -> tuple[list, list]:
    """Place the call from a page on its own origin; the page's events and
    remote audio levels once ``until`` arrived (and 1.5 s more)."""
    mic = wav(tmp_path / "question.wav", bytes(48 * LEAD_MS) + question + bytes(48 * TAIL_MS))
    runner, origin = await page_server()
    g.gw.settings.cors_origins = [origin]        # the page's origin may call
    try:
        async with chromium(fake_audio=mic,
                            extra_flags=["--allow-loopback-in-peer-connection"]) as browser:
            page = await browser.new_page()
            await page.goto(origin + "/")
            status = await page.evaluate("([g, t, m, u]) => call(g, t, m, u)",
                                         [g.http, token, model, update])
            assert status == 201
            async with asyncio.timeout(timeout):
                while until not in [e["type"] for e in await page.evaluate("window.events")]:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
            events = await page.evaluate("window.events")
            levels = await page.evaluate("window.levels")
            await page.close()
    finally:
        await runner.cleanup()
    return events, levels


@pytest.mark.slow
async def test_chromium_calls_the_local_engine(tmp_path):
    from openopen8.engine.config import EngineConfig
    from openopen8.engine.runtime import get_engine
    get_engine(EngineConfig()).load_sync()
    g = await start_gateway(tmp_path, local_engine=True, **FAST)
    try:
        token = await g.token()
        update = {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}}}
        events, levels = await browser_call(
            g, token, "openopen8-local", synthesize_pcm24k("What is the capital of France?"),
            tmp_path, update, until="output_audio_buffer.stopped", timeout=30)
        kinds = [e["type"] for e in events]
        assert kinds[0] == "session.created"
        assert kinds.index("input_audio_buffer.speech_started") < \
            kinds.index("input_audio_buffer.speech_stopped")
        heard = next(e for e in events
                     if e["type"] == "conversation.item.input_audio_transcription.completed")
        assert "capital" in heard["transcript"].lower(), heard
        done = next(e for e in events if e["type"] == "response.done")
        assert done["response"]["usage"]["output_token_details"]["audio_tokens"] > 0
        assert "response.output_audio.delta" not in kinds      # audio came on the track
        assert sum(1 for v in levels if v > 0.01) >= 10, max(levels or [0])   # audible reply
        # the page closed: the session ended, and the ledger has its row
        [row] = await eventually(lambda: closed_sessions(g), timeout=15)
        assert row["via"] == "webrtc" and row["model"] == "openopen8-local"
        assert [r for r in await table(g, "ledger") if r["kind"] == "response"]
    finally:
        await g.stop()


async def test_chromium_calls_the_openai_channel_and_the_appends_match_the_speech(tmp_path):
    async with StandIn(ping_interval=0) as up:
        up.script = Script(text="Paris.", audio_deltas=8)
        g = await start_gateway(tmp_path, **FAST)
        try:
            await g.channel("standin", up.base_url, ["gpt-realtime"])
            token = await g.token()
            question = synthesize_pcm24k("What is the capital of France?", lead_ms=0)
            events, levels = await browser_call(g, token, "gpt-realtime", question, tmp_path,
                                                None, until="output_audio_buffer.stopped")
            kinds = [e["type"] for e in events]
            assert "input_audio_buffer.speech_started" in kinds and "response.done" in kinds
            assert sum(1 for v in levels if v > 0.01) >= 10
            s = await up.session()
            assert s.input_formats == [{"type": "audio/pcm", "rate": 24000}]
            spoken, received = loud_ms(question, 300), loud_ms(bytes(s.input_audio), 300)
            assert abs(received - spoken) <= 0.05 * spoken, (received, spoken)
            [row] = await eventually(lambda: closed_sessions(g), timeout=15)
            assert row["via"] == "webrtc"
        finally:
            await g.stop()


async def test_a_killed_browser_ends_its_call_with_the_usage_settled(tmp_path):
    """Chromium is killed mid-answer (SIGKILL: no hang-up, no SCTP abort):
    the gateway's liveness watchdog ends the session and the response in
    flight is billed."""
    import os
    import signal

    import psutil

    async with StandIn(ping_interval=0) as up:
        up.script = Script(text="A long answer.", audio_deltas=40, delay=0.05)
        g = await start_gateway(tmp_path, **FAST, webrtc_idle_seconds=1.0)
        runner, origin = await page_server()
        g.gw.settings.cors_origins = [origin]
        try:
            await g.channel("standin", up.base_url, ["gpt-realtime"])
            token = await g.token()
            question = synthesize_pcm24k("What is the capital of France?", lead_ms=0)
            mic = wav(tmp_path / "q.wav", bytes(48 * LEAD_MS) + question + bytes(48 * TAIL_MS))
            killed = []
            try:
                async with chromium(fake_audio=mic,
                                    extra_flags=["--allow-loopback-in-peer-connection"]) as browser:
                    page = await browser.new_page()
                    await page.goto(origin + "/")
                    assert await page.evaluate("([g, t, m]) => call(g, t, m, null)",
                                               [g.http, token, "gpt-realtime"]) == 201
                    async with asyncio.timeout(25):
                        while "output_audio_buffer.started" not in [
                                e["type"] for e in await page.evaluate("window.events")]:
                            await asyncio.sleep(0.1)
                    for p in psutil.Process().children(recursive=True):   # ours: chromium's
                        if "chrom" in p.name().lower():
                            os.kill(p.pid, signal.SIGKILL)
                            killed.append(p.pid)
            except AssertionError:
                raise
            except Exception:  # noqa: BLE001 - Playwright finds its browser gone on the way out
                pass
            assert killed
            [row] = await eventually(lambda: closed_sessions(g), timeout=15)
            assert row["via"] == "webrtc" and row["closed_by"] == "client"
            billed = [r for r in await table(g, "ledger") if r["kind"] == "response"]
            assert len(billed) == 1 and billed[0]["cost_nanos"] > 0
        finally:
            await runner.cleanup()
            await g.stop()
