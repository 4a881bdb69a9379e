"""The stand-in OpenAI upstream behaves like the live GA service (protocol.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from array import array

import aiohttp
import pytest
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from tests.standin import Script, StandIn, decode, tone, until, usage

GA_PATH = "/v1/realtime?model=gpt-realtime"
AUTH = {"Authorization": "Bearer sk-good"}
MANUAL = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
PCM = {"type": "audio/pcm", "rate": 24000}


def user_text(text: str = "hi", **extra) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}],
            **extra}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def joined(events: list[dict], etype: str) -> str:
    return "".join(e["delta"] for e in events if e["type"] == etype)


def audio_of(events: list[dict], etype: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == etype)


@pytest.fixture
async def up():
    async with StandIn() as standin:
        yield standin


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


class Raw:
    """A raw aiohttp client that keeps the wire text of every frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.texts: list[str] = []

    async def send(self, **event) -> None:
        await self.ws.send_str(json.dumps(event))

    async def recv(self, timeout: float = 2.0) -> dict | None:
        msg = await self.ws.receive(timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return None
        self.texts.append(msg.data)
        return json.loads(msg.data)

    async def until(self, etype: str) -> list[dict]:
        """Events up to and including the first of type ``etype``."""
        events: list[dict] = []
        while True:
            ev = await self.recv()
            assert ev is not None, f"closed before {etype}: {[e['type'] for e in events]}"
            events.append(ev)
            if ev["type"] == etype:
                return events


async def raw(up: StandIn, http: aiohttp.ClientSession, path: str = GA_PATH,
              headers: dict | None = None, created: bool = True, **kw) -> Raw:
    ws = await http.ws_connect(f"ws://127.0.0.1:{up.port}{path}",
                               headers=AUTH if headers is None else headers, **kw)
    client = Raw(ws)
    if created:
        assert (await client.recv())["type"] == "session.created"
    return client


def rms(samples) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


# -- connection --------------------------------------------------------------------------------

async def test_sdk_session_created_and_update(up: StandIn):
    client = AsyncOpenAI(base_url=up.base_url, api_key="sk-good")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        s = created.session
        assert (s.type, s.model, s.output_modalities) == ("realtime", "gpt-realtime", ["audio"])
        assert s.id.startswith("sess_")
        assert s.audio.input.format.rate == 24000 and s.audio.output.format.type == "audio/pcm"
        assert s.audio.input.turn_detection.type == "server_vad"

        await conn.session.update(session={"type": "realtime", "instructions": "Be brief.",
                                           "audio": {"output": {"voice": "marin"}}})
        updated = await conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.instructions == "Be brief."
        assert updated.session.audio.output.voice == "marin"
        assert updated.session.audio.input.turn_detection.silence_duration_ms == 200  # merged
    session = up.sessions[-1]
    assert session.headers["Authorization"] == "Bearer sk-good"
    assert [e["type"] for e in session.received] == ["session.update"]


async def test_every_server_frame_has_type_first_and_event_id(up, http):
    c = await raw(up, http, created=False)
    await c.send(type="conversation.item.create", item=user_text())
    await c.send(type="response.create")
    await c.until("rate_limits.updated")
    assert len(c.texts) > 10
    for text in c.texts:
        assert text.startswith('{"type":"')
        assert json.loads(text)["event_id"].startswith("event_")


async def test_bad_key_closes_3000(up: StandIn):
    client = AsyncOpenAI(base_url=up.base_url, api_key="sk-nope")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        err = await conn.recv()
        assert err.type == "error"
        assert (err.error.type, err.error.code) == ("invalid_request_error", "invalid_api_key")
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd.code == 3000
    assert closed.value.rcvd.reason == "invalid_request_error.invalid_api_key"


async def test_missing_key_closes_3000(up, http):
    c = await raw(up, http, headers={}, created=False)
    err = await c.recv()
    assert err["error"]["code"] is None
    assert err["error"]["message"] == "Missing bearer or basic authentication in header"
    assert await c.recv() is None
    assert (c.ws.close_code, up.sessions[-1].close_code) == (3000, 3000)


async def test_beta_header_closes_4000(up: StandIn):
    client = AsyncOpenAI(base_url=up.base_url, api_key="sk-good")
    async with client.realtime.connect(model="gpt-realtime",
                                       extra_headers={"OpenAI-Beta": "realtime=v1"}) as conn:
        err = await conn.recv()
        assert err.error.code == "beta_api_shape_disabled"
        assert err.error.message.startswith("The Realtime Beta API is no longer supported.")
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd.code == 4000


@pytest.mark.parametrize("path, code", [
    ("/v1/realtime", "missing_model"),
    ("/v1/realtime?model=gpt-nope", "invalid_model"),
])
async def test_model_errors_close_4000(up, http, path, code):
    c = await raw(up, http, path=path, created=False)
    assert (await c.recv())["error"]["code"] == code
    assert await c.recv() is None
    assert c.ws.close_code == 4000


async def test_browser_subprotocols(up, http):
    c = await raw(up, http, headers={}, created=False,
                  protocols=("realtime", "openai-insecure-api-key.sk-good", "openai-beta.realtime-v1"))
    assert c.ws.protocol == "realtime"
    assert (await c.recv())["error"]["code"] == "beta_api_shape_disabled"
    c = await raw(up, http, headers={}, protocols=("realtime", "openai-insecure-api-key.sk-good"))
    assert c.ws.protocol == "realtime"


async def test_handshake_refusal_and_delay(up, http):
    up.handshake_status = 500
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(up.url + "?model=gpt-realtime", headers=AUTH)
    assert refused.value.status == 500
    up.handshake_status, up.handshake_delay = None, 0.5
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(http.ws_connect(up.url + "?model=gpt-realtime", headers=AUTH), 0.1)
    assert up.attempts == 2 and up.sessions == []


async def test_pings_and_pongs(http):
    async with StandIn(ping_interval=0.05) as up:
        c = await raw(up, http)
        reader = asyncio.create_task(c.ws.receive())  # aiohttp answers pings while reading
        await until(lambda: len(up.sessions[-1].pongs) >= 2)
        reader.cancel()
        assert up.sessions[-1].pings_sent >= 2


async def test_bench_echo(up, http):
    c = await raw(up, http)
    await c.send(type="bench.echo", n=7, pad="x" * 100)
    assert await c.recv() == {"type": "bench.echo", "n": 7, "pad": "x" * 100}
    assert up.sessions[-1].received == []


# -- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("session, code, param", [
    ({"instructions": "x"}, "missing_required_parameter", "session.type"),
    ({"type": "realtime", "modalities": ["text"]}, "unknown_parameter", "session.modalities"),
    ({"type": "realtime", "temperature": 0.7}, "unknown_parameter", "session.temperature"),
    ({"type": "realtime", "voice": "ash"}, "unknown_parameter", "session.voice"),
    ({"type": "realtime", "input_audio_format": "pcm16"},
     "unknown_parameter", "session.input_audio_format"),
    ({"type": "realtime", "bogus_field": 1}, "unknown_parameter", "session.bogus_field"),
    ({"type": "realtime", "instructions": "changed",
      "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
     "integer_below_min_value", "session.audio.input.format.rate"),
])
async def test_session_update_rejected_whole(up, http, session, code, param):
    c = await raw(up, http)
    await c.send(type="session.update", event_id="evt_1", session=session)
    err = (await c.recv())["error"]
    assert (err["code"], err["param"], err["event_id"]) == (code, param, "evt_1")
    await c.send(type="session.update", session={"type": "realtime"})  # still open, unchanged
    updated = await c.recv()
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] != "changed"
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


async def test_malformed_events_are_non_fatal(up, http):
    c = await raw(up, http)
    await c.ws.send_str("{not json")
    assert (await c.recv())["error"]["code"] == "invalid_json"
    await c.ws.send_bytes(b"\x00\x01")
    assert (await c.recv())["error"]["code"] == "invalid_event"
    await c.send(event_id="e2", foo=1)
    err = (await c.recv())["error"]
    assert (err["code"], err["event_id"]) == ("invalid_event", "e2")
    assert err["message"] == "The 'type' field is missing."
    await c.send(type="transcription_session.update", event_id="e3", session={})
    err = (await c.recv())["error"]
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "type", "e3")
    assert "'response.create'" in err["message"]
    await c.send(type="input_audio_buffer.clear")
    assert (await c.recv())["type"] == "input_audio_buffer.cleared"


# -- input audio -----------------------------------------------------------------------------------

async def test_manual_commit_and_recording(up, http):
    c = await raw(up, http)
    await c.send(type="session.update", session=MANUAL)
    await c.recv()
    pcm = tone(PCM, 60)
    await c.send(type="input_audio_buffer.append", audio=b64(pcm))
    await c.send(type="input_audio_buffer.commit", event_id="c1")
    err = (await c.recv())["error"]
    assert (err["code"], err["event_id"]) == ("input_audio_buffer_commit_empty", "c1")
    assert "60.00ms" in err["message"]
    await c.send(type="input_audio_buffer.append", audio=b64(pcm))
    await c.send(type="input_audio_buffer.commit")
    committed, added, done = [await c.recv() for _ in range(3)]
    assert committed["type"] == "input_audio_buffer.committed"
    assert (added["type"], done["type"]) == ("conversation.item.added", "conversation.item.done")
    assert added["item"]["id"] == committed["item_id"]
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    session = up.sessions[-1]
    assert session.input_audio == pcm + pcm
    assert session.input_formats == [{"type": "audio/pcm", "rate": 24000}]
    assert [e["type"] for e in session.received][-2:] == ["input_audio_buffer.append",
                                                          "input_audio_buffer.commit"]


async def test_g711_commit_threshold(up, http):
    c = await raw(up, http)
    await c.send(type="session.update", session={"type": "realtime", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": None}}})
    await c.recv()
    await c.send(type="input_audio_buffer.append", audio=b64(b"\xff" * 799))
    await c.send(type="input_audio_buffer.commit")
    assert (await c.recv())["error"]["code"] == "input_audio_buffer_commit_empty"
    await c.send(type="input_audio_buffer.append", audio=b64(b"\xff" * 800))
    await c.send(type="input_audio_buffer.commit")
    assert (await c.recv())["type"] == "input_audio_buffer.committed"


async def test_input_transcription_after_commit(http):
    async with StandIn(input_transcript="what time is it") as up:
        c = await raw(up, http)
        await c.send(type="session.update", session={"type": "realtime", "audio": {"input": {
            "turn_detection": None, "transcription": {"model": "gpt-4o-mini-transcribe"}}}})
        await c.recv()
        await c.send(type="input_audio_buffer.append", audio=b64(bytes(4800)))
        await c.send(type="input_audio_buffer.commit")
        events = await c.until("conversation.item.input_audio_transcription.completed")
        assert events[-1]["transcript"] == "what time is it"
        assert events[-1]["item_id"] == events[0]["item_id"]


async def test_server_vad_turn(up, http):
    up.script = Script(text="Sure.", audio_deltas=1)
    c = await raw(up, http)
    vad = {"type": "server_vad", "prefix_padding_ms": 0, "silence_duration_ms": 200}
    await c.send(type="session.update",
                 session={"type": "realtime", "audio": {"input": {"turn_detection": vad}}})
    await c.recv()
    audio = bytes(100 * 48) + tone(PCM, 300) + bytes(240 * 48)  # 40 ms left after the stop
    for i in range(0, len(audio), 20 * 48):  # 20 ms appends
        await c.send(type="input_audio_buffer.append", audio=b64(audio[i:i + 960]))
    events = await c.until("response.done")
    types = [e["type"] for e in events]
    assert types[:6] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", "conversation.item.added",
                         "conversation.item.done", "response.created"]
    started, stopped, committed = events[:3]
    assert started["audio_start_ms"] == 100
    assert stopped["audio_end_ms"] == 100 + 300 + 200
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert events[-1]["response"]["status"] == "completed"
    # the server committed already, so a manual commit is empty
    await c.send(type="input_audio_buffer.commit")
    assert (await c.until("error"))[-1]["error"]["code"] == "input_audio_buffer_commit_empty"


# -- responses ----------------------------------------------------------------------------------

AUDIO_ORDER = ["response.created", "response.output_item.added", "conversation.item.added",
               "response.content_part.added"]
AUDIO_DONE = ["response.output_audio.done", "response.output_audio_transcript.done",
              "response.content_part.done", "conversation.item.done", "response.output_item.done",
              "response.done", "rate_limits.updated"]


async def test_audio_response_in_ga_order(up, http):
    up.script = Script(text="one two three four", audio_deltas=3, audio_delta_ms=50)
    c = await raw(up, http)
    await c.send(type="response.create")
    events = await c.until("rate_limits.updated")
    types = [e["type"] for e in events]
    assert types[:4] == AUDIO_ORDER and types[-7:] == AUDIO_DONE
    middle = types[4:-7]
    assert middle.count("response.output_audio.delta") == 3
    assert middle.count("response.output_audio_transcript.delta") == 4
    assert not any(".created" in t and t != "response.created" for t in types)
    deltas = [e for e in events if e["type"].endswith(".delta")]
    rid, item_id = events[0]["response"]["id"], events[1]["item"]["id"]
    assert all(d["response_id"] == rid and d["item_id"] == item_id for d in deltas)
    transcript = joined(events, "response.output_audio_transcript.delta")
    assert transcript == "one two three four"
    pcm = audio_of(events)
    assert len(pcm) == 3 * 50 * 48 and rms(array("h", pcm)) > 3000
    done = events[-2]["response"]
    assert done["status"] == "completed" and done["usage"] == usage()
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": transcript}]
    assert events[0]["response"]["usage"] is None


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
async def test_audio_output_honours_g711(up, http, fmt):
    up.script = Script(audio_deltas=2, audio_delta_ms=100)
    c = await raw(up, http)
    await c.send(type="session.update",
                 session={"type": "realtime", "audio": {"output": {"format": {"type": fmt}}}})
    await c.recv()
    await c.send(type="response.create")
    events = await c.until("response.done")
    data = audio_of(events)
    assert len(data) == 2 * 100 * 8
    samples = decode({"type": fmt}, data)
    assert 4500 < rms(samples) < 6500  # the 8000-amplitude sine survives G.711


async def test_sdk_text_response_with_usage(up: StandIn):
    numbers = usage(input_text=10, input_audio=0, cached_audio=0, output_text=5, output_audio=0)
    up.script = Script(text="Hello there friend", usage=numbers)
    client = AsyncOpenAI(base_url=up.base_url, api_key="sk-good")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Hi"}]})
        await conn.response.create()
        text, types = "", []
        async for ev in conn:
            types.append(ev.type)
            if ev.type == "response.output_text.delta":
                text += ev.delta
            if ev.type == "response.done":
                done = ev.response
                break
    assert text == "Hello there friend"
    assert "response.output_audio.delta" not in types
    assert types.index("response.output_text.done") < types.index("response.content_part.done")
    assert done.usage.total_tokens == 15 and done.usage.input_tokens == 10
    assert done.usage.input_token_details.cached_tokens_details.audio_tokens == 0
    assert done.output[0].content[0].type == "output_text"


async def test_sdk_function_call_round_trip(up: StandIn):
    up.script = Script(text="It is sunny in Paris.", function_call=("get_weather", '{"city": "Paris"}'))
    client = AsyncOpenAI(base_url=up.base_url, api_key="sk-good")
    tool = {"type": "function", "name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "tools": [tool]})
        await conn.response.create()
        args, events = "", []
        async for ev in conn:
            events.append(ev)
            if ev.type == "response.function_call_arguments.delta":
                args += ev.delta
            if ev.type == "rate_limits.updated":
                break
        done_args = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert args == done_args.arguments == '{"city": "Paris"}' and done_args.name == "get_weather"
        item = next(e for e in events if e.type == "response.output_item.done").item
        assert (item.type, item.status) == ("function_call", "completed")
        assert item.call_id == done_args.call_id
        assert events[-2].type == "response.done"
        assert events[-2].response.output[0].call_id == item.call_id
        assert not any(e.type.startswith("response.output_audio") for e in events)

        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": item.call_id, "output": '{"sky": "sunny"}'})
        assert (await conn.recv()).type == "conversation.item.added"
        assert (await conn.recv()).type == "conversation.item.done"
        await conn.response.create()
        transcript = ""
        async for ev in conn:
            if ev.type == "response.output_audio_transcript.done":
                transcript = ev.transcript
            if ev.type == "response.done":
                break
    assert transcript == "It is sunny in Paris." and ev.response.status == "completed"


async def test_active_response_and_cancel(up, http):
    up.script = Script(audio_deltas=50, delay=0.02)
    c = await raw(up, http)
    await c.send(type="response.cancel", event_id="x0")
    assert (await c.recv())["error"]["code"] == "response_cancel_not_active"
    await c.send(type="response.create")
    await c.until("response.output_audio.delta")
    await c.send(type="response.create", event_id="x1")
    err = (await c.until("error"))[-1]["error"]
    assert (err["code"], err["event_id"]) == ("conversation_already_has_active_response", "x1")
    await c.send(type="response.cancel")
    events = await c.until("response.done")
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    item_done = next(e for e in events if e["type"] == "response.output_item.done")
    assert item_done["item"]["status"] == "incomplete"
    assert sum(e["type"] == "response.output_audio.delta" for e in up.sessions[-1].sent) < 50


async def test_barge_in_cancels_with_turn_detected(up, http):
    up.scripts.append(Script(audio_deltas=50, delay=0.02))
    c = await raw(up, http)
    await c.send(type="response.create")
    await c.until("response.output_audio.delta")
    await c.send(type="input_audio_buffer.append", audio=b64(tone(PCM, 40)))
    events = await c.until("response.done")
    assert "input_audio_buffer.speech_started" in [e["type"] for e in events]
    assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"


async def test_scripted_close_mid_response(up, http):
    up.scripts.extend([
        Script(close_after="response.output_audio.delta", close_code=1011, close_reason="boom"),
        Script(close_after="response.output_audio.delta"),
    ])
    c = await raw(up, http)
    await c.send(type="response.create")
    await c.until("response.output_audio.delta")
    assert await c.recv() is None
    assert c.ws.close_code == 1011
    c = await raw(up, http)
    await c.send(type="response.create")
    await c.until("response.output_audio.delta")
    msg = await c.ws.receive(2)
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert c.ws.close_code == 1006  # no close frame from the server


async def test_duplicate_done_and_pushed_events(up, http):
    up.script = Script(duplicate_done=True, rate_limits=False)
    c = await raw(up, http)
    await c.send(type="response.create")
    first = (await c.until("response.done"))[-1]
    second = await c.recv()
    assert second["type"] == "response.done" and second["response"]["id"] == first["response"]["id"]
    await (await up.session()).send({"type": "made.up", "x": 1})
    pushed = await c.recv()
    assert pushed["type"] == "made.up" and pushed["x"] == 1 and pushed["event_id"]


async def test_on_event_hook_can_take_over(http):
    async def hook(session, event):
        if event["type"] == "response.create":
            await session.error("scripted failure", "server_error", type="server_error")
            return True
    async with StandIn(on_event=hook) as up:
        c = await raw(up, http)
        await c.send(type="response.create")
        assert (await c.recv())["error"]["code"] == "server_error"
        assert up.sessions[-1].active is None


async def test_large_append_accepted(up, http):
    c = await raw(up, http, compress=0, max_msg_size=0)
    await c.send(type="session.update", session=MANUAL)
    await c.recv()
    audio = bytes(11 * 1024 * 1024)  # 14.7 MiB of base64
    await c.send(type="input_audio_buffer.append", audio=b64(audio))
    await c.send(type="input_audio_buffer.commit")
    assert (await c.recv(5))["type"] == "input_audio_buffer.committed"
    assert len(up.sessions[-1].input_audio) == len(audio)


# -- conversation items ----------------------------------------------------------------------------

async def test_item_operations(up, http):
    up.script = Script(audio_deltas=2, audio_delta_ms=100, rate_limits=False)
    c = await raw(up, http)
    await c.send(type="conversation.item.create", item=user_text("a"))
    user = (await c.until("conversation.item.done"))[-1]["item"]
    await c.send(type="conversation.item.create", previous_item_id="root",
                 item={"id": "item_first", "type": "message", "role": "system",
                       "content": [{"type": "input_text", "text": "s"}]})
    added = (await c.until("conversation.item.done"))[0]
    assert added["previous_item_id"] is None
    assert [i["id"] for i in up.sessions[-1].items] == ["item_first", user["id"]]
    for op in ("retrieve", "delete", "truncate"):
        await c.send(type=f"conversation.item.{op}", item_id="item_nope", content_index=0,
                     audio_end_ms=0)
        assert (await c.recv())["error"]["code"] == f"item_{op}_invalid_item_id"
    await c.send(type="conversation.item.truncate", item_id=user["id"], content_index=0, audio_end_ms=0)
    assert (await c.recv())["error"]["code"] == "unsupported_content_type"

    await c.send(type="response.create")
    assistant = (await c.until("response.done"))[-1]["response"]["output"][0]
    truncate = {"type": "conversation.item.truncate", "item_id": assistant["id"], "content_index": 0}
    await c.send(**truncate, audio_end_ms=500)
    err = (await c.recv())["error"]
    assert err["code"] is None
    assert err["message"] == "Audio content of 200ms is already shorter than 500ms"
    await c.send(**truncate, audio_end_ms=150)
    assert (await c.recv())["type"] == "conversation.item.truncated"
    await c.send(type="conversation.item.retrieve", item_id=assistant["id"])
    retrieved = (await c.recv())["item"]
    assert retrieved["content"][0]["transcript"] == ""
    assert len(base64.b64decode(retrieved["content"][0]["audio"])) == 200 * 48
    await c.send(type="conversation.item.delete", item_id="item_first")
    deleted = await c.recv()
    assert (deleted["type"], deleted["item_id"]) == ("conversation.item.deleted", "item_first")
    assert [i["id"] for i in up.sessions[-1].items] == [user["id"], assistant["id"]]


# -- Azure ------------------------------------------------------------------------------------------

async def test_azure_ga_path(up, http):
    c = await raw(up, http, path="/openai/v1/realtime?model=gpt-realtime",
                  headers={"api-key": "sk-good"})
    await c.send(type="session.update", session={"type": "realtime"})
    assert (await c.recv())["session"]["object"] == "realtime.session"


async def test_azure_preview_speaks_beta(up, http):
    path = "/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-realtime"
    c = await raw(up, http, path=path, headers={"api-key": "sk-good", "OpenAI-Beta": "realtime=v1"},
                  created=False)
    created = (await c.recv())["session"]
    assert created["modalities"] == ["audio", "text"] and created["input_audio_format"] == "pcm16"
    assert "type" not in created and "audio" not in created
    await c.send(type="session.update", session={"type": "realtime"})
    assert (await c.recv())["error"]["param"] == "session.type"
    await c.send(type="session.update", session={"voice": "ash", "output_audio_format": "g711_ulaw",
                                                 "temperature": 0.7, "turn_detection": None})
    updated = (await c.recv())["session"]
    assert (updated["voice"], updated["output_audio_format"]) == ("ash", "g711_ulaw")
    assert updated["temperature"] == 0.7
    await c.send(type="conversation.item.create", item=user_text())
    assert (await c.recv())["type"] == "conversation.item.created"
    await c.send(type="response.create")
    events = await c.until("response.done")
    types = {e["type"] for e in events}
    assert {"response.audio.delta", "response.audio_transcript.delta", "response.audio.done"} <= types
    assert not types & {"response.output_audio.delta", "response.output_audio_transcript.delta",
                        "response.output_audio.done", "conversation.item.added",
                        "conversation.item.done"}
    response = events[-1]["response"]
    assert response["output_audio_format"] == "g711_ulaw"
    assert response["output"][0]["content"][0]["type"] == "audio"
    assert len(audio_of(events, "response.audio.delta")) == up.script.audio_deltas * 100 * 8
