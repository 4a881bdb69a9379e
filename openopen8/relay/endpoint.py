"""Endpoints: the two ends of a relay.

An endpoint is anything with ``recv()``, ``send(event)`` and
``close(code, reason)``.  The client socket and an OpenAI/Azure upstream are
WebSockets (:class:`WsEndpoint`); the local engine is an in-process endpoint
that speaks the same events, so the relay cannot tell them apart.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
from aiohttp import WSMsgType

from ..events import Event

#: OpenAI accepts 15 MiB appends; leave headroom for the JSON around them.
MAX_FRAME = 16 * 1024 * 1024


class Endpoint(Protocol):
    #: set once ``recv()`` returned None
    close_code: int | None
    close_reason: str

    async def recv(self) -> Event | None:
        """The next event, or None once the peer has closed."""

    async def send(self, ev: Event) -> None:
        """Send one event; raises ``ConnectionError`` if the peer is gone."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (idempotent)."""


class WsEndpoint:
    """An aiohttp WebSocket (server- or client-side) as an endpoint.

    aiohttp answers pings itself, pauses the TCP reader when its frame queue
    is full and makes ``send_str`` wait for the socket to drain, so a peer
    that stops reading slows the other pump instead of growing memory.
    """

    __slots__ = ("ws", "close_code", "close_reason", "_pushed")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse | "aiohttp.web.WebSocketResponse") -> None:
        self.ws = ws
        self.close_code: int | None = None
        self.close_reason = ""
        self._pushed: list[Event] = []

    def push_back(self, ev: Event) -> None:
        """Return an already-read event so the next ``recv()`` yields it."""
        self._pushed.append(ev)

    async def recv(self) -> Event | None:
        if self._pushed:
            return self._pushed.pop(0)
        ws = self.ws
        while True:
            msg = await ws.receive()
            t = msg.type
            if t is WSMsgType.TEXT:
                return Event(msg.data)
            if t is WSMsgType.BINARY:
                ev = Event()
                ev.invalid = "binary"
                return ev
            if t in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                self._closed(msg)
                return None
            if t is WSMsgType.ERROR:
                if self.close_code is None:
                    self.close_code = 1006 if not isinstance(msg.data, aiohttp.WSMessageTooBig) else 1009
                    self.close_reason = str(msg.data)[:120]
                return None
            # PING/PONG are handled by aiohttp (autoping); anything else: skip

    def _closed(self, msg: aiohttp.WSMessage) -> None:
        if self.close_code is not None:
            return
        code = self.ws.close_code
        if msg.type is WSMsgType.CLOSE:
            code = msg.data
            self.close_reason = msg.extra or ""
        self.close_code = code if code is not None else 1006

    async def send(self, ev: Event) -> None:
        try:
            await self.ws.send_str(ev.text)
        except (ConnectionError, RuntimeError) as exc:  # closing transport
            raise ConnectionError(str(exc)) from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        try:
            await self.ws.close(code=code, message=reason.encode()[:120])
        except Exception:  # noqa: BLE001 - the peer may already be gone
            pass
