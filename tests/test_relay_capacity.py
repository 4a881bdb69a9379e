"""The gateway carries more concurrent sessions than aiohttp's default
connection pool (100): every open session holds one upstream connection."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

SESSIONS = 120


@pytest.fixture
async def upstream():
    """A tiny upstream: session.created on connect, then echoes every frame."""
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"session.created","event_id":"event_0","session":{}}')
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


async def test_more_sessions_than_the_default_connection_pool(gateway, upstream):
    gateway.gw.settings.connect_timeout = 3.0
    gateway.gw.router.timeout = 3.0
    await gateway.channel("up", upstream, ["gpt-realtime"])
    secret = await gateway.token()
    headers = {"Authorization": f"Bearer {secret}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sockets = []
        try:
            async def one(i: int) -> None:
                ws = await http.ws_connect(gateway.url + "?model=gpt-realtime", headers=headers)
                sockets.append(ws)
                first = await ws.receive_str(timeout=10)
                assert '"session.created"' in first
                await ws.send_str(f'{{"type":"bench.echo","event_id":"evt_{i}"}}')
                assert f'"evt_{i}"' in await ws.receive_str(timeout=10)

            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(SESSIONS))), 60)
            assert len(gateway.gw.sessions) == SESSIONS
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
