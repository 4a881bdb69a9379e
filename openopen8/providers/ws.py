"""Opening an upstream Realtime WebSocket, with OpenAI's failure shapes
turned into :class:`UpstreamError` classes.

OpenAI upgrades every request (even with a bad key) and reports the failure
as the first frame -- an ``error`` -- followed at once by close 3000 (auth)
or 4000 (request shape).  So a handshake is only good once the first frame
is in and is not such an error; that frame is pushed back for the relay.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import WSMsgType

from ..events import Event
from ..relay.endpoint import MAX_FRAME, WsEndpoint
from .base import UpstreamError

#: how long to wait for the close that follows a first-frame ``error``
_ERROR_CLOSE_GRACE = 1.0


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


async def open_ws(http: aiohttp.ClientSession, url: str, headers: dict[str, str],
                  timeout: float) -> WsEndpoint:
    ws = None
    try:
        async with asyncio.timeout(timeout):
            ws = await http.ws_connect(
                url, headers=headers, max_msg_size=MAX_FRAME, autoping=True,
                heartbeat=None, compress=0, autoclose=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
            ep = WsEndpoint(ws)
            msg = await ws.receive()
    except TimeoutError:
        if ws is not None:
            await ws.close()
        raise UpstreamError("timeout", f"no answer from the upstream within {timeout:g} s") from None
    except aiohttp.WSServerHandshakeError as exc:
        raise UpstreamError(_kind_for_status(exc.status),
                            f"upstream refused the handshake with HTTP {exc.status}",
                            status=exc.status) from None
    except (aiohttp.ClientConnectorError, aiohttp.ClientOSError, OSError) as exc:
        raise UpstreamError("unreachable", f"cannot reach the upstream ({type(exc).__name__})") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError("protocol", f"upstream handshake failed ({type(exc).__name__})") from None

    if msg.type is WSMsgType.TEXT:
        first = Event(msg.data)
        if first.type == "error":
            try:
                nxt = await asyncio.wait_for(ws.receive(), _ERROR_CLOSE_GRACE)
            except TimeoutError:
                nxt = None
            if nxt is not None and nxt.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                code = ws.close_code if nxt.type is not WSMsgType.CLOSE else nxt.data
                await ws.close()
                err = first.data.get("error") or {}
                label = err.get("code") or err.get("type") or "error"
                raise UpstreamError(_kind_for_close(code),
                                    f"upstream closed the session at once ({code}, {label})")
            ep.push_back(first)
            if nxt is not None and nxt.type is WSMsgType.TEXT:
                ep.push_back(Event(nxt.data))
            return ep
        ep.push_back(first)
        return ep
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
        code = msg.data if msg.type is WSMsgType.CLOSE else ws.close_code
        raise UpstreamError(_kind_for_close(code), f"upstream closed the session at once ({code})")
    await ws.close()
    raise UpstreamError("protocol", "upstream did not start a Realtime session")
