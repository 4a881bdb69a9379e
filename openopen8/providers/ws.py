"""Opening an upstream Realtime WebSocket (picows), with OpenAI's failure
shapes turned into :class:`UpstreamError` classes.

OpenAI upgrades every request (even with a bad key) and reports the failure
as the first frame -- an ``error`` -- followed at once by close 3000 (auth)
or 4000 (request shape).  So a handshake is only good once the first frame
is in and is not such an error; that frame stays queued for the relay.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from picows import WSError, WSHandshakeError, ws_connect

from .. import peerlog
from ..relay.endpoint import MAX_FRAME, READ_BUFFER, WsEndpoint
from .base import UpstreamError

#: how long to wait for the close that follows a first-frame ``error``
_ERROR_CLOSE_GRACE = 1.0

#: picows logs every connection at INFO; the gateway logs sessions itself
_LOG = logging.getLogger("openopen8.upstream.ws")
_LOG.setLevel(logging.WARNING)

_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:  # one context: loading the CA store costs ~10 ms
        _TLS = ssl.create_default_context()
    return _TLS


def _kind_for_close(code: int | None) -> str:
    if code == 3000:
        return "auth"
    if code is not None and 4000 <= code <= 4999:
        return "rejected"
    return "unavailable"


def _kind_for_status(status: int) -> str:
    if status in (401, 403):
        return "auth"
    if status >= 500:
        return "unavailable"
    return "rejected"


def _host(url: str) -> str:
    """host[:port] of a URL, for log lines (never its path or query)."""
    return url.partition("://")[2].partition("/")[0].rpartition("@")[2]


class _Sockets:
    """The socket a connect uses, made here so that a cancelled connect can
    shut it down.  (picows' ``ws_connect`` leaves the connection open when it
    is cancelled while waiting for the handshake -- until its own handshake
    timeout fires -- so a client that hangs up would otherwise keep an
    upstream connection for up to ``connect_timeout``.)"""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    async def __call__(self, parsed: Any) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address for {parsed.host}")
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            self.sock = sock
            try:
                await loop.sock_connect(sock, addr)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
            except BaseException:
                sock.close()
                raise
        raise error

    def shut(self) -> None:
        """End the connection under whatever owns the socket now (its
        transport then sees the end and closes)."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


async def open_ws(url: str, headers: dict[str, str], timeout: float) -> WsEndpoint:
    ep: WsEndpoint | None = None
    sockets = _Sockets()
    try:
        async with asyncio.timeout(timeout):
            _, ep = await ws_connect(
                WsEndpoint, url, extra_headers=headers, max_frame_size=MAX_FRAME,
                websocket_handshake_timeout=timeout, max_redirects=0,
                # its protocol errors: one throttled WARNING line (peerlog.py)
                logger_name=peerlog.ws_logger(_LOG, _host(url), upstream=True),
                read_buffer_init_size=READ_BUFFER, socket_factory=sockets,
                ssl_context=_tls() if url.startswith("wss:") else None)
            first = await ep.wait_early(1)
            if first is not None and first.type == "error":
                # OpenAI's "101, error, close": wait briefly for the close
                try:
                    async with asyncio.timeout(_ERROR_CLOSE_GRACE):
                        await ep.wait_early(2)
                except TimeoutError:
                    pass
    except asyncio.CancelledError:
        # the client hung up (or the server stops) mid-handshake: leave nothing open
        if ep is not None and ep.t is not None:
            ep.t.disconnect()
        sockets.shut()
        raise
    except TimeoutError:
        if ep is not None:
            await ep.close(1000)
        sockets.shut()
        raise UpstreamError("timeout", f"no answer from the upstream within {timeout:g} s") from None
    except WSHandshakeError as exc:
        status = getattr(getattr(exc, "response", None), "status", None)
        if status is None:
            raise UpstreamError("protocol", "upstream handshake failed (not a WebSocket "
                                "upgrade)") from None
        status = int(status)
        raise UpstreamError(_kind_for_status(status),
                            f"upstream refused the handshake with HTTP {status}",
                            status=status) from None
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamError("unreachable", f"cannot reach the upstream ({type(exc).__name__})") from None
    except WSError as exc:
        raise UpstreamError("protocol", f"upstream handshake failed ({type(exc).__name__})") from None

    if first is None or (first.type == "error" and ep.closed):
        code = ep.close_code
        label = ""
        if first is not None:
            err = first.data.get("error") or {}
            label = f", {err.get('code') or err.get('type') or 'error'}"
        await ep.close(1000)
        raise UpstreamError(_kind_for_close(code), f"upstream closed the session at once ({code}{label})")
    return ep
