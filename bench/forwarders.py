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


# ---- picows with openopen8's stages: what the gateway could cost on picows ---
# Not openopen8: no auth, no ledger I/O.  The picows forwarder above, plus what
# openopen8 does per frame -- an Event (type peeked), the real stage chain
# (frames, dialect, audio, limits, metering with a sink that keeps nothing),
# the session counters -- run synchronously in the frame callbacks.

async def serve_picows_stages(host: str, port: int, upstream: str) -> None:
    from types import SimpleNamespace
    from picows import WSListener, WSMsgType, ws_connect, ws_create_server

    from openopen8.billing import PriceTable
    from openopen8.events import Event
    from openopen8.relay.stage import Chain, Session
    from openopen8.stages.audio import AudioStage
    from openopen8.stages.dialect import DialectStage
    from openopen8.stages.frames import FrameStage
    from openopen8.stages.limits import LimitsStage
    from openopen8.stages.metering import MeteringStage

    class Sink:
        def record(self, row) -> None: ...
        def opened(self, sid, ch) -> None: ...
        def closed(self, end, tid) -> None: ...

    prices = PriceTable({}, None)
    frames, dialect, audio = FrameStage(), DialectStage("client"), AudioStage()
    TEXT = WSMsgType.TEXT

    def relay(s: Session, through, out_transport, out_count: str):
        def on_text(payload: str) -> None:
            ev = Event(payload)
            setattr(s, out_count, getattr(s, out_count) + 1)
            out = through(ev, s)
            for e in (out if out.__class__ is list else (out,)):
                out_transport.send(TEXT, e.text.encode())
        return on_text

    class ToClient(WSListener):
        def __init__(self, client, s: Session, chain: Chain) -> None:
            self.client = client
            self.on_text = relay(s, chain.pass_server, client, "events_out")

        def on_ws_frame(self, t, f) -> None:
            if f.msg_type == TEXT:
                self.on_text(f.get_payload_as_utf8_text())
            elif f.msg_type == WSMsgType.CLOSE:
                self.client.send_close(f.get_close_code() or 1000)
                self.client.disconnect()

        def on_ws_disconnected(self, t) -> None:
            self.client.disconnect()

    class FromClient(WSListener):
        def __init__(self, path: str) -> None:
            self.path, self.up, self.early = path, None, []
            self.s = Session(id="s", model="gpt-realtime", channel=SimpleNamespace(name="c"))
            meter = MeteringStage(Sink(), prices, 1)
            limits = LimitsStage(meter, SimpleNamespace(max_duration=None, idle_timeout=None), None)
            self.chain = Chain([frames, dialect, audio, limits, meter])
            self.chain.open(self.s)

        def on_ws_connected(self, t) -> None:
            asyncio.get_running_loop().create_task(self._connect(t))

        async def _connect(self, t) -> None:
            try:
                self.up, _ = await ws_connect(lambda: ToClient(t, self.s, self.chain),
                                              upstream + self.path, max_frame_size=MAX_FRAME)
            except Exception:  # noqa: BLE001
                t.send_close(1014)
                t.disconnect()
                return
            self.on_text = relay(self.s, self.chain.pass_client, self.up, "events_in")
            for payload in self.early:
                self.on_text(payload)
            self.early = None

        def on_ws_frame(self, t, f) -> None:
            if f.msg_type == TEXT:
                if self.up is None:
                    self.early.append(f.get_payload_as_utf8_text())
                else:
                    self.on_text(f.get_payload_as_utf8_text())
            elif f.msg_type == WSMsgType.CLOSE:
                if self.up is not None:
                    self.up.send_close(f.get_close_code() or 1000)
                    self.up.disconnect()
                t.disconnect()

        def on_ws_disconnected(self, t) -> None:
            if self.up is not None:
                self.up.disconnect()

    server = await ws_create_server(lambda req: FromClient(req.path.decode() if isinstance(req.path, bytes) else req.path),
                                    host, port, max_frame_size=MAX_FRAME)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


# ---- aiohttp facing the client, picows to the upstream -----------------------
# (what openopen8 would look like with only its upstream client swapped:
# aiohttp keeps the pre-upgrade auth and the admin API)

async def serve_aiohttp_picows(host: str, port: int, upstream: str) -> None:
    from aiohttp import WSMsgType as AM, web
    from picows import WSListener, WSMsgType, ws_connect

    class FromUpstream(WSListener):
        def __init__(self, queue: asyncio.Queue) -> None:
            self.queue = queue

        def on_ws_frame(self, t, f) -> None:
            if f.msg_type == WSMsgType.TEXT:
                self.queue.put_nowait(f.get_payload_as_utf8_text())
            elif f.msg_type == WSMsgType.CLOSE:
                self.queue.put_nowait(None)

        def on_ws_disconnected(self, t) -> None:
            self.queue.put_nowait(None)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        queue: asyncio.Queue = asyncio.Queue()
        up, _ = await ws_connect(lambda: FromUpstream(queue), upstream + request.path_qs,
                                 max_frame_size=MAX_FRAME)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, compress=False)
        await ws.prepare(request)

        async def to_upstream() -> None:
            async for msg in ws:
                if msg.type is AM.TEXT:
                    up.send(WSMsgType.TEXT, msg.data.encode())

        async def to_client() -> None:
            while (data := await queue.get()) is not None:
                await ws.send_str(data)

        tasks = [asyncio.ensure_future(to_upstream()), asyncio.ensure_future(to_client())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        up.send_close(1000)
        up.disconnect()
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


SERVERS = {"picows": serve_picows, "aiohttp": serve_aiohttp, "websockets": serve_websockets,
           "aiohttp-picows": serve_aiohttp_picows, "picows-stages": serve_picows_stages}


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
