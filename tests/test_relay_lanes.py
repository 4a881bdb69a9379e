"""Lanes: audio frames that every stage only counts go from socket to socket
as they came.  The chain decides which types may take one; the relay opens
and revokes them; through the gateway, the frames arrive byte-exact and are
still counted, and anything a lane cannot take takes the full path."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re

import aiohttp
import pytest

from openopen8.relay.stage import BaseStage, Chain, Session
from openopen8.events import Event
from tests.conftest import start_gateway
from tests.standin import Script, StandIn
from tests.test_ledger_e2e import FAST, eventually, table

# ---- the chain's offer ------------------------------------------------------------------


class Counter(BaseStage):
    """Sees "a" and "c", only counts "a"."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def sees_client(self, t, s):
        return t in ("a", "c")

    def watch_client(self, t, s):
        return self.seen.append if t == "a" else None


class Actor(BaseStage):
    """Sees "a" and "b" on their way up; watches nothing."""

    def sees_client(self, t, s):
        return t in ("a", "b")


def offers(chain: Chain, s: Session, *types: str) -> dict:
    """What the chain offers the relay as ``types`` pass; ``got["resets"]``
    counts revocations."""
    got: dict = {"resets": 0}

    def reset() -> None:
        got["resets"] += 1
    chain.on_lane = lambda up, t, watchers: got.__setitem__(t, (up, watchers))
    chain.on_lanes_reset = reset
    for t in types:
        chain.pass_client(Event.from_data({"type": t}), s)
    return got


def test_a_type_gets_a_lane_only_when_every_stage_that_sees_it_only_watches_it():
    counter, s = Counter(), Session(id="s", model="m")
    got = offers(Chain([counter]), s, "a", "b", "c")
    assert got["a"] == (True, (counter.seen.append,))
    assert got["b"] == (True, ())                  # nobody sees it: a lane with no watchers
    assert "c" not in got                          # seen, not merely watched
    got = offers(Chain([counter, Actor()]), Session(id="s2", model="m"), "a", "b")
    assert "a" not in got and "b" not in got       # the actor may change them


def test_rechain_revokes_every_lane():
    chain, s = Chain([Counter()]), Session(id="s", model="m")
    got = offers(chain, s, "a")
    resets = got["resets"]
    assert "a" in got
    s.rechain()
    assert got["resets"] == resets + 1
    got.pop("a")
    chain.pass_client(Event.from_data({"type": "a"}), s)
    assert "a" in got                              # offered again when next met


# ---- through the gateway -------------------------------------------------------------------

CHUNK = bytes(range(256)) * 3 + bytes(192)        # 960 bytes: 20 ms of PCM16 at 24 kHz


@pytest.fixture
async def wired(tmp_path):
    g = await start_gateway(tmp_path, **FAST)
    async with StandIn(ping_interval=0) as up:
        await g.channel("standin", up.base_url, ["gpt-realtime"])
        try:
            yield g, up, await g.token()
        finally:
            await g.stop()


async def connect(g, token: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(g.url + f"?model=gpt-realtime&token={token}", max_msg_size=0)
    return http, ws


async def read_until(ws, kind: str, got: list[str]) -> dict:
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        got.append(msg.data)
        ev = json.loads(msg.data)
        if ev["type"] == kind:
            return ev


def lanes_logged(caplog) -> tuple[int, int]:
    m = [re.search(r"\(lanes (\d+)/(\d+)\)", r.getMessage()) for r in caplog.records]
    [(lin, lout)] = [x.groups() for x in m if x]
    return int(lin), int(lout)


async def test_audio_takes_lanes_byte_exact_and_is_still_counted(wired, caplog):
    caplog.set_level(logging.INFO, logger="openopen8.session")
    g, up, token = wired
    up.script = Script(audio_deltas=12, audio_delta_ms=20, rate_limits=False)
    http, ws = await connect(g, token)
    sent: list[str] = []
    received: list[str] = []
    try:
        await read_until(ws, "session.created", received)
        for i in range(40):
            audio = base64.b64encode(CHUNK[i:] + CHUNK[:i]).decode()
            ev = {"type": "input_audio_buffer.append", "event_id": f"evt_{i}", "audio": audio}
            # compact JSON (JS SDK, OpenAI) and the Python SDK's json.dumps, alternately
            text = json.dumps(ev, separators=(",", ":")) if i % 2 else json.dumps(ev)
            sent.append(text)
            await ws.send_str(text)
        sent.append(json.dumps({"type": "response.create"}))
        await ws.send_str(sent[-1])
        await read_until(ws, "response.done", received)
    finally:
        await ws.close()
        await http.close()
    [row] = await eventually(lambda: _closed(g))
    s = up.sessions[-1]
    # every appended byte reached the upstream, in order
    assert bytes(s.input_audio) == b"".join(CHUNK[i:] + CHUNK[:i] for i in range(40))
    # every server event reached the client as the upstream sent it
    assert [json.loads(t) for t in received] == s.sent
    deltas = [t for t in received if '"response.output_audio.delta"' in t]
    assert len(deltas) == 12
    # ... and was counted as before: events, bytes, audio seconds
    assert (row["events_in"], row["bytes_in"]) == (len(sent), sum(len(t) for t in sent))
    assert (row["events_out"], row["bytes_out"]) == (len(received), sum(len(t) for t in received))
    assert row["audio_in_seconds"] == pytest.approx(40 * 0.02, abs=1e-3)
    assert row["audio_out_seconds"] == pytest.approx(12 * 0.02, abs=1e-3)
    # the first frame of a type opens its lane (for both spellings); the rest take it
    lane_in, lane_out = lanes_logged(caplog)
    assert lane_in == 40 - 1 and lane_out >= 12 - 1


async def _closed(g):
    rows = [r for r in await table(g, "sessions") if r["closed_at"] is not None]
    return rows or None


async def test_what_a_lane_cannot_take_goes_the_full_path(wired, caplog):
    """Non-ASCII text in a frame of a lane's type is decoded and checked like
    any other; invalid UTF-8 is refused with 1007 as before."""
    caplog.set_level(logging.INFO, logger="openopen8.session")
    g, up, token = wired
    http, ws = await connect(g, token)
    audio = base64.b64encode(CHUNK).decode()
    try:
        await read_until(ws, "session.created", [])
        for eid in ("evt_a", "evt_b", "évt_ü"):
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "event_id": eid,
                                          "audio": audio}, ensure_ascii=False))
        await ws.send_str(json.dumps({"type": "input_audio_buffer.clear"}))
        await read_until(ws, "input_audio_buffer.cleared", [])
        assert [e.get("event_id") for e in up.sessions[-1].received
                if e["type"] == "input_audio_buffer.append"] == ["evt_a", "evt_b", "évt_ü"]
        bad = b'{"type":"input_audio_buffer.append","audio":"' + audio.encode() + b'\xff"}'
        await ws.send_frame(bad, aiohttp.WSMsgType.TEXT)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1007
    finally:
        await ws.close()
        await http.close()
    [row] = await eventually(lambda: _closed(g))
    assert row["audio_in_seconds"] == pytest.approx(3 * 0.02, abs=1e-3)
    assert lanes_logged(caplog)[0] == 1            # evt_b; evt_a opened the lane


async def test_a_format_change_closes_the_lanes_and_appends_are_converted(wired):
    g, up, token = wired
    http, ws = await connect(g, token)
    try:
        await read_until(ws, "session.created", [])
        for _ in range(5):                          # 24 kHz: the lane opens
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(CHUNK).decode()}))
        await ws.send_str(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm",
                                                               "rate": 16000}}}}}))
        await read_until(ws, "session.updated", [])
        pcm16k = bytes(640)                          # 20 ms at 16 kHz
        for _ in range(50):
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm16k).decode()}))
        await ws.send_str(json.dumps({"type": "input_audio_buffer.commit"}))
        await read_until(ws, "input_audio_buffer.committed", [])
    finally:
        await ws.close()
        await http.close()
    got = len(up.sessions[-1].input_audio)
    # 5 x 960 bytes as they came, then one second at 16 kHz resampled to 24 kHz
    assert got == 5 * 960 + 48000
    [row] = await eventually(lambda: _closed(g))
    assert row["audio_in_seconds"] == pytest.approx(0.1 + 1.0, abs=1e-3)
