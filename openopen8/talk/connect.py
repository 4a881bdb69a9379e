"""Opening the WebSocket to the gateway, and turning a refused upgrade into
its HTTP status and the gateway's own message."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import aiohttp

MAX_MESSAGE = 16 * 1024 * 1024
USER_AGENT = "openopen8-talk"


class Refused(Exception):
    """The server answered the upgrade with an HTTP error."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status, self.reason, self.body = status, reason, body
        self.code: str | None = None
        self.message = body.strip()[:500] or reason
        try:
            err = json.loads(body)["error"]
            self.message = str(err.get("message") or self.message)
            self.code = err.get("code")
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        super().__init__(f"HTTP {status}: {self.message}")


class Unreachable(Exception):
    """No connection at all (refused, DNS, TLS, timeout)."""


def _body_keeper(store: dict) -> aiohttp.TraceConfig:
    """aiohttp raises on a non-101 upgrade without reading the body; a trace
    hook reads it first, so the gateway's JSON error can be shown."""

    async def on_request_end(session: Any, ctx: SimpleNamespace,
                             params: aiohttp.TraceRequestEndParams) -> None:
        resp = params.response
        if resp.status != 101:
            try:
                store["body"] = (await asyncio.wait_for(resp.read(), 5)).decode("utf-8", "replace")
            except Exception:  # noqa: BLE001 - the status alone still says enough
                store["body"] = ""
            store["reason"] = resp.reason or ""

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


async def open_socket(url: str, token: str | None, beta: bool,
                      timeout: float = 15.0) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    """Connect; raise :class:`Refused` or :class:`Unreachable`.  The caller
    closes the returned session after the socket."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if beta:
        headers["OpenAI-Beta"] = "realtime=v1"
    kept: dict[str, str] = {}
    http = aiohttp.ClientSession(trace_configs=[_body_keeper(kept)])
    try:
        ws = await asyncio.wait_for(http.ws_connect(
            url, headers=headers, protocols=("realtime",), max_msg_size=MAX_MESSAGE,
            compress=0, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)), timeout)
    except aiohttp.WSServerHandshakeError as exc:
        await http.close()
        raise Refused(exc.status, kept.get("reason", exc.message), kept.get("body", "")) from None
    except asyncio.TimeoutError:
        await http.close()
        raise Unreachable(f"no answer from {url} within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        await http.close()
        raise Unreachable(f"cannot connect to {url}: {exc}") from None
    except BaseException:
        await http.close()
        raise
    return http, ws
