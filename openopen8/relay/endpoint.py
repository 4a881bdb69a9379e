"""Endpoints: the two ends of a relay.

An endpoint delivers what it reads by calling back and sends without
waiting, so a frame crosses the gateway inside one read callback: no task,
no queue, no coroutine switch per event.  The relay ``attach``-es three
callbacks -- ``on_event(ev)``, ``on_closed()`` and ``on_writable(ok)`` (the
write buffer crossed its high / low water mark) -- and answers a full buffer
on one side by pausing reads on the other.

:class:`WsEndpoint` is a WebSocket on picows (the client's socket and the
OpenAI/Azure upstream alike).  An object with coroutine ``recv()`` /
``send()`` -- the local engine, in-memory test doubles -- becomes an endpoint
through :class:`PumpEndpoint` (``as_endpoint`` does that when needed), so the
relay cannot tell them apart.

Between two WebSockets the relay may also open :class:`Lanes`, handed to
:meth:`WsEndpoint.attach`.  A text frame whose type has a lane is given to
the lane's watchers (``watch(data)``, often one, maybe none) and written to
the lane's destination endpoint as the bytes it arrived as: no
:class:`Event`, no decoding, no call into the relay.  The endpoint counts
those frames (:attr:`WsEndpoint.lane_events`, :attr:`WsEndpoint.lane_bytes`).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable, Protocol

from picows import WSListener, WSMsgType

from ..events import TYPE_PREFIXES, Event, wire_event

#: OpenAI accepts 15 MiB appends; leave headroom for the JSON around them.
MAX_FRAME = 16 * 1024 * 1024

#: picows' first read buffer per socket; it doubles as frames need (an idle
#: session should not hold 2 x 16 KiB, picows' default)
READ_BUFFER = 4096

#: how long ``close()`` waits for the peer to answer a close frame
CLOSE_WAIT = 2.0

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


def _nothing(*_: Any) -> None:
    return None


#: the waits of _read_disconnect (a task needs a reference while it runs)
_WAITS: set[asyncio.Task] = set()


def _read_disconnect(transport: Any) -> None:
    """Read what ended a client-side connection (an upstream's).  picows puts
    the error that ended it (a protocol error, logged as one line already) on
    a future only ``wait_disconnected()`` reads; unread, asyncio logs it at
    garbage collection as an ERROR with a traceback ("Future exception was
    never retrieved").  Started when the connection ends, not held open for
    the session's life."""
    wait = asyncio.ensure_future(transport.wait_disconnected())
    _WAITS.add(wait)
    wait.add_done_callback(_read)


def _read(wait: asyncio.Task) -> None:
    _WAITS.discard(wait)
    if not wait.cancelled():
        wait.exception()


def _heads(t: str) -> list[bytes]:
    return [(prefix + t + '"').encode() for prefix in TYPE_PREFIXES]


class Lanes:
    """The lanes of one direction: event type -> ``(watchers, destination)``.

    Written by the relay alone, read by the endpoint on every frame.  A lane
    is found by the frame's first bytes, ``{"type":"<type>"`` (or the Python
    SDK's ``{"type": "<type>"``), so that the lookup is a slice and a dict
    get per distinct head length, with no search for the end of the type."""

    __slots__ = ("by_head", "lengths")

    def __init__(self) -> None:
        self.by_head: dict[bytes, tuple[Any, Any]] = {}
        self.lengths: tuple[int, ...] = ()

    def open(self, t: str, watchers: tuple[Callable[[bytes], None], ...], dest: Any) -> None:
        for head in _heads(t):
            self.by_head[head] = (watchers, dest)
        self.lengths = tuple(sorted({len(h) for h in self.by_head}))

    def clear(self) -> None:
        self.by_head.clear()
        self.lengths = ()


_NO_LANES = Lanes()


class Endpoint(Protocol):
    #: set once the peer closed (or the endpoint was closed)
    close_code: int | None
    close_reason: str

    def attach(self, on_event: Callable[[Event], None], on_closed: Callable[[], None],
               on_writable: Callable[[bool], None]) -> None:
        """Start delivering: events read before this come first, in order."""

    def send(self, ev: Event) -> None:
        """Queue one event for the peer without waiting (dropped once closed)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (idempotent)."""


class WsEndpoint(WSListener):
    """A picows WebSocket, either side, as an endpoint.

    Text frames become :class:`Event` objects (a fragmented message is
    joined first); binary frames become events marked ``invalid``; pings are
    answered by picows.  Frames that arrive before :meth:`attach` wait in a
    list, and :meth:`wait_early` lets the upstream handshake look at the
    first one."""

    # slots: read on every frame, found faster than in an instance dict
    __slots__ = ("t", "close_code", "close_reason", "wire_send", "_lanes", "_on_lane_error",
                 "lane_events", "lane_bytes", "_on_event", "_on_closed", "_on_writable",
                 "_early", "_first", "_frag", "_frag_type", "_frag_size", "_closed",
                 "_peer_close", "_paused")

    def __init__(self) -> None:
        self.t: Any = None
        self.close_code: int | None = None
        self.close_reason = ""
        #: ``wire_send(msg_type, payload)`` writes a frame: picows' send, a no-op once closed
        self.wire_send: Callable[..., None] = _nothing
        self._lanes = _NO_LANES
        self._on_lane_error: Callable[[], None] = _nothing
        #: frames (and their bytes) that went through lanes
        self.lane_events = 0
        self.lane_bytes = 0
        self._on_event: Callable[[Event], None] = self._stash
        self._on_closed: Callable[[], None] = _nothing
        self._on_writable: Callable[[bool], None] = _nothing
        self._early: list[Event] = []
        self._first: asyncio.Future[None] | None = None
        self._frag: list[bytes] | None = None
        self._frag_type: Any = None
        self._frag_size = 0
        self._closed = False          # close seen or sent: the relay was told
        self._peer_close = False      # the peer's close frame arrived
        self._paused = False

    # ---------------------------------------------------------- picows side

    def on_ws_connected(self, transport: Any) -> None:
        self.t = transport
        self.wire_send = transport.send

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.rsv1:
            # no extension is negotiated, so a set reserved bit is a protocol
            # error (RFC 6455 5.2); picows reports RSV1 and leaves it to us
            self._fail(1002, "reserved bit RSV1 set without a negotiated extension")
            return
        mt = frame.msg_type
        if mt == _TEXT and frame.fin and self._frag is None:
            # a lane takes the frame's bytes as they came: not decoded, not
            # encoded again to be sent (ASCII is valid UTF-8)
            data = frame.get_payload_as_bytes()
            lanes = self._lanes
            by_head = lanes.by_head
            for n in lanes.lengths:
                lane = by_head.get(data[:n])
                if lane is not None:
                    if not data.isascii():
                        break
                    watchers, dest = lane
                    self.lane_events += 1
                    self.lane_bytes += len(data)
                    try:
                        for watch in watchers:
                            watch(data)
                    except Exception:  # noqa: BLE001 - as on the relay's own path
                        self._on_lane_error()
                        return
                    dest.wire_send(_TEXT, data)
                    return
            self._deliver_text(data)
        elif mt == _CLOSE:
            code = int(frame.get_close_code()) or 1005
            try:
                reason = frame.get_close_reason()
            except UnicodeDecodeError:
                reason = ""
            self._peer_close = True
            if self.close_code is None:
                self.close_code, self.close_reason = code, reason
            if not transport.is_close_frame_sent:
                transport.send_close(code if code != 1005 else 1000)
            transport.disconnect()
            self._ended()
        elif mt == _TEXT or mt == _BINARY or mt == _CONT:
            self._fragment(mt, frame)
        # PING is answered by picows (auto-pong); PONG needs nothing

    def _fragment(self, mt: Any, frame: Any) -> None:
        if mt == _CONT:
            if self._frag is None:
                self._fail(1002, "continuation frame without a message")
                return
        else:
            if self._frag is not None:
                self._fail(1002, "new message before the last one ended")
                return
            self._frag, self._frag_type, self._frag_size = [], mt, 0
        self._frag_size += frame.payload_size
        if self._frag_size > MAX_FRAME:
            self._fail(1009, "message too big")
            return
        self._frag.append(frame.get_payload_as_bytes())
        if not frame.fin:
            return
        payload, kind = b"".join(self._frag), self._frag_type
        self._frag = None
        if kind == _TEXT:
            self._deliver_text(payload)
        else:
            ev = Event()
            ev.invalid = "binary"
            self._on_event(ev)

    def _deliver_text(self, payload: bytes) -> None:
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self._fail(1007, "invalid UTF-8 in a text frame")
            return
        self._on_event(wire_event(text))

    def on_ws_disconnected(self, transport: Any) -> None:
        if self.close_code is None:
            # picows itself closed for a protocol error (a bad opcode, a frame
            # too big): the code it sent, else the connection was just lost
            sent = getattr(transport.close_handshake, "sent", None)
            if sent is not None:
                self.close_code, self.close_reason = int(sent.code), sent.reason or ""
            else:
                self.close_code, self.close_reason = 1006, "connection lost"
        if transport.is_client_side:
            _read_disconnect(transport)
        self._ended()

    def pause_writing(self) -> None:
        self._on_writable(False)

    def resume_writing(self) -> None:
        self._on_writable(True)

    def _fail(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        t = self.t
        if not t.is_close_frame_sent:
            t.send_close(code, reason.encode())
        t.disconnect()
        self._ended()

    def _ended(self) -> None:
        if not self._closed:
            self._closed = True
            self.wire_send = _nothing
            self._lanes = _NO_LANES
            fut = self._first
            if fut is not None and not fut.done():
                fut.set_result(None)
            self._on_closed()

    def _stash(self, ev: Event) -> None:
        self._early.append(ev)
        fut = self._first
        if fut is not None and not fut.done():
            fut.set_result(None)

    # ----------------------------------------------------------- relay side

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_early(self, n: int) -> Event | None:
        """Wait until ``n`` events were read before :meth:`attach` (they stay
        queued for the relay) or the peer closed; the first event, if any."""
        while len(self._early) < n and not self._closed:
            self._first = asyncio.get_running_loop().create_future()
            await self._first
        return self._early[0] if self._early else None

    def attach(self, on_event: Callable[[Event], None], on_closed: Callable[[], None],
               on_writable: Callable[[bool], None],
               lanes: Lanes | None = None,
               on_lane_error: Callable[[], None] = _nothing) -> None:
        """``lanes`` belong to the relay (it changes them in place): frames
        of their types go through them instead of to ``on_event``;
        ``on_lane_error()`` is called when a lane's watcher raised."""
        early, self._early = self._early, []
        self._on_writable = on_writable
        self._on_closed = on_closed
        for ev in early:
            on_event(ev)
        self._on_event = on_event
        if self._closed:
            on_closed()
        elif lanes is not None:
            self._lanes = lanes
            self._on_lane_error = on_lane_error

    def send(self, ev: Event) -> None:
        self.wire_send(_TEXT, ev.text)

    def pause_reading(self) -> None:
        if not self._paused and self.t is not None and not self._closed:
            self._paused = True
            self.t.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if not self._closed:
                self.t.underlying_transport.resume_reading()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        t = self.t
        if t is None or t.is_disconnected:
            self._ended()
            return
        if not t.is_close_frame_sent:
            t.send_close(code, reason.encode()[:120])
        if self._peer_close:
            t.disconnect()
        else:
            # the peer answers with its close frame (we disconnect then) or
            # hangs up; either way picows reports the disconnect
            self.resume_reading()
            try:
                await asyncio.wait_for(t.wait_disconnected(), CLOSE_WAIT)
            except Exception:  # noqa: BLE001 - timeout or a picows error: it is gone either way
                t.disconnect(False)
        self._ended()


class PumpEndpoint:
    """An endpoint made of an object with coroutine ``recv()`` (None at the
    end) / ``send(ev)`` / ``close(code, reason)``: a reader task delivers what
    ``recv`` returns and a writer task feeds ``send`` in order.  More than
    ``limit`` unsent events report the endpoint unwritable until half drain."""

    def __init__(self, inner: Any, limit: int = 256) -> None:
        self.inner = inner
        self.limit = limit
        self._out: collections.deque[Event] = collections.deque()
        self._wake = asyncio.Event()
        self._go = asyncio.Event()
        self._go.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._full = False
        self._on_writable: Callable[[bool], None] = _nothing
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def close_code(self) -> int | None:
        return self.inner.close_code

    @property
    def close_reason(self) -> str:
        return self.inner.close_reason

    def attach(self, on_event: Callable[[Event], None], on_closed: Callable[[], None],
               on_writable: Callable[[bool], None]) -> None:
        self._on_writable = on_writable
        self._tasks = [asyncio.ensure_future(self._read(on_event, on_closed)),
                       asyncio.ensure_future(self._write())]

    async def _read(self, on_event: Callable[[Event], None], on_closed: Callable[[], None]) -> None:
        recv, go = self.inner.recv, self._go
        while True:
            if not go.is_set():
                await go.wait()
            ev = await recv()
            if ev is None:
                break
            on_event(ev)
        on_closed()

    async def _write(self) -> None:
        out, send = self._out, self.inner.send
        while True:
            while out:
                try:
                    await send(out[0])
                except ConnectionError:
                    out.clear()
                    self._idle.set()
                    return
                out.popleft()
                if self._full and len(out) <= self.limit // 2:
                    self._full = False
                    self._on_writable(True)
            self._idle.set()
            self._wake.clear()
            await self._wake.wait()

    def send(self, ev: Event) -> None:
        self._out.append(ev)
        self._idle.clear()
        self._wake.set()
        if not self._full and len(self._out) > self.limit:
            self._full = True
            self._on_writable(False)

    def pause_reading(self) -> None:
        self._go.clear()

    def resume_reading(self) -> None:
        self._go.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._go.set()
        if self._out and self._tasks:   # what was sent before the close goes first
            try:
                await asyncio.wait_for(self._idle.wait(), CLOSE_WAIT)
            except TimeoutError:
                pass
        for t in self._tasks:
            t.cancel()
        await self.inner.close(code, reason)


def as_endpoint(ep: Any) -> Any:
    """``ep`` itself when it is a push endpoint, else wrapped in a pump."""
    return ep if hasattr(ep, "attach") else PumpEndpoint(ep)
