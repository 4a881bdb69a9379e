"""Opening the WebSocket to the gateway, and turning a refused upgrade into
its HTTP status and the gateway's own message, and a failed connection into
the host and port and what to do (aiohttp's own text names ``ssl:default``
even for ``ws://``)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import ssl
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

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


def _why(err: BaseException | None) -> str:
    if err is None:
        return "no reason given"
    if isinstance(err, ssl.SSLCertVerificationError) and err.verify_message:
        return err.verify_message              # "self-signed certificate", "hostname mismatch" …
    if isinstance(err, ssl.SSLError):          # its errno is OpenSSL's, not the OS's
        return str(err.reason or err).lower().replace("_", " ")
    code = getattr(err, "errno", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code).lower()
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    return str(getattr(err, "strerror", None) or err).lower() or type(err).__name__


def unreachable(exc: aiohttp.ClientConnectorError, url: str) -> Unreachable:
    """A failed connection said the way a user can act on: the host and port
    (not aiohttp's ``ssl:default`` for a ``ws://`` URL), and what to do."""
    where = f"[{exc.host}]:{exc.port}" if ":" in exc.host else f"{exc.host}:{exc.port}"
    err = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Unreachable(f"cannot find the host {exc.host} ({_why(err)}): check --url")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return Unreachable(f"cannot connect to {where}: its TLS certificate is not trusted here "
                           f"({_why(exc.certificate_error)})")
    if isinstance(err, ConnectionRefusedError) or getattr(err, "errno", None) == errno.ECONNREFUSED:
        return Unreachable(f"cannot connect to {where} (connection refused): is the gateway "
                           "running? Start it with `openopen8 serve`, or point --url at it")
    if url.startswith("wss:"):
        return Unreachable(f"cannot connect to {where} over TLS ({_why(err)}): if the gateway "
                           "serves without TLS, use ws://")
    return Unreachable(f"cannot connect to {where} ({_why(err)}): is the gateway running "
                       "there? (`openopen8 serve` starts one)")


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
    except aiohttp.ClientConnectorError as exc:
        await http.close()
        raise unreachable(exc, url) from None
    except aiohttp.ServerDisconnectedError:
        await http.close()
        where = urlsplit(url).netloc
        tls = " (if the gateway serves TLS, use wss://)" if url.startswith("ws:") else ""
        raise Unreachable(f"{where} closed the connection without answering{tls}") from None
    except aiohttp.ClientError as exc:
        await http.close()
        raise Unreachable(f"cannot connect to {url}: {exc}") from None
    except BaseException:
        await http.close()
        raise
    return http, ws
