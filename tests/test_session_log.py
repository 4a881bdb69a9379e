"""The session log: the transcript stage (lists in, turns out), the chain
having it only when logging is on, a real session through the gateway and
the stand-in whose turns -- the user's transcription, a tool call, its
result, the assistant's words, with usage and cost -- the admin API shows,
and the retention cleanup."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta

import aiohttp
import websockets

from openopen8.billing import PriceTable
from openopen8.events import Event
from openopen8.pipeline import build_chain
from openopen8.relay.stage import Chain, Session
from openopen8.stages.transcripts import TranscriptStage
from openopen8.store.base import TokenRecord, utcnow
from openopen8.store.console_sql import Turn
from openopen8.turnlog import TurnLog
from tests.conftest import start_gateway
from tests.standin import Script, StandIn, usage

ADMIN = "adm-log-1"


class Sink:
    def __init__(self) -> None:
        self.turns: list[Turn] = []

    def add(self, turns: list[Turn]) -> None:
        self.turns.extend(turns)


def ev(**data) -> Event:
    return Event(raw=json.dumps(data))


def test_the_stage_makes_turns_and_changes_no_event():
    sink = Sink()
    stage = TranscriptStage(sink, PriceTable({}, {}))
    chain, s = Chain([stage]), Session(id="sess_1", model="gpt-realtime")
    chain.open(s)
    events = [
        ("s", ev(type="conversation.item.input_audio_transcription.completed", item_id="i1",
                 content_index=0, transcript="What's the weather?",
                 usage={"type": "duration", "seconds": 2})),
        ("s", ev(type="response.function_call_arguments.done", response_id="r1", item_id="i2",
                 output_index=0, call_id="call_1", name="weather", arguments='{"city":"Oslo"}')),
        ("s", ev(type="response.done", response={"id": "r1", "status": "completed",
                                                 "usage": usage()})),
        ("c", ev(type="conversation.item.create", item={
            "type": "function_call_output", "call_id": "call_1", "output": '{"sky":"clear"}'})),
        ("s", ev(type="response.output_audio_transcript.done", response_id="r2", item_id="i3",
                 output_index=0, content_index=0, transcript="It is clear in Oslo.")),
        ("s", ev(type="response.output_audio.delta", response_id="r2", delta="AAAA")),
        ("s", ev(type="response.done", response={"id": "r2", "status": "completed",
                                                 "usage": usage()})),
        ("c", ev(type="conversation.item.create", item={
            "type": "message", "role": "user", "content": [{"type": "input_text",
                                                            "text": "Thanks"}]})),
        ("s", ev(type="response.output_text.done", response_id="r3", item_id="i4",
                 output_index=0, content_index=0, text="You're welcome")),
    ]
    for side, e in events:
        out = chain.client(e, s) if side == "c" else chain.server(e, s)
        assert out == [e]                      # passed on untouched
    chain.close(s)                             # r3 never finished: kept without usage
    got = [(t.seq, t.kind, t.text, t.name, t.ref) for t in sink.turns]
    assert got == [
        (1, "user", "What's the weather?", None, "i1"),
        (2, "tool_call", '{"city":"Oslo"}', "weather", "call_1"),
        (3, "tool_result", '{"sky":"clear"}', None, "call_1"),
        (4, "assistant", "It is clear in Oslo.", None, "i3"),
        (5, "user", "Thanks", None, None),
        (6, "assistant", "You're welcome", None, "i4")]
    by_seq = {t.seq: t for t in sink.turns}
    assert by_seq[2].cost_nanos > 0 and by_seq[2].usage["output_tokens"] == 188
    assert by_seq[4].cost_nanos == by_seq[2].cost_nanos
    assert by_seq[1].cost_nanos > 0                 # 2 s of transcription, priced
    assert by_seq[6].usage is None and by_seq[6].cost_nanos is None
    # audio is never read: the stage does not even see deltas
    assert not stage.sees_server("response.output_audio.delta", s)
    assert not stage.sees_client("input_audio_buffer.append", s)


async def test_the_chain_has_the_stage_only_when_logging_is_on(tmp_path):
    g = await start_gateway(tmp_path, log_transcripts=False)
    try:
        def names(log):
            tok = TokenRecord(id=1, name="t", prefix="x", log_transcripts=log)
            return [type(st).__name__ for st in
                    build_chain(g.gw, Session(id="s", model="m", token=tok)).stages]
        assert "TranscriptStage" not in names(None)
        assert "TranscriptStage" in names(True)
        g.gw.settings.log_transcripts = True
        assert "TranscriptStage" in names(None)
        assert "TranscriptStage" not in names(False)      # the token's own setting wins
    finally:
        await g.stop()


async def test_a_real_session_logged_and_shown_by_the_admin_api(tmp_path):
    async with StandIn(input_transcript="what is the weather in Oslo") as up:
        up.scripts.append(Script(function_call=("weather", '{"city":"Oslo"}')))
        up.scripts.append(Script(text="It is clear in Oslo."))
        g = await start_gateway(tmp_path, admin_token=ADMIN)
        try:
            async with aiohttp.ClientSession(g.http, headers={
                    "Authorization": f"Bearer {ADMIN}"}) as http:
                await http.post("/admin/channels", json={
                    "name": "up", "type": "openai", "base_url": up.base_url, "key": "sk-good",
                    "models": ["gpt-realtime"]})
                async with http.post("/admin/tokens", json={"name": "logged",
                                                            "log_transcripts": True}) as r:
                    logged = (await r.json())["secret"]
                async with http.post("/admin/tokens", json={"name": "quiet"}) as r:
                    quiet = (await r.json())["secret"]
                await converse(g.url, logged)
                await converse(g.url, quiet)
                async with http.get("/admin/sessions") as r:
                    ids = {x["token"]: x["id"] for x in (await r.json())["sessions"]}
                sid, quiet_sid = ids["logged"], ids["quiet"]
                for _ in range(100):
                    async with http.get(f"/admin/sessions/{sid}") as r:
                        detail = await r.json()
                    if detail["closed_at"] and len(detail["turns"]) >= 4:
                        break
                    await asyncio.sleep(0.05)
                async with http.get(f"/admin/sessions/{quiet_sid}") as r:
                    assert (await r.json())["turns"] == []
        finally:
            await g.stop()
    turns = [(t["kind"], t["text"], t["name"]) for t in detail["turns"]]
    assert turns == [("user", "what is the weather in Oslo", None),
                     ("tool_call", '{"city":"Oslo"}', "weather"),
                     ("tool_result", '{"sky":"clear"}', None),
                     ("assistant", "It is clear in Oslo.", None)]
    # a response's usage and cost on its last turn (a tool's result is the client's: none)
    costs = [t["cost_nanos"] for t in detail["turns"]]
    assert costs[2] is None and None not in costs[:2] + costs[3:]
    assert detail["turns"][1]["usage"]["output_tokens"] > 0
    # the turns' costs are the ledger's, row by row (transcription, two responses)
    ledger = sorted(r["cost_nanos"] for r in detail["ledger"])
    assert sorted(c for c in costs if c is not None) == ledger


async def converse(url: str, secret: str) -> None:
    """One spoken question, a tool call and its result, and the answer."""
    async with websockets.connect(url + "?model=gpt-realtime", additional_headers={
            "Authorization": f"Bearer {secret}"}) as ws:
        created = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"},
                                                    "turn_detection": None}},
            "tools": [{"type": "function", "name": "weather", "parameters": {}}]}}))
        audio = base64.b64encode(b"\x10\x00" * 24 * 200).decode()   # 200 ms
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "response.create"}))
        call_id = None
        while True:
            e = json.loads(await ws.recv())
            if e["type"] == "response.function_call_arguments.done":
                call_id = e["call_id"]
            if e["type"] == "response.done":
                break
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call_id, "output": '{"sky":"clear"}'}}))
        await ws.send(json.dumps({"type": "response.create"}))
        while json.loads(await ws.recv())["type"] != "response.done":
            pass
        assert created["type"] == "session.created"


async def test_retention_deletes_old_turns(tmp_path):
    g = await start_gateway(tmp_path, log_retention_days=7)
    try:
        store, now = g.gw.store, utcnow()
        await store.write_turns([
            Turn("sess_old", 1, "user", "old", created_at=now - timedelta(days=8)),
            Turn("sess_new", 1, "user", "new", created_at=now - timedelta(days=6))])
        log = TurnLog(store, retention_days=7)
        assert await log.cleanup() == 1
        assert (await store.get_session("sess_new")) is None     # no sessions row: no detail
        assert await store.delete_turns_before(now) == 1          # only the new one was left
        assert await TurnLog(store, retention_days=0).cleanup() == 0
    finally:
        await g.stop()
