"""Bare do-nothing WebSocket forwarders: the practical floor for a relay.

Each accepts a client, opens the upstream at the same path and query, and
moves frames both ways without looking at them; the first close ends both
sides.  No auth, no parsing, no stages.  Same socket settings as openopen8
where the library has them (no compression, 16 MiB frames, pings answered).

    python bench/forwarders.py {picows,aiohttp,websockets} --upstream ws://127.0.0.1:PORT \
        [--port 0] [--loop asyncio|uvloop]

prints "READY <port>" once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

MAX_FRAME = 16 * 1024 * 1024


# ---- picows: callbacks, no tasks per frame ----------------------------------

async def serve_picows(host: str, port: int, upstream: str) -> None:
    from picows import WSListener, WSMsgType, ws_connect, ws_create_server

    class ToClient(WSListener):           # our client side of the upstream socket
        def __init__(self, client) -> None:
            self.client = client

        def on_ws_frame(self, t, f) -> None:
            if f.msg_type == WSMsgType.CLOSE:
                self.client.send_close(f.get_close_code() or 1000, f.get_close_message())
                self.client.disconnect()
            elif f.msg_type != WSMsgType.PING and f.msg_type != WSMsgType.PONG:
                self.client.send(f.msg_type, f.get_payload_as_memoryview(), f.fin)

        def on_ws_disconnected(self, t) -> None:
            self.client.disconnect()

    class FromClient(WSListener):         # the server side facing the client
        def __init__(self, path: str) -> None:
            self.path, self.up, self.early = path, None, []

        def on_ws_connected(self, t) -> None:
            asyncio.get_running_loop().create_task(self._connect(t))

        async def _connect(self, t) -> None:
            try:
                self.up, _ = await ws_connect(lambda: ToClient(t), upstream + self.path,
                                              max_frame_size=MAX_FRAME)
            except Exception:  # noqa: BLE001
                t.send_close(1014)
                t.disconnect()
                return
            for mt, payload, fin in self.early:
                self.up.send(mt, payload, fin)
            self.early = None

        def on_ws_frame(self, t, f) -> None:
            if f.msg_type == WSMsgType.CLOSE:
                if self.up is not None:
                    self.up.send_close(f.get_close_code() or 1000, f.get_close_message())
                    self.up.disconnect()
                t.disconnect()
            elif f.msg_type == WSMsgType.PING or f.msg_type == WSMsgType.PONG:
                return
            elif self.up is None:
                self.early.append((f.msg_type, f.get_payload_as_bytes(), f.fin))
            else:
                self.up.send(f.msg_type, f.get_payload_as_memoryview(), f.fin)

        def on_ws_disconnected(self, t) -> None:
            if self.up is not None:
                self.up.disconnect()

    server = await ws_create_server(lambda req: FromClient(req.path.decode() if isinstance(req.path, bytes) else req.path),
                                    host, port, max_frame_size=MAX_FRAME)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


# ---- aiohttp: the library openopen8 uses ------------------------------------

async def serve_aiohttp(host: str, port: int, upstream: str) -> None:
    import aiohttp
    from aiohttp import WSMsgType, web

    # limit=0: the default connector holds at most 100 connections, upgraded
    # WebSockets included, and would queue the 101st session
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def pump(src, dst) -> None:
        async for msg in src:
            if msg.type is WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        up = await http.ws_connect(upstream + request.path_qs, max_msg_size=MAX_FRAME, compress=0)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, compress=False)
        await ws.prepare(request)
        tasks = [asyncio.ensure_future(pump(ws, up)), asyncio.ensure_future(pump(up, ws))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await up.close()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


# ---- websockets: the library LiteLLM and the openai SDK use -----------------

async def serve_websockets(host: str, port: int, upstream: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def pump(src, dst) -> None:
        async for msg in src:
            await dst.send(msg)

    async def handler(client) -> None:
        async with connect(upstream + client.request.path, max_size=MAX_FRAME, compression=None) as up:
            tasks = [asyncio.ensure_future(pump(client, up)), asyncio.ensure_future(pump(up, client))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()

    async with serve(handler, host, port, max_size=MAX_FRAME, compression=None) as server:
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()


SERVERS = {"picows": serve_picows, "aiohttp": serve_aiohttp, "websockets": serve_websockets}


def raise_mmap_threshold() -> None:
    """asyncio's selector transport reads with ``sock.recv(256 KiB)``; under
    glibc's default malloc that buffer is mmap'ed, mremap'ed and munmap'ed on
    every read (three extra syscalls a frame) until a large freed chunk raises
    the dynamic mmap threshold.  Freeing one 1 MiB block does that up front,
    so no forwarder pays for where its first allocations happened to land."""
    block = bytearray(1 << 20)
    del block


def main() -> None:
    raise_mmap_threshold()
    ap = argparse.ArgumentParser(description="A bare WebSocket forwarder.")
    ap.add_argument("library", choices=sorted(SERVERS))
    ap.add_argument("--upstream", required=True, help="ws://host:port (the path is the client's)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                    help="event loop (openopen8 serves on uvloop when it is installed)")
    a = ap.parse_args()
    factory = asyncio.new_event_loop
    if a.loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(SERVERS[a.library](a.host, a.port, a.upstream.rstrip("/")))
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(0)


if __name__ == "__main__":
    main()
