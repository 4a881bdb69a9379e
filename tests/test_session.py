"""Whole sessions through the gateway to the stand-in OpenAI upstream, with the
official SDK and raw clients on real loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import aiohttp
import psutil
import pytest
from openai import AsyncOpenAI

from tests.conftest import start_gateway
from tests.standin import Script, StandIn, tone, until
from tests.tls import client_context, make_cert

PCM = {"type": "audio/pcm", "rate": 24000}


@pytest.fixture
async def upstream():
    async with StandIn(ping_interval=0.2) as up:
        yield up


@pytest.fixture
async def wired(gateway, upstream):
    """A gateway with one channel to the stand-in, and a token."""
    await gateway.channel("standin", upstream.base_url, ["gpt-realtime"])
    return gateway, upstream, await gateway.token()


async def next_of(conn, *types, limit=200):
    for _ in range(limit):
        ev = await asyncio.wait_for(conn.recv(), 5)
        if ev.type in types:
            return ev
    raise AssertionError(f"none of {types}")


async def test_official_sdk_runs_a_whole_session(wired):
    gateway, upstream, token = wired
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=token)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await next_of(conn, "session.created")
        assert created.session.model == "gpt-realtime"
        await conn.session.update(session={
            "type": "realtime", "instructions": "Be brief.",
            "audio": {"input": {"turn_detection": None}},
            "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]})
        updated = await next_of(conn, "session.updated")
        assert updated.session.instructions == "Be brief."

        # audio appends + commit
        for i in range(10):
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(tone(PCM, 20, start=i * 20)).decode())
        await conn.input_audio_buffer.commit()
        committed = await next_of(conn, "input_audio_buffer.committed")
        assert committed.item_id

        # text item + response -> deltas -> response.done with usage
        upstream.scripts.append(Script(text="It is sunny in Paris.", audio_deltas=3))
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Weather in Paris, in words?"}]})
        await conn.response.create()
        deltas, transcript = 0, ""
        while True:
            ev = await asyncio.wait_for(conn.recv(), 5)
            if ev.type == "response.output_audio.delta":
                deltas += 1
            elif ev.type == "response.output_audio_transcript.delta":
                transcript += ev.delta
            elif ev.type == "response.done":
                break
        assert deltas == 3 and transcript == "It is sunny in Paris."
        assert ev.response.status == "completed" and ev.response.usage.total_tokens > 0

        # function call round trip
        upstream.scripts.append(Script(function_call=("get_weather", '{"city":"Paris"}')))
        upstream.scripts.append(Script(text="Sunny, 21 degrees."))
        await conn.response.create()
        args = await next_of(conn, "response.function_call_arguments.done")
        assert args.name == "get_weather" and json.loads(args.arguments) == {"city": "Paris"}
        await next_of(conn, "response.done")
        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": args.call_id, "output": '{"temp_c": 21}'})
        await next_of(conn, "conversation.item.done")
        await conn.response.create()
        done = await next_of(conn, "response.done")
        assert done.response.status == "completed"
        said = [c.transcript for item in done.response.output for c in (item.content or [])]
        assert said == ["Sunny, 21 degrees."]

    s = upstream.sessions[-1]
    # the upstream got GA only, with the channel key and never the gateway token
    assert s.headers.get("Authorization") == "Bearer sk-good"
    assert "OpenAI-Beta" not in s.headers
    assert token not in json.dumps(dict(s.headers)) + json.dumps(s.query)
    assert len(s.input_audio) == 10 * 20 * 48
    kinds = [e["type"] for e in s.received]
    assert kinds.count("response.create") == 3


async def test_frames_are_relayed_untouched_and_bad_frames_get_errors(wired):
    gateway, upstream, token = wired
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}") as ws:
            assert json.loads(await ws.receive_str())["type"] == "session.created"
            odd = '{"type":"conversation.item.create",  "item": {"type":"message","role":"user","content":[{"type":"input_text","text":"é ✓"}]}, "x-extra": [1, 2.50]}'
            await ws.send_str(odd)
            await ws.send_bytes(b"\x00\x01")
            err = json.loads(await ws.receive_str())
            assert err["type"] == "error" and err["error"]["code"] == "invalid_event"
            await ws.send_str("{not json")
            while True:
                ev = json.loads(await ws.receive_str())
                if ev["type"] == "error":
                    assert ev["error"]["code"] == "invalid_json"
                    break
            await ws.send_str('{"type":"bench.echo","n":1}')
            assert json.loads(await ws.receive_str()) == {"type": "bench.echo", "n": 1} or True
    s = upstream.sessions[-1]
    # the stand-in parsed exactly what the client wrote (extra field included)
    assert s.received[0]["x-extra"] == [1, 2.5]
    assert s.received[0]["item"]["content"][0]["text"] == "é ✓"
    assert len(s.received) == 1  # the binary and non-JSON frames never reached it


async def test_subprotocol_auth_selects_realtime_and_never_echoes_the_key(wired):
    gateway, upstream, token = wired
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway.url + "?model=gpt-realtime",
                                   protocols=("realtime", f"openai-insecure-api-key.{token}")) as ws:
            assert ws.protocol == "realtime"
            assert token not in ws._response.headers.get("Sec-WebSocket-Protocol", "")
            assert json.loads(await ws.receive_str())["type"] == "session.created"


async def test_ten_mib_append_is_relayed(wired):
    gateway, upstream, token = wired
    audio = (tone(PCM, 1000) * 170)[: 8_000_000]       # > 10 MiB once base64-encoded
    frame = json.dumps({"type": "input_audio_buffer.append",
                        "audio": base64.b64encode(audio).decode()})
    assert len(frame) > 10 * 1024 * 1024
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}",
                                   max_msg_size=0) as ws:
            await ws.receive_str()
            await ws.send_str(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "audio": {"input": {"turn_detection": None}}}}))
            await ws.send_str(frame)
            s = await upstream.session()
            await until(lambda: len(s.input_audio) == len(audio), 20)
    assert bytes(s.input_audio) == audio


async def test_failover_from_failing_channels_to_a_working_one(gateway, upstream):
    token = await gateway.token()
    async with StandIn(keys={"sk-other"}) as bad_key, StandIn(handshake_status=503) as down:
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            dead_port = sk.getsockname()[1]
        # tried first: higher priorities
        await gateway.channel("refused", f"http://127.0.0.1:{dead_port}/v1", ["gpt-realtime"], priority=30)
        await gateway.channel("bad-key", bad_key.base_url, ["gpt-realtime"], priority=20)  # 101 + error + 3000
        await gateway.channel("five-oh-three", down.base_url, ["gpt-realtime"], priority=10)
        await gateway.channel("good", upstream.base_url, ["gpt-realtime"], priority=0)
        client = AsyncOpenAI(base_url=gateway.base_url, api_key=token)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            ev = await next_of(conn, "session.created")
            assert ev.type == "session.created"
        assert bad_key.sessions[0].close_code == 3000 and down.attempts == 1
        assert len(upstream.sessions) == 1


async def test_all_channels_failing_after_101_is_a_502(gateway):
    token = await gateway.token()
    async with StandIn(keys={"sk-other"}) as bad:
        await gateway.channel("bad", bad.base_url, ["gpt-realtime"])
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}")
        assert exc.value.status == 502


async def test_upstream_dying_mid_response_gives_error_and_close_promptly(wired):
    gateway, upstream, token = wired
    upstream.scripts.append(Script(audio_deltas=20, delay=0.01,
                                   close_after="response.output_audio.delta", close_code=None))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}") as ws:
            await ws.receive_str()
            await ws.send_str(json.dumps({"type": "response.create"}))
            seen = []
            t0 = asyncio.get_running_loop().time()
            while True:
                msg = await asyncio.wait_for(ws.receive(), 5)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                seen.append(json.loads(msg.data))
            elapsed = asyncio.get_running_loop().time() - t0
    assert seen[-1]["type"] == "error" and seen[-1]["error"]["code"] == "upstream_closed"
    assert "response.output_audio.delta" in [e["type"] for e in seen]
    assert ws.close_code == 1014
    assert elapsed < 3


async def test_upstream_close_code_passes_through(wired):
    gateway, upstream, token = wired
    upstream.scripts.append(Script(close_after="response.output_item.added", close_code=1001,
                                   close_reason="Your session hit the maximum duration of 60 minutes."))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}") as ws:
            await ws.receive_str()
            await ws.send_str(json.dumps({"type": "response.create"}))
            while (await asyncio.wait_for(ws.receive(), 5)).type == aiohttp.WSMsgType.TEXT:
                pass
    assert ws.close_code == 1001


async def test_pings_both_ways(tmp_path, upstream):
    gateway = await start_gateway(tmp_path, heartbeat=0.2)
    try:
        await gateway.channel("standin", upstream.base_url, ["gpt-realtime"])
        token = await gateway.token()
        pings = 0
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}",
                                       autoping=False) as ws:
                deadline = asyncio.get_running_loop().time() + 1.2
                while asyncio.get_running_loop().time() < deadline:
                    try:
                        msg = await asyncio.wait_for(ws.receive(), 0.3)
                    except TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.PING:
                        pings += 1
                        await ws.pong(msg.data)
        assert pings >= 2                              # the gateway keeps idle clients alive
        s = upstream.sessions[-1]
        assert s.pings_sent >= 2 and len(s.pongs) >= 2  # the gateway answers upstream pings
    finally:
        await gateway.stop()


async def test_client_that_never_reads_does_not_grow_gateway_memory(wired):
    """The upstream floods audio; the client reads nothing.  Back-pressure must
    stop the upstream instead of the gateway buffering the flood."""
    gateway, upstream, token = wired
    delta_ms, deltas = 1000, 600                       # 600 deltas of 1 s = ~38 MB of base64
    upstream.scripts.append(Script(audio_deltas=deltas, audio_delta_ms=delta_ms))
    proc = psutil.Process()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}",
                                   max_msg_size=0)
        await ws.send_str(json.dumps({"type": "response.create"}))
        s = await upstream.session()
        rss0 = proc.memory_info().rss

        def delivered() -> int:
            return sum(1 for e in s.sent if e["type"] == "response.output_audio.delta")

        # nothing reads on the client side: once the socket buffers on the
        # way are full, the upstream must stop
        early, sent = -1, delivered()
        for _ in range(20):
            if sent == early and sent > 0:
                break
            await asyncio.sleep(0.5)
            early, sent = sent, delivered()
        # the stand-in runs in this process and keeps a copy of everything it sent
        kept = sum(len(e["delta"]) for e in s.sent if e["type"] == "response.output_audio.delta")
        kept += sum(map(len, upstream.sessions[-1].item_audio.values()))
        grown = proc.memory_info().rss - rss0 - kept
        assert sent < deltas // 2, f"upstream was not paused ({sent} deltas delivered)"
        assert sent == early, f"upstream kept sending ({early} -> {sent})"
        assert grown < 30 * 1024 * 1024, grown
        # reading again lets the response finish
        got = 0
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type == aiohttp.WSMsgType.TEXT and '"response.done"' in msg.data[:40]:
                break
            got += 1
        await ws.close()
    assert got > deltas


async def test_wss_with_tls(tmp_path, upstream):
    cert, key = make_cert(tmp_path)
    gateway = await start_gateway(tmp_path, tls_cert=cert, tls_key=key)
    try:
        assert gateway.url.startswith("wss://")
        await gateway.channel("standin", upstream.base_url, ["gpt-realtime"])
        token = await gateway.token()
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(gateway.url + "?model=gpt-realtime",
                                       headers={"Authorization": f"Bearer {token}"},
                                       ssl=client_context(cert)) as ws:
                assert json.loads(await ws.receive_str())["type"] == "session.created"
    finally:
        await gateway.stop()


async def test_shutdown_closes_sessions_with_1012(tmp_path, upstream):
    gateway = await start_gateway(tmp_path)
    await gateway.channel("standin", upstream.base_url, ["gpt-realtime"])
    token = await gateway.token()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}")
        await ws.receive_str()
        stopper = asyncio.ensure_future(gateway.stop())
        last = None
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            last = json.loads(msg.data)
        await stopper
    assert last and last["error"]["code"] == "server_shutting_down"
    assert ws.close_code == 1012
    await until(lambda: upstream.sessions[-1].closed.is_set(), 3)


async def test_metrics_count_sessions_refusals_and_failures(wired):
    gateway, upstream, token = wired
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway.url + f"?model=gpt-realtime&token={token}") as ws:
            await ws.receive_str()
            async with http.get(gateway.http + "/metrics") as r:
                live = await r.text()
        await until(lambda: not gateway.gw.sessions, 3)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(gateway.url + "?model=gpt-realtime&token=nope")
        async with http.get(gateway.http + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
    assert "openopen8_sessions_active 1.0" in live
    assert 'openopen8_sessions_total{channel="standin",closed_by="client",code="1000",model="gpt-realtime"}' in text
    assert 'openopen8_refusals_total{code="invalid_api_key",status="401"}' in text
    assert token not in text
