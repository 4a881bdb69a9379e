"""Client secrets end to end (issue 14): a backend mints an ``ek_`` secret
with its gateway token through the official SDK, a client connects with it
by every route a token has; the secret's session is the upstream's first
``session.update``; everything is billed to and limited by the minting
token.  Real sockets on loopback, the stand-in OpenAI upstream, SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import logging
import time

import aiohttp
import pytest
from openai import AsyncOpenAI, PermissionDeniedError

from openopen8 import ops
from tests.standin import Script, StandIn
from tests.test_ledger_e2e import U1, U1_NANOS, closed_sessions, eventually, metered, spent, table

SESSION = {"type": "realtime", "model": "gpt-realtime", "instructions": "Answer in one word.",
           "output_modalities": ["text"], "audio": {"output": {"voice": "marin"}}}


@pytest.fixture
async def upstream():
    async with StandIn(ping_interval=0) as up:
        yield up


async def mint(g, token: str, body: dict, path: str = "/v1/realtime/client_secrets",
               **headers: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(g.http + path, json=body,
                             headers={"Authorization": f"Bearer {token}", **headers}) as r:
            return r.status, await r.json()


async def connect(g, secret: str, query: str = "", **headers: str):
    """A browser's way in: the key as a subprotocol, no Authorization header."""
    http = aiohttp.ClientSession()
    try:
        ws = await http.ws_connect(g.url + query, headers=headers,
                                   protocols=("realtime", f"openai-insecure-api-key.{secret}"))
    except aiohttp.WSServerHandshakeError as exc:
        await http.close()
        return exc.status, None
    return 101, (http, ws)


async def events_until(ws, wanted: str, timeout: float = 5.0) -> list[dict]:
    seen = []
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg, seen)
        ev = json.loads(msg.data)
        seen.append(ev)
        if ev["type"] == wanted:
            return seen


async def test_the_sdk_mints_a_secret_a_browser_connects_with_it_and_the_token_pays(
        tmp_path, db_url, upstream, caplog):
    caplog.set_level(logging.INFO)
    g = await metered(tmp_path, db_url, upstream)
    try:
        new = await ops.create_token(g.gw.store, "backend", models=["gpt-realtime"])
        client = AsyncOpenAI(base_url=g.base_url, api_key=new.secret)
        made = await client.realtime.client_secrets.create(
            session=SESSION, expires_after={"anchor": "created_at", "seconds": 120})
        assert made.value.startswith("ek_")
        assert abs(made.expires_at - (time.time() + 120)) < 5
        assert made.session.type == "realtime" and made.session.model == "gpt-realtime"
        assert made.session.instructions == "Answer in one word."
        # the store keeps a hash, never the secret
        rows = await table(g, "client_secrets")
        assert len(rows) == 1 and made.value not in json.dumps(rows, default=str)

        upstream.scripts.append(Script(usage=U1))
        status, conn = await connect(g, made.value)      # no ?model=: the secret's model
        assert status == 101
        http, ws = conn
        try:
            seen = await events_until(ws, "session.updated")
            assert seen[0]["type"] == "session.created"
            up = await upstream.session()
            first = up.received[0]
            assert first["type"] == "session.update"           # before any client event
            assert first["session"]["instructions"] == "Answer in one word."
            assert first["session"]["audio"]["output"]["voice"] == "marin"
            assert seen[-1]["session"]["output_modalities"] == ["text"]
            await ws.send_str(json.dumps({"type": "response.create"}))
            await events_until(ws, "response.done")
        finally:
            await ws.close()
            await http.close()
        assert await eventually(lambda: closed_sessions(g))
        assert await eventually(lambda: spent(g, new.record.id)) == U1_NANOS
        sessions = await table(g, "sessions")
        assert sessions[0]["token_id"] == new.record.id and sessions[0]["secret_id"] == rows[0]["id"]
        assert sessions[0]["via"] == "websocket"
        # a secret works for several sessions until it expires (OpenAI's behaviour)
        for route in ({"query": "?model=gpt-realtime&token=" + made.value},
                      {"headers": {"api-key": made.value}},
                      {"headers": {"Authorization": "Bearer " + made.value}}):
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(g.url + route.get("query", ""),
                                           headers=route.get("headers", {})) as ws:
                    ev = json.loads((await ws.receive(timeout=5)).data)
                    assert ev["type"] == "session.created", route
        assert "client secret minted: token=backend" in caplog.text
        assert made.value not in caplog.text and made.value[3:20] not in caplog.text
    finally:
        await g.stop()


async def test_what_a_secret_may_not_do(tmp_path, upstream):
    db = f"sqlite:///{tmp_path / 'oo8.db'}"
    g = await metered(tmp_path, db, upstream)
    try:
        new = await ops.create_token(g.gw.store, "backend")
        # minting refuses what it cannot honour, naming the parameter
        for body, param in (({"expires_after": {"seconds": 5}}, "expires_after.seconds"),
                            ({"expires_after": {"seconds": 7201}}, "expires_after.seconds"),
                            ({"session": {"type": "video"}}, "session.type"),
                            ({"max_uses": 0}, "max_uses"),
                            ({"bogus": 1}, "bogus")):
            status, out = await mint(g, new.secret, body)
            assert (status, out["error"]["param"]) == (400, param), body
        status, out = await mint(g, new.secret, {"session": {"type": "realtime",
                                                             "model": "gpt-nothing"}})
        assert status == 404

        status, once = await mint(g, new.secret, {"session": SESSION, "max_uses": 1})
        assert status == 200
        # a secret cannot mint secrets
        status, out = await mint(g, once["value"], {"session": SESSION})
        assert (status, out["error"]["code"]) == (403, "client_secret_not_allowed")
        sdk = AsyncOpenAI(base_url=g.base_url, api_key=once["value"])
        with pytest.raises(PermissionDeniedError):
            await sdk.realtime.client_secrets.create(session=SESSION)
        # bound to its model
        assert (await connect(g, once["value"], "?model=gpt-realtime-mini"))[0] == 403
        # max_uses 1: the second session is refused
        status, conn = await connect(g, once["value"])
        assert status == 101
        await conn[1].close()
        await conn[0].close()
        assert (await connect(g, once["value"]))[0] == 401

        # expired: refused (expiry is checked at every connect)
        status, short = await mint(g, new.secret, {"session": SESSION})
        async with g.gw.store.engine.begin() as conn:
            await conn.exec_driver_sql(
                "UPDATE client_secrets SET expires_at = '2020-01-01 00:00:00' WHERE prefix = ?",
                (short["value"][:10],))
        async with aiohttp.ClientSession() as http:
            async with http.get(g.http + "/v1/models",
                                headers={"Authorization": "Bearer " + short["value"]}) as r:
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "client_secret_expired"

        # revoking the minting token refuses its secrets at once, and ends their sessions
        status, live = await mint(g, new.secret, {"session": SESSION})
        status, conn = await connect(g, live["value"])
        assert status == 101
        http, ws = conn
        try:
            await events_until(ws, "session.updated")
            await g.gw.store.revoke_token("backend")
            assert (await connect(g, live["value"]))[0] == 401
            seen = []
            async for msg in ws:      # ends within the balance refresh (0.05 s here)
                seen.append(json.loads(msg.data))
            assert seen[-1]["type"] == "error" and seen[-1]["error"]["code"] == "token_revoked"
            assert ws.close_code == 1008
        finally:
            await ws.close()
            await http.close()
    finally:
        await g.stop()


async def test_origins_pin_where_a_token_and_its_secrets_may_be_used(tmp_path, upstream):
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'oo8.db'}", upstream)
    try:
        new = await ops.create_token(g.gw.store, "web", origins=["https://app.example.com"])
        status, made = await mint(g, new.secret, {"session": SESSION})
        assert status == 200
        assert (await connect(g, made["value"], Origin="https://app.example.com"))[0] == 101
        assert (await connect(g, made["value"], Origin="https://evil.example.com"))[0] == 403
        assert (await connect(g, made["value"]))[0] == 101      # no Origin: not a browser page
        status, out = await mint(g, new.secret, {"session": SESSION},
                                 Origin="https://evil.example.com")
        assert (status, out["error"]["code"]) == (403, "origin_not_allowed")
        with pytest.raises(ops.FieldError) as err:
            await ops.create_token(g.gw.store, "bad", origins=["app.example.com/path"])
        assert err.value.field == "origins"
    finally:
        await g.stop()


async def test_the_beta_shape_mints_a_secret_for_beta_clients(tmp_path, upstream):
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'oo8.db'}", upstream)
    try:
        new = await ops.create_token(g.gw.store, "beta")
        status, out = await mint(g, new.secret, {
            "model": "gpt-realtime", "modalities": ["text"], "voice": "verse",
            "instructions": "Be brief.", "client_secret": {"expires_after": {
                "anchor": "created_at", "seconds": 60}}}, path="/v1/realtime/sessions")
        assert status == 200
        assert out["object"] == "realtime.session" and out["voice"] == "verse"
        secret = out["client_secret"]["value"]
        assert secret.startswith("ek_") and abs(out["client_secret"]["expires_at"]
                                                 - (time.time() + 60)) < 5
        status, conn = await connect(g, secret, "?model=gpt-realtime",
                                     **{"OpenAI-Beta": "realtime=v1"})
        assert status == 101
        http, ws = conn
        try:
            seen = await events_until(ws, "session.updated")
            up = await upstream.session()
            first = up.received[0]["session"]          # GA upstream: translated once
            assert first["output_modalities"] == ["text"]
            assert first["audio"]["output"]["voice"] == "verse"
            assert seen[-1]["session"]["modalities"] == ["text"]       # the client's dialect
        finally:
            await ws.close()
            await http.close()
    finally:
        await g.stop()
