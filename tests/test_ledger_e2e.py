"""Usage, prices and quotas end to end: real sockets on loopback, the gateway
in front of the stand-in OpenAI upstream, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
from decimal import Decimal
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
from openai import AsyncOpenAI

from openopen8 import ops
from openopen8.billing import PriceTable, parse_usage, usd
from openopen8.store.base import TokenLimits
from tests.conftest import RunningGateway, start_gateway
from tests.standin import Script, StandIn, usage
from tests.test_refusals import upgrade

#: everything that waits on time, small
FAST = dict(ledger_flush_seconds=0.05, tick_seconds=0.05, balance_refresh_seconds=0.05,
            settle_seconds=2.0)

U1 = usage()                                   # the live capture: 0.0106136 USD on gpt-realtime
U2 = usage(input_text=1200, input_audio=300, cached_text=1024, cached_audio=256, output_text=30,
           output_audio=0)                     # 0.003104 USD
U3 = usage(input_text=10, input_audio=0, cached_text=0, cached_audio=0, output_text=20,
           output_audio=0)                     # 0.00036 USD
U1_NANOS = 10_613_600
TEXT_ONLY = {"type": "realtime", "output_modalities": ["text"],
             "audio": {"input": {"turn_detection": None}}}


@pytest.fixture
async def upstream():
    async with StandIn(ping_interval=0) as up:
        yield up


async def metered(tmp_path, db_url: str, upstream: StandIn, *, channel: bool = True,
                  **settings: Any) -> RunningGateway:
    g = await start_gateway(tmp_path, database_url=db_url, **{**FAST, **settings})
    if channel:
        await g.channel("standin", upstream.base_url, ["gpt-realtime"])
    return g


async def token(g: RunningGateway, name: str, **limits: Any) -> tuple[str, int]:
    new = await ops.create_token(g.gw.store, name, limits=TokenLimits(**limits))
    return new.secret, new.record.id


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def table(g: RunningGateway, name: str) -> list[dict]:
    async with g.gw.store.engine.connect() as conn:
        rows = (await conn.exec_driver_sql(f"SELECT * FROM {name} ORDER BY 1")).mappings().all()
    return [dict(r) for r in rows]


async def closed_sessions(g: RunningGateway, n: int = 1) -> list[dict] | None:
    rows = [r for r in await table(g, "sessions") if r["closed_at"] is not None]
    return rows if len(rows) >= n else None


async def spent(g: RunningGateway, token_id: int) -> int:
    return (await g.gw.store.balances([token_id]))[0].spent_nanos


class Client:
    """A raw WebSocket client: what a client sees, in order, to the close code."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self.seen: list[dict] = []
        self.close_code: int | None = None

    @classmethod
    async def open(cls, g: RunningGateway, secret: str) -> "Client":
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(g.url + "?model=gpt-realtime",
                                   headers={"Authorization": f"Bearer {secret}"})
        return cls(http, ws)

    async def send(self, **ev: Any) -> None:
        await self.ws.send_str(json.dumps(ev))

    async def next(self, *types: str, timeout: float = 5.0) -> dict | None:
        """The next event of one of ``types`` (None once the socket closed)."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.close_code = self.ws.close_code
                return None
            ev = json.loads(msg.data)
            self.seen.append(ev)
            if ev["type"] in types:
                return ev

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()

    def types(self, *wanted: str) -> list[str]:
        return [e["type"] for e in self.seen if e["type"] in wanted]


async def text_session(c: Client) -> None:
    await c.send(type="session.update", session=TEXT_ONLY)
    assert await c.next("session.updated")


# ---- the ledger is exact -------------------------------------------------------------

async def test_scripted_usage_reaches_ledger_and_reports_to_the_token_and_cent(
        tmp_path, db_url, upstream):
    g = await metered(tmp_path, db_url, upstream)
    out_audio_before = _metric("openopen8_usage_tokens_total",
                               {"model": "gpt-realtime", "kind": "output_audio"})
    try:
        secret, token_id = await token(g, "alice")
        upstream.scripts.extend([Script(usage=U1), Script(usage=U2, duplicate_done=True),
                                 Script(usage=U3)])
        client = AsyncOpenAI(base_url=g.base_url, api_key=secret)
        dones: list[str] = []
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={
                **TEXT_ONLY, "audio": {"input": {"turn_detection": None,
                                                 "transcription": {"model": "gpt-4o-transcribe"}}}})
            async for ev in conn:
                if ev.type == "session.updated":
                    break
            await conn.input_audio_buffer.append(audio=base64.b64encode(bytes(9600)).decode())
            await conn.input_audio_buffer.commit()
            async for ev in conn:
                if ev.type == "conversation.item.input_audio_transcription.completed":
                    break
            for i in range(3):
                await conn.conversation.item.create(item={
                    "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": f"turn {i}"}]})
                await conn.response.create()
                async for ev in conn:
                    if ev.type == "response.done":
                        dones.append(ev.response.id)
                        if dones.count(ev.response.id) == 1:
                            break
        [session] = await eventually(lambda: closed_sessions(g))
        rows = await table(g, "ledger")
        # the duplicate response.done reached the client but was counted once
        assert len(dones) == 3 or (len(dones) == 4 and len(set(dones)) == 3)
        responses = [r for r in rows if r["kind"] == "response"]
        assert [r["ref"] for r in responses] == list(dict.fromkeys(dones))
        assert [r["cost_nanos"] for r in responses] == [U1_NANOS, 3_104_000, 360_000]
        for r, u in zip(responses, (U1, U2, U3)):
            t = parse_usage(u)
            assert (r["input_text"], r["input_audio"], r["cached_text"], r["cached_audio"],
                    r["output_text"], r["output_audio"]) == (
                t.input_text, t.input_audio, t.cached_text, t.cached_audio, t.output_text,
                t.output_audio)
            assert (r["token_id"], r["channel"], r["model"], r["session_id"], r["status"]) == (
                token_id, "standin", "gpt-realtime", session["id"], "completed")
            assert not r["fallback"]
        [tr] = [r for r in rows if r["kind"] == "transcription"]
        assert (tr["model"], tr["input_audio"], tr["output_text"], tr["cost_nanos"]) == (
            "gpt-4o-transcribe", 16, 8, 176_000)

        report = await ops.usage_report(g.gw.store, by="model")
        by_model = {r["key"]: r for r in report["rows"]}
        rt = by_model["gpt-realtime"]
        assert rt["responses"] == 3
        for cls in ("input_text", "input_audio", "cached_text", "cached_audio", "output_text",
                    "output_audio"):
            assert rt[cls] == sum(getattr(parse_usage(u), cls) for u in (U1, U2, U3))
        assert rt["cost_usd"] == "0.0140776"
        assert by_model["gpt-4o-transcribe"]["cost_usd"] == "0.000176"
        assert report["total"]["cost_usd"] == "0.0142536"
        assert report["total"]["priced_by_fallback"] == 0
        assert await spent(g, token_id) == report["total"]["cost_nanos"] == 14_253_600

        assert (session["closed_by"], session["close_code"], session["channel"]) == (
            "client", 1000, "standin")
        assert session["events_in"] >= 9 and session["events_out"] > session["events_in"]
        assert session["bytes_in"] > 12_800 and session["bytes_out"] > 0
        assert session["audio_in_seconds"] == pytest.approx(0.2, abs=1e-3)
        # /metrics counts the same tokens as the ledger (the duplicate once)
        assert _metric("openopen8_usage_tokens_total",
                       {"model": "gpt-realtime", "kind": "output_audio"}) - out_audio_before \
            == rt["output_audio"]
    finally:
        await g.stop()


def _metric(name: str, labels: dict[str, str]) -> float:
    from openopen8.metrics import REGISTRY
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---- quotas --------------------------------------------------------------------------

async def test_a_settled_response_that_exhausts_the_quota_ends_the_session(
        tmp_path, db_url, upstream):
    g = await metered(tmp_path, db_url, upstream)
    try:
        secret, token_id = await token(g, "q", quota_nanos=15_000_000)     # USD 0.015
        c = await Client.open(g, secret)
        await text_session(c)
        await c.send(type="response.create")
        assert (await c.next("response.done", "error"))["type"] == "response.done"
        await c.send(type="response.create")
        done = await c.next("response.done")
        err = await c.next("error")
        assert err["error"]["code"] == "insufficient_quota"
        assert err["error"]["type"] == "insufficient_quota"
        assert await c.next("never") is None and c.close_code == 1013
        assert c.types("response.done", "error")[-2:] == ["response.done", "error"]
        await c.close()
        await eventually(lambda: closed_sessions(g))
        rows = await table(g, "ledger")
        assert [r["ref"] for r in rows][-1] == done["response"]["id"]
        total = await spent(g, token_id)
        assert total == sum(r["cost_nanos"] for r in rows) == 2 * U1_NANOS
        assert 0 < total - 15_000_000 <= U1_NANOS          # overspend: at most one response
        status, body = await upgrade(g.url + "?model=gpt-realtime",
                                     {"Authorization": f"Bearer {secret}"})
        assert status == 429 and body["error"]["code"] == "insufficient_quota"
        [session] = await table(g, "sessions")
        assert (session["closed_by"], session["close_code"]) == ("gateway", 1013)
    finally:
        await g.stop()


async def test_a_response_that_would_overrun_the_quota_is_cancelled_in_flight(
        tmp_path, db_url, upstream):
    g = await metered(tmp_path, db_url, upstream)
    try:
        secret, token_id = await token(g, "q", quota_nanos=12_500_000)     # USD 0.0125
        upstream.scripts.extend([Script(), Script(audio_deltas=60, delay=0.01)])
        c = await Client.open(g, secret)
        await c.send(type="response.create")                 # audio, 3 deltas
        first = await c.next("response.done")
        await c.send(type="response.create")                 # 60 deltas of 100 ms
        err = await c.next("error", timeout=10)
        assert err["error"]["code"] == "insufficient_quota"
        assert await c.next("never") is None and c.close_code == 1013
        await c.close()
        # the gateway cancelled it upstream, long before its 60 deltas, and billed what it cost
        assert "response.cancel" in [e["type"] for e in upstream.sessions[-1].received]
        deltas = c.types("response.output_audio.delta")
        assert 3 < len(deltas) < 3 + 30
        await eventually(lambda: closed_sessions(g))
        rows = await eventually(lambda: _rows_when(g, 2))
        assert [r["status"] for r in rows] == ["completed", "cancelled"]
        assert rows[0]["ref"] == first["response"]["id"]
        total = await spent(g, token_id)
        assert total == sum(r["cost_nanos"] for r in rows)
        assert total - 12_500_000 <= U1_NANOS
        status, body = await upgrade(g.url + "?model=gpt-realtime",
                                     {"Authorization": f"Bearer {secret}"})
        assert status == 429 and body["error"]["code"] == "insufficient_quota"
    finally:
        await g.stop()


async def _rows_when(g: RunningGateway, n: int) -> list[dict] | None:
    rows = await table(g, "ledger")
    return rows if len(rows) >= n else None


@pytest.mark.parametrize("instances", [1, 2])
async def test_concurrent_sessions_share_one_balance(tmp_path, db_url, upstream, instances):
    """Two sessions of one token at once -- on one gateway, or on two gateway
    instances sharing the database -- spend one quota: the database's spend is
    the exact sum of the ledger, and each session overspends by at most its
    response in flight."""
    upstream.script = Script(delay=0.02)          # a response takes longer than a refresh
    g1 = await metered(tmp_path, db_url, upstream)
    g2 = await metered(tmp_path, db_url, upstream, channel=False) if instances == 2 else g1
    try:
        quota = 5 * U1_NANOS - 1
        secret, token_id = await token(g1, "shared", quota_nanos=quota)

        async def spend(g: RunningGateway) -> tuple[int, int | None]:
            c = await Client.open(g, secret)
            await text_session(c)
            n = 0
            while True:
                await c.send(type="response.create")
                ev = await c.next("response.done", "error")
                if ev is None or ev["type"] == "error":
                    break
                n += 1
            if ev is not None:
                assert ev["error"]["code"] == "insufficient_quota"
                assert await c.next("never") is None
            await c.close()
            return n, c.close_code

        results = await asyncio.gather(spend(g1), spend(g2))
        assert [code for _, code in results] == [1013, 1013]
        assert all(n >= 1 for n, _ in results)
        await eventually(lambda: closed_sessions(g1, 2))
        rows = await table(g1, "ledger")
        total = await spent(g1, token_id)
        assert total == sum(r["cost_nanos"] for r in rows) == len(rows) * U1_NANOS
        assert quota <= total <= quota + 2 * U1_NANOS
    finally:
        if g2 is not g1:
            await g2.stop()
        await g1.stop()


# ---- nothing reported upstream is lost --------------------------------------------------

async def test_a_client_killed_mid_session_loses_nothing(tmp_path, upstream):
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'kill.db'}", upstream)
    try:
        secret, token_id = await token(g, "k")
        upstream.scripts.extend([Script(), Script(text=" ".join(["word"] * 60), delay=0.02)])
        c = await Client.open(g, secret)
        await text_session(c)
        await c.send(type="response.create")
        first = await c.next("response.done")
        await c.send(type="response.create")
        assert await c.next("response.output_text.delta")
        c.ws._response.connection.transport.abort()      # no close frame, no goodbye
        await c.http.close()
        [session] = await eventually(lambda: closed_sessions(g))
        assert session["closed_by"] == "client"
        rows = await eventually(lambda: _rows_when(g, 2))
        assert rows[0]["ref"] == first["response"]["id"] and rows[0]["status"] == "completed"
        # the response it was listening to was cancelled upstream and billed as reported
        assert rows[1]["status"] == "cancelled"
        assert "response.cancel" in [e["type"] for e in upstream.sessions[-1].received]
        assert await spent(g, token_id) == 2 * U1_NANOS
    finally:
        await g.stop()


async def test_shutdown_writes_what_is_pending(tmp_path, upstream):
    db = f"sqlite:///{tmp_path / 'stop.db'}"
    g = await metered(tmp_path, db, upstream, ledger_flush_seconds=60, ledger_commit_seconds=60)
    secret, token_id = await token(g, "s")
    c = await Client.open(g, secret)
    await text_session(c)
    await c.send(type="response.create")
    await c.next("response.done")
    assert await table(g, "ledger") == []                 # batched, not written yet
    stopper = asyncio.ensure_future(g.stop())             # the server shuts down
    assert await c.next("never") is None and c.close_code == 1012
    await stopper
    await c.close()
    from openopen8.store.sql import open_store
    store = await open_store(db)
    try:
        assert (await store.balances([token_id]))[0].spent_nanos == U1_NANOS
        async with store.engine.connect() as conn:
            s = (await conn.exec_driver_sql("SELECT closed_by, close_code FROM sessions")).one()
        assert tuple(s) == ("shutdown", 1012)
    finally:
        await store.close()


# ---- limits per token -------------------------------------------------------------------

async def test_concurrency_limit(tmp_path, db_url, upstream):
    g = await metered(tmp_path, db_url, upstream)
    try:
        secret, _ = await token(g, "c", max_sessions=1)
        auth = {"Authorization": f"Bearer {secret}"}
        first = await Client.open(g, secret)
        await first.next("session.created")
        status, body = await upgrade(g.url + "?model=gpt-realtime", auth)
        assert status == 429 and body["error"]["code"] == "too_many_sessions"
        assert "max_sessions" in body["error"]["message"]
        await first.close()
        await eventually(lambda: closed_sessions(g))
        again = await Client.open(g, secret)
        assert await again.next("session.created")
        await again.close()
    finally:
        await g.stop()


async def test_sessions_per_minute(tmp_path, upstream):
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'rate.db'}", upstream)
    try:
        secret, _ = await token(g, "r", sessions_per_minute=2)
        for _ in range(2):
            c = await Client.open(g, secret)
            await c.close()
        status, body = await upgrade(g.url + "?model=gpt-realtime",
                                     {"Authorization": f"Bearer {secret}"})
        assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
        assert "sessions_per_minute" in body["error"]["message"]
    finally:
        await g.stop()


@pytest.mark.parametrize("limit,code", [("max_duration", "max_duration_exceeded"),
                                        ("idle_timeout", "idle_timeout")])
async def test_duration_and_idle_limits_close_1008_after_an_error_naming_them(
        tmp_path, upstream, limit, code):
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'time.db'}", upstream)
    try:
        secret, _ = await token(g, "t", **{limit: 0.4})
        c = await Client.open(g, secret)
        t0 = asyncio.get_running_loop().time()
        if limit == "max_duration":       # a busy client is still cut at the limit
            while asyncio.get_running_loop().time() - t0 < 0.3:
                await c.send(type="input_audio_buffer.clear")
                await asyncio.sleep(0.05)
        err = await c.next("error", timeout=3)
        assert err["error"]["code"] == code and limit in err["error"]["message"]
        assert asyncio.get_running_loop().time() - t0 >= 0.35
        assert await c.next("never") is None and c.close_code == 1008
        await c.close()
        [session] = await eventually(lambda: closed_sessions(g))
        assert (session["closed_by"], session["close_code"]) == ("gateway", 1008)
    finally:
        await g.stop()


# ---- prices from the config ---------------------------------------------------------------

async def test_configured_prices_and_the_fallback_flag(tmp_path, upstream):
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", upstream,
                      prices={"gpt-realtime": {"audio_out": 100}})
    try:
        await g.channel("odd", upstream.base_url, ["gpt-realtime-2025-08-28", "mystery-model"])
        upstream.models = None
        secret, _ = await token(g, "p")
        for model in ("gpt-realtime-2025-08-28", "mystery-model"):
            http = aiohttp.ClientSession()
            ws = await http.ws_connect(g.url + f"?model={model}",
                                       headers={"Authorization": f"Bearer {secret}"})
            c = Client(http, ws)
            await text_session(c)
            await c.send(type="response.create")
            await c.next("response.done")
            await c.close()
        await eventually(lambda: closed_sessions(g, 2))
        rows = {r["model"]: r for r in await table(g, "ledger")}
        table_ = PriceTable({"gpt-realtime": {"audio_out": 100}})
        assert rows["gpt-realtime-2025-08-28"]["cost_nanos"] == \
            table_.cost("gpt-realtime", parse_usage(U1))[0]
        assert usd(rows["gpt-realtime-2025-08-28"]["cost_nanos"]) == Decimal("0.0159056")
        assert rows["mystery-model"]["fallback"] and not rows["gpt-realtime-2025-08-28"]["fallback"]
        report = await ops.usage_report(g.gw.store, by="model")
        assert report["total"]["priced_by_fallback"] == 1
    finally:
        await g.stop()


async def test_the_local_engine_is_metered_at_its_explicit_zero_price(tmp_path):
    g = await start_gateway(tmp_path, local_engine=True, **FAST,
                            local={"vad": "fake", "stt": "fake", "llm": "fake", "tts": "fake"})
    try:
        secret, token_id = await token(g, "local", quota_nanos=1)
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(g.url + "?model=openopen8-local",
                                   headers={"Authorization": f"Bearer {secret}"})
        c = Client(http, ws)
        await text_session(c)
        await c.send(type="conversation.item.create", item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]})
        await c.send(type="response.create")
        done = await c.next("response.done", timeout=20)
        assert done["response"]["usage"]["total_tokens"] > 0
        await c.close()
        await eventually(lambda: closed_sessions(g))
        [row] = await table(g, "ledger")
        assert (row["model"], row["cost_nanos"], row["fallback"]) == ("openopen8-local", 0, False)
        assert row["output_text"] > 0 and await spent(g, token_id) == 0
    finally:
        await g.stop()
