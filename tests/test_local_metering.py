"""The built-in local engine costs nothing, whatever model names the client
writes: the channel that served the session decides the price, and the ledger
names the model that really ran (issue 13, item 1)."""

from __future__ import annotations

import asyncio
import base64
import json
import wave

import aiohttp
import pytest

from openopen8.billing import PriceTable, Tokens
from openopen8.engine.config import EngineConfig
from openopen8.engine.runtime import get_engine
from openopen8.events import Event
from openopen8.relay.stage import Session
from openopen8.stages.metering import MeteringStage
from openopen8.store.base import ChannelRecord
from tests.conftest import start_gateway
from tests.engine.helpers import question_audio, tone_pcm24k  # noqa: F401
from tests.talkkit import gateway_root, run_talk
from tests.test_ledger_e2e import FAST, closed_sessions, eventually, spent, table, token

MODEL = "openopen8-local"
FAKE = {"vad": "fake", "stt": "fake", "llm": "fake", "tts": "fake"}
TRANSCRIBED = "conversation.item.input_audio_transcription.completed"


async def ledger_rows(g, n: int) -> list[dict]:
    async def enough():
        rows = await table(g, "ledger")
        return rows if len(rows) >= n else None
    return await eventually(enough)


@pytest.mark.slow
async def test_talk_with_its_default_transcription_costs_nothing_on_the_real_local_engine(
        tmp_path, question_audio):
    """``openopen8 talk --file`` as a new user runs it: its default
    ``--transcribe gpt-4o-mini-transcribe`` used to be charged at the fallback
    price (USD 0.0011 a question) on the offline engine."""
    engine = get_engine(EngineConfig())
    engine.load_sync()
    g = await start_gateway(tmp_path, local_engine=True, **FAST)
    try:
        secret, token_id = await token(g, "offline", quota_nanos=10**9)   # USD 1
        wav = tmp_path / "q.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(24000)
            w.writeframes(question_audio)
        run = await run_talk(gateway_root(g.url), "--file", str(wav), "--timeout", "60",
                             token=secret, model=MODEL, timeout=120)
        assert run.code == 0, str(run)
        await eventually(lambda: closed_sessions(g))
        rows = await ledger_rows(g, 2)
        by_kind = {r["kind"]: r for r in rows}
        tr, resp = by_kind["transcription"], by_kind["response"]
        assert (tr["cost_nanos"], tr["fallback"]) == (0, False), tr
        # the row names the STT model that ran, not the name the client wrote
        assert tr["model"] == engine.backends.stt.name == "whisper-tiny.en", tr
        assert tr["seconds"] > 0
        assert (resp["model"], resp["cost_nanos"], resp["fallback"]) == (MODEL, 0, False)
        assert await spent(g, token_id) == 0
    finally:
        await g.stop()


async def one_turn(g, secret: str, transcription: dict) -> dict:
    """A manual turn with input transcription set to ``transcription``; the
    ``completed`` event the client saw."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(g.url + f"?model={MODEL}",
                                   headers={"Authorization": f"Bearer {secret}"}) as ws:
            async def until(kind: str) -> dict:
                while True:
                    ev = json.loads(await asyncio.wait_for(ws.receive_str(), 20))
                    assert ev["type"] != "error", ev
                    if ev["type"] == kind:
                        return ev

            await until("session.created")
            await ws.send_str(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "output_modalities": ["text"],
                "audio": {"input": {"transcription": transcription, "turn_detection": None}}}}))
            updated = await until("session.updated")
            # the session echoes the client's choice, as OpenAI does
            assert updated["session"]["audio"]["input"]["transcription"]["model"] == \
                transcription["model"]
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(tone_pcm24k(600)).decode()}))
            await ws.send_str(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send_str(json.dumps({"type": "response.create"}))
            completed = await until(TRANSCRIBED)
            await until("response.done")
    return completed


@pytest.mark.parametrize("asked", [
    "gpt-4o-mini-transcribe",        # token-priced: seconds fell to the fallback price
    "whisper-1",                     # priced by the minute: was charged USD 0.006/min
    "whisper-1-2025-01-01",          # a dated alias of a priced model
    "no-such-asr",                   # no price at all
])
@pytest.mark.parametrize("channel", ["built-in", "operator's local channel"])
async def test_any_transcription_name_costs_nothing_on_a_local_channel(tmp_path, asked, channel):
    g = await start_gateway(tmp_path, local_engine=True, local=FAKE, **FAST)
    try:
        if channel != "built-in":
            await g.channel("offline", "", [MODEL], type="local", key="")
        secret, token_id = await token(g, "t", quota_nanos=10**9)
        completed = await one_turn(g, secret, {"model": asked})
        # the engine's usage says which model ran (an extra field the SDK keeps)
        assert completed["usage"] == {"type": "duration", "seconds": 0.6, "model": "fake"}
        await eventually(lambda: closed_sessions(g))
        rows = await ledger_rows(g, 2)
        assert {r["kind"] for r in rows} == {"transcription", "response"}
        assert all(r["cost_nanos"] == 0 and not r["fallback"] for r in rows), rows
        tr = next(r for r in rows if r["kind"] == "transcription")
        assert tr["model"] == "fake"
        assert tr["channel"] == ("local" if channel == "built-in" else "offline")
        assert await spent(g, token_id) == 0
    finally:
        await g.stop()


async def test_an_operator_price_for_the_local_engine_applies_to_every_record(tmp_path):
    """The local price is the operator's to set; it then applies whatever the
    client named (here a per-minute price, charged for the transcription)."""
    g = await start_gateway(tmp_path, local_engine=True, local=FAKE,
                            prices={MODEL: {"per_minute": 1.0}}, **FAST)
    try:
        secret, token_id = await token(g, "t")
        await one_turn(g, secret, {"model": "gpt-4o-mini-transcribe"})
        await eventually(lambda: closed_sessions(g))
        rows = await ledger_rows(g, 2)
        tr = next(r for r in rows if r["kind"] == "transcription")
        assert (tr["model"], tr["cost_nanos"], tr["fallback"]) == ("fake", 10**7, False)  # 0.6 s
        assert await spent(g, token_id) == 10**7
    finally:
        await g.stop()


# ---- the stage alone: a remote channel still prices the model the upstream names ----------

class Sink:
    def __init__(self) -> None:
        self.rows: list = []

    def record(self, row) -> None:
        self.rows.append(row)

    def opened(self, sid, channel) -> None:
        pass

    def closed(self, end, token_id) -> None:
        pass


def test_a_remote_channel_prices_the_transcription_model_the_upstream_names():
    m = MeteringStage(Sink(), PriceTable(), token_id=1)
    s = Session(id="sess_unit", model="gpt-realtime")
    s.channel = ChannelRecord(id=1, name="openai", type="openai", base_url="", models=[])
    m.on_open(s)
    m.on_server(Event(json.dumps({"type": "session.updated", "session": {
        "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}})), s)
    m.on_server(Event(json.dumps({"type": TRANSCRIBED, "item_id": "i", "content_index": 0,
                                  "transcript": "hi", "usage": {"type": "duration", "seconds": 60,
                                                                "model": "gpt-realtime-whisper"}})), s)
    [row] = m.sink.rows
    assert (row.model, row.cost_nanos, row.fallback) == ("gpt-realtime-whisper", 17_000_000, False)
    assert row.tokens == Tokens(seconds=60.0)
