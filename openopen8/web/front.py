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
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from picows import WSUpgradeResponse, WSUpgradeResponseWithListener
from picows.api import WSProtocol, WSAutoPingStrategy

from .. import peerlog
from ..errors import GatewayError
from ..relay.endpoint import MAX_FRAME, READ_BUFFER, WsEndpoint

log = logging.getLogger("openopen8.front")
#: picows logs every connection at INFO; sessions are logged by the gateway
_WS_LOG = logging.getLogger("openopen8.client.ws")
_WS_LOG.setLevel(logging.WARNING)
#: aiohttp's traceback for a request it cannot parse becomes one line (peerlog.py)
peerlog.install()

REALTIME_PATHS = frozenset({"/v1/realtime", "/realtime", "/openai/v1/realtime"})
MAX_HEAD = 16 * 1024
#: bytes a client may send after its head before the upgrade is answered
#: (then reading pauses until it is)
MAX_EARLY = 64 * 1024
HEAD_TIMEOUT = 15.0


#: RFC 9110 token characters (header names); field values may not hold
#: control characters other than HTAB (RFC 9110 5.5: NUL, CR, LF are invalid)
_TOKEN_PATTERN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN = re.compile(_TOKEN_PATTERN)
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HTTP_11 = re.compile(r"HTTP/1\.[1-9]")
#: method SP target SP HTTP/1.x -- what a first line must be before the head is complete
_REQUEST_LINE = re.compile((_TOKEN_PATTERN + r" [^ \x00-\x1f\x7f]+ HTTP/1\.[0-9]").encode())


def _tokens(headers: CIMultiDictProxy[str], name: str) -> set[str]:
    """The comma-separated tokens of every ``name`` header, lower-cased."""
    return {t.strip().lower() for v in headers.getall(name, ()) for t in v.split(",")}


@dataclass
class Head:
    """A request head as read off the socket."""

    method: str
    target: str
    path: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    version: str = "HTTP/1.1"

    def upgrade_problem(self) -> GatewayError | None:
        """Why this request cannot be upgraded to a WebSocket, or None.

        The one validation of the upgrade (RFC 6455 4.2.1, RFC 9110): it
        runs before any token lookup or upstream connect, and picows is then
        handed a canonical head it always accepts (:meth:`canonical`), so
        what is accepted here is exactly what gets a 101.  Every form the
        RFCs allow passes: ``Connection`` as a token list (``keep-alive,
        Upgrade``, several header lines), any letter case, any HTTP/1.x from
        1.1 on."""
        h = self.headers
        if (self.method != "GET" or "websocket" not in _tokens(h, "Upgrade")
                or "upgrade" not in _tokens(h, "Connection")):
            return GatewayError("This endpoint needs a WebSocket upgrade (GET with "
                                "'Connection: Upgrade' and 'Upgrade: websocket').",
                                code="upgrade_required", status=426,
                                headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        if not _HTTP_11.fullmatch(self.version):
            return GatewayError(f"A WebSocket upgrade needs HTTP/1.1; this request is "
                                f"{self.version}.", code="bad_request")
        versions = h.getall("Sec-WebSocket-Version", ())
        if [v.strip() for v in versions] != ["13"]:
            return GatewayError("Unsupported WebSocket version: this gateway speaks version 13 "
                                "(RFC 6455).", code="upgrade_required", status=426,
                                param="Sec-WebSocket-Version",
                                headers={"Sec-WebSocket-Version": "13"})
        keys = h.getall("Sec-WebSocket-Key", ())
        try:
            ok = len(keys) == 1 and len(base64.b64decode(keys[0].strip(), validate=True)) == 16
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            return GatewayError("Sec-WebSocket-Key must be one base64-encoded 16-byte value.",
                                code="bad_request", param="Sec-WebSocket-Key")
        lengths = h.getall("Content-Length", ())
        if "Transfer-Encoding" in h or any(v.strip() != "0" for v in lengths) or len(lengths) > 1:
            return GatewayError("A WebSocket upgrade request cannot have a body.",
                                code="bad_request")
        return None

    def canonical(self) -> bytes:
        """The upgrade request as picows reads it: only what the handshake
        needs, in the one spelling picows accepts (it wants ``Connection:
        Upgrade`` exactly and HTTP/1.1)."""
        key = self.headers["Sec-WebSocket-Key"].strip()
        return ("GET /v1/realtime HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n").encode()


def parse_head(data: bytes) -> Head | None:
    """The request line and headers, or None when they are not HTTP/1.x as
    RFC 9110/9112 allow (a header name that is not a token, a control
    character such as NUL in a value, folded lines)."""
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not _TOKEN.fullmatch(parts[0]):
        return None
    method, target, version = parts
    if not target or _CTL.search(target):
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or _CTL.search(value):
            return None
        headers.add(name, value.strip(" \t"))
    path, _, qs = target.partition("?")
    query = MultiDict(parse_qsl(qs, keep_blank_values=True))
    return Head(method, target, path, MultiDictProxy(query), CIMultiDictProxy(headers), version)


def http_response(status: int, body: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None) -> bytes:
    payload = orjson.dumps(body) if body is not None else b""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + payload


#: what answers a Realtime request: (door, head) -> None
RealtimeHandler = Callable[["FrontDoor", Head], Awaitable[None]]


class FrontDoor(asyncio.Protocol):
    #: the listener's doors still waiting for a request head (web/listen.py's
    #: ``Waiting``, set by its create_server): out of descriptors, it closes
    #: the oldest of them (:meth:`shed`) to make room
    waiting: Any = None

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
        #: set when it does: admission waits on it to drop an upstream connect
        self.hung_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: the client's address as the gateway counts it (X-Forwarded-For from a
        #: trusted proxy, else the peer's): set by the Realtime handler
        self.client: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._passed = False
        self._paused = False
        self._head_end = 0

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._too_slow)
        if self.waiting is not None:
            self.waiting.add(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._passed:
            # bytes after the head while the Realtime request is answered
            # (RFC 6455 says a client waits for the 101; a few may not): kept
            # for picows.  Reading goes on so that a hang-up is noticed.
            if len(self._buf) - self._head_end > MAX_EARLY and not self._paused:
                self._paused = True
                self.transport.pause_reading()
            return
        end = self._buf.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if len(self._buf) > MAX_HEAD:
                self._bad_head(431, "Request header fields too large.", "header_too_large")
            elif self._buf[:1] == b"\x16":
                # a TLS ClientHello on a plain port (a wss:// URL for a ws://
                # gateway): close now, so the client fails at once instead of
                # after the head timeout
                self.transport.close()
            elif not self._request_line_ok():
                self._bad_head(400, "Malformed HTTP request.", "bad_request")
            return
        self._cancel_timer()
        try:
            head = parse_head(bytes(self._buf[:end]))
        except UnicodeDecodeError:
            head = None
        if head is None:
            self._bad_head(400, "Malformed HTTP request.", "bad_request")
            return
        if head.path in REALTIME_PATHS:
            self._passed = True
            self._head_end = end + 4
            task = asyncio.ensure_future(self._answer(head))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._pass_to(self._http_protocol())

    def _request_line_ok(self) -> bool:
        """False once a first line has arrived that is no HTTP/1.x request
        line (no need to wait for the rest of a head that is not one)."""
        eol = self._buf.find(b"\r\n")
        return eol < 0 or _REQUEST_LINE.fullmatch(self._buf, 0, eol) is not None

    def eof_received(self) -> bool:
        # a client that half-closes before its upgrade is answered has hung up
        self._hang_up()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._hang_up()
        self._cancel_timer()

    def _hang_up(self) -> None:
        self.lost = True
        if not self.hung_up.done():
            self.hung_up.set_result(None)

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

    def _peername(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport is not None else None

    @property
    def peer(self) -> str:
        """The client's address as the socket has it ("host:port")."""
        addr = self._peername()
        if isinstance(addr, tuple) and len(addr) >= 2:
            return f"{addr[0]}:{addr[1]}"
        return str(addr or "")

    @property
    def host(self) -> str:
        """The socket peer's address, without the port."""
        addr = self._peername()
        return str(addr[0]) if isinstance(addr, tuple) and addr else ""

    def refuse(self, status: int, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> None:
        self._reply(status, body, headers)

    def abort(self) -> None:
        if not self.lost and self.transport is not None and not self._upgraded():
            self.transport.abort()

    def upgrade(self, listener: WsEndpoint, subprotocol: str | None, head: Head) -> bool:
        """Hand the socket to picows with ``listener`` as its WebSocket; True
        once the 101 went out.  ``head`` passed :meth:`Head.upgrade_problem`;
        picows reads its canonical form, which it always accepts."""
        if self.lost:
            return False
        headers = {"Sec-WebSocket-Protocol": subprotocol} if subprotocol else None
        response = WSUpgradeResponse.create_101_response(extra_headers=headers)
        ping = self._heartbeat
        # the server protocol ws_create_server would make (picows/api.py),
        # made here because the socket is already accepted; keywords, so that a
        # change of picows' signature fails loudly (every upgrade test)
        proto = WSProtocol(
            host_port=None, ws_path=None, is_client_side=False,
            ws_listener_factory=lambda request: WSUpgradeResponseWithListener(response, listener),
            logger=peerlog.ws_logger(_WS_LOG, self.client or self.peer),
            disconnect_on_exception=True, websocket_handshake_timeout=None,
            enable_auto_ping=bool(ping), auto_ping_idle_timeout=ping or 20.0,
            auto_ping_reply_timeout=min(ping or 20.0, 20.0),
            auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE, enable_auto_pong=True,
            max_frame_size=MAX_FRAME, extra_headers=None, read_buffer_init_size=READ_BUFFER)
        self._buf[:self._head_end] = head.canonical()
        self._pass_to(proto)
        if self._paused:
            self._paused = False
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

    def _bad_head(self, status: int, message: str, code: str) -> None:
        """The door's own refusals of a request head it could not take: one
        throttled INFO line (like aiohttp's bad requests), then the answer."""
        peerlog.note(log, ("bad head", status), "bad request from %s: %d %s", self.peer, status,
                     code)
        self._reply(status, _err(message, code))

    def _reply(self, status: int, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> None:
        if self.lost or self.transport is None or self._upgraded():
            return
        self.transport.write(http_response(status, body, headers))
        self.transport.close()

    def _too_slow(self) -> None:
        if self._passed or self.transport is None:
            return
        if self._buf:   # a head begun and not finished in time: say so (RFC 9110 408)
            self._bad_head(408, f"The request head did not arrive within {HEAD_TIMEOUT:g} s.",
                           "request_timeout")
        else:           # a connection that never sent a byte (a preconnect, an idle socket)
            self.transport.close()

    def shed(self) -> None:
        """Closed to free its descriptor: the gateway ran out of them while
        this client held one without sending its request head."""
        if self._buf:
            self._reply(408, _err("The request head did not arrive in time (the gateway is "
                                  "at its connection limit).", "request_timeout"))
        else:
            self.transport.close()

    def _cancel_timer(self) -> None:
        # the head is complete or the connection is gone: no longer waiting for it
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.waiting is not None:
            self.waiting.discard(self)


def _err(message: str, code: str, type: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}
