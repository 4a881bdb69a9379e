"""The front door: the first protocol on every accepted connection.

It reads the HTTP request head and passes the connection on:

* a request for a Realtime path is answered here -- authenticated, routed
  and its upstream opened while the socket waits (``pause_reading``) --
  and is then either refused with an HTTP status and an OpenAI-style JSON
  body, or upgraded by handing the socket to a picows server protocol fed
  with the bytes read so far;
* anything else (health, metrics, the admin API) goes to aiohttp.

Why two libraries on one port: picows moves a frame for about half the CPU
of aiohttp (bench/relay.py), but its upgrade hook is synchronous, and a
refusal must be decided before the upgrade with database lookups and an
upstream connect.  Reading the head ourselves gives both.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from picows import WSUpgradeResponse, WSUpgradeResponseWithListener
from picows.api import WSProtocol, WSAutoPingStrategy

from ..relay.endpoint import MAX_FRAME, READ_BUFFER, WsEndpoint

log = logging.getLogger("openopen8.front")
#: picows logs every connection at INFO; sessions are logged by the gateway
_WS_LOG = logging.getLogger("openopen8.client.ws")
_WS_LOG.setLevel(logging.WARNING)

REALTIME_PATHS = frozenset({"/v1/realtime", "/realtime", "/openai/v1/realtime"})
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 15.0


@dataclass
class Head:
    """A request head as read off the socket."""

    method: str
    target: str
    path: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]

    def is_websocket_upgrade(self) -> bool:
        h = self.headers
        if self.method != "GET" or h.get("Upgrade", "").lower() != "websocket":
            return False
        if "upgrade" not in {t.strip().lower() for t in h.get("Connection", "").split(",")}:
            return False
        if h.get("Sec-WebSocket-Version", "").strip() != "13":
            return False
        try:
            return len(base64.b64decode(h.get("Sec-WebSocket-Key", ""), validate=True)) == 16
        except (binascii.Error, ValueError):
            return False


def parse_head(data: bytes) -> Head | None:
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, _ = parts
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        headers.add(name, value.strip())
    path, _, qs = target.partition("?")
    query = MultiDict(parse_qsl(qs, keep_blank_values=True))
    return Head(method, target, path, MultiDictProxy(query), CIMultiDictProxy(headers))


def http_response(status: int, body: dict[str, Any] | None = None) -> bytes:
    payload = orjson.dumps(body) if body is not None else b""
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + payload


#: what answers a Realtime request: (door, head) -> None
RealtimeHandler = Callable[["FrontDoor", Head], Awaitable[None]]


class FrontDoor(asyncio.Protocol):
    def __init__(self, on_realtime: RealtimeHandler, http_protocol: Callable[[], Any],
                 tasks: set[asyncio.Task[Any]], heartbeat: float | None) -> None:
        self._on_realtime = on_realtime
        self._http_protocol = http_protocol
        self._tasks = tasks
        self._heartbeat = heartbeat
        self._buf = bytearray()
        self.transport: Any = None
        #: the client hung up while its request was being answered
        self.lost = False
        self._timer: asyncio.TimerHandle | None = None
        self._passed = False

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self._passed:  # pipelined bytes while the Realtime request is answered
            self._buf += data
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self._reply(431, _err("Request header fields too large.", "header_too_large"))
            return
        self._cancel_timer()
        try:
            head = parse_head(bytes(self._buf[:end]))
        except UnicodeDecodeError:
            head = None
        if head is None:
            self._reply(400, _err("Malformed HTTP request.", "bad_request"))
            return
        if head.path in REALTIME_PATHS:
            self._passed = True
            self.transport.pause_reading()
            task = asyncio.ensure_future(self._answer(head))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._pass_to(self._http_protocol())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self._cancel_timer()

    # ------------------------------------------------------------ actions

    async def _answer(self, head: Head) -> None:
        try:
            await self._on_realtime(self, head)
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception:  # noqa: BLE001
            log.exception("answering %s failed", head.path)
            self._reply(500, _err("Internal gateway error.", "internal_error", "server_error"))

    def refuse(self, status: int, body: dict[str, Any]) -> None:
        self._reply(status, body)

    def abort(self) -> None:
        if not self.lost and self.transport is not None and not self._upgraded():
            self.transport.abort()

    def upgrade(self, listener: WsEndpoint, subprotocol: str | None) -> bool:
        """Hand the socket to picows with ``listener`` as its WebSocket;
        True once the 101 went out (picows validated the request)."""
        if self.lost:
            return False
        headers = {"Sec-WebSocket-Protocol": subprotocol} if subprotocol else None
        response = WSUpgradeResponse.create_101_response(extra_headers=headers)
        ping = self._heartbeat
        # the server protocol ws_create_server would make (picows/api.py),
        # made here because the socket is already accepted
        proto = WSProtocol(
            None, None, False,
            lambda request: WSUpgradeResponseWithListener(response, listener),
            _WS_LOG, True, None,
            bool(ping), ping or 20.0, min(ping or 20.0, 20.0), WSAutoPingStrategy.PING_WHEN_IDLE,
            True, MAX_FRAME, None, READ_BUFFER)
        self._pass_to(proto)
        self.transport.resume_reading()
        return listener.t is not None

    def _upgraded(self) -> bool:
        return self.transport.get_protocol() is not self

    def _pass_to(self, proto: Any) -> None:
        t, data = self.transport, bytes(self._buf)
        self._buf = bytearray()
        t.set_protocol(proto)
        proto.connection_made(t)
        if hasattr(proto, "get_buffer") and not hasattr(proto, "data_received"):
            view = memoryview(data)
            while view:   # a BufferedProtocol: copy into the buffers it lends
                buf = proto.get_buffer(len(view))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                proto.buffer_updated(n)
                view = view[n:]
        elif data:
            proto.data_received(data)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        if self.lost or self.transport is None or self._upgraded():
            return
        self.transport.write(http_response(status, body))
        self.transport.close()

    def _too_slow(self) -> None:
        if not self._passed and self.transport is not None:
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _err(message: str, code: str, type: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}
