"""What clients cause is logged in one line, throttled, and never with a
secret (issue 12, defect 5).

Raw request heads and WebSocket frames against a served gateway, with every
log record captured (at DEBUG: what an operator sees with log_level=DEBUG)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct

import aiohttp
import pytest

from openopen8 import peerlog
from tests.conftest import start_gateway
from tests.standin import StandIn

UPSTREAM_KEY = "sk-upstream-Zq8dK2vJ0pXw"


@pytest.fixture(autouse=True)
def fresh_throttle(monkeypatch):
    monkeypatch.setattr(peerlog, "THROTTLE", peerlog.Throttle())


@pytest.fixture
async def served(tmp_path):
    async with StandIn(ping_interval=0, keys={UPSTREAM_KEY}) as up:
        g = await start_gateway(tmp_path, admin_token="adm-Hk29sLq0wPz")
        try:
            await g.channel("standin", up.base_url, ["gpt-realtime"], key=UPSTREAM_KEY)
            yield g, await g.token()
        finally:
            await g.stop()


async def send(port: int, data: bytes, then: bytes = b"") -> bytes:
    """Send ``data`` (and ``then`` after the first answer); all that comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = b""
    try:
        writer.write(data)
        out = await asyncio.wait_for(reader.read(65536), 5)
        if then:
            writer.write(then)
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                out += chunk
    except (ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()
    return out


def upgrade(token: str) -> bytes:
    return (f"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n").encode()


def frame(opcode: int, payload: bytes = b"", length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


async def settle(caplog, want, tries: int = 100) -> None:
    """Wait (bounded) until ``want(records)`` holds."""
    for _ in range(tries):
        if want(caplog.records):
            return
        await asyncio.sleep(0.05)


def client_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "openopen8.client"]


#: requests aiohttp cannot parse (the front door passes them on: not a Realtime path)
MALFORMED = {
    # the 52-byte request of the issue: no Host in an HTTP/1.1 request
    "no Host (52 bytes)": b"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer \xff\r\n\r\n",
    "bad Content-Length": b"GET /admin/usage HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "Content-Length and chunked": (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "a byte no URL has": b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
    "a line too long": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",
    "a bad pipelined request": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/9\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_a_malformed_request_is_one_info_line_not_a_traceback(served, caplog, name):
    caplog.set_level(logging.DEBUG)
    g, _ = served
    data = MALFORMED[name]
    assert len(MALFORMED["no Host (52 bytes)"]) == 52
    answer = await send(g.server.port, data)
    assert b" 400 " in answer.split(b"\r\n", 1)[0] or answer.startswith(b"HTTP/1.1 200")
    await settle(caplog, lambda rs: any(r.name == "openopen8.client" for r in rs))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [r for r in caplog.records if r.exc_info] == []
    lines = client_lines(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert lines[0].getMessage().startswith("bad request from 127.0.0.1: 400 ")
    assert len(lines[0].getMessage()) < 200                 # no amplification


#: frames a client may not send (RFC 6455) -- each closes the connection
BAD_FRAMES = {
    "a reserved opcode": (frame(3, b"x"), 1002),
    "a frame over the size limit": (frame(1, length=1 << 40), 1009),
    "a control frame over 125 bytes": (frame(9, b"x" * 200), 1002),
    "a close code no one may send": (frame(8, struct.pack("!H", 999)), 1002),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_a_websocket_protocol_error_is_one_info_line(served, caplog, name):
    caplog.set_level(logging.DEBUG)
    g, token = served
    bad, code = BAD_FRAMES[name]
    answer = await send(g.server.port, upgrade(token), then=bad)
    assert answer.startswith(b"HTTP/1.1 101")
    await settle(caplog, lambda rs: any("closed by" in r.getMessage() for r in rs))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    lines = [r for r in client_lines(caplog) if "broke the WebSocket protocol" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, caplog.text
    assert lines[0].getMessage().endswith(f"closed with {code}")


async def test_client_errors_are_throttled_with_a_count_of_the_rest(served, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(peerlog, "THROTTLE", peerlog.Throttle(lines=5, interval=0.5))
    g, _ = served
    await asyncio.gather(*(send(g.server.port, MALFORMED["no Host (52 bytes)"])
                           for _ in range(40)))
    await settle(caplog, lambda rs: any("suppressed" in r.getMessage() for r in rs))
    lines = [r.getMessage() for r in client_lines(caplog)]
    assert sum(m.startswith("bad request") for m in lines) == 5
    assert "suppressed 35 similar lines (bad request BadHttpMessage) in 0.5 s" in lines


async def test_realtime_refusals_are_one_line_each_and_a_flood_is_throttled(served, caplog):
    caplog.set_level(logging.INFO)
    g, _ = served
    for n in range(3):
        await send(g.server.port, upgrade(f"oo8_wrong{n}"))
    refused = [r.getMessage() for r in caplog.records if "refused 401" in r.getMessage()]
    assert len(refused) == 3
    assert all("client=127.0.0.1 " in m and "token=-" in m for m in refused)
    # a flood of one kind (the brake's 429s) passes peerlog.LINES lines, not one per request
    for n in range(40):
        await send(g.server.port, upgrade(f"oo8_wrong{n}"))
    braked = [r for r in caplog.records if "refused 429" in r.getMessage()]
    assert len(braked) == peerlog.LINES


async def test_secrets_never_reach_the_log(served, caplog):
    """Tokens and keys in every place a client can put them, valid and not,
    on every route, in well-formed and malformed requests, at DEBUG."""
    caplog.set_level(logging.DEBUG)
    g, token = served
    port = g.server.port
    admin = "adm-Hk29sLq0wPz"
    wrong = "oo8_WrongButSecretLooking0123456789"
    key = base64.b64encode(os.urandom(16)).decode()
    realtime = ("GET /v1/realtime?model=gpt-realtime{q} HTTP/1.1\r\nHost: x\r\n"
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n{{h}}\r\n")
    heads = [
        realtime.format(q="", h=f"Authorization: Bearer {token}\r\n"),
        realtime.format(q=f"&token={token}", h=""),
        realtime.format(q="", h=f"Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.{token}\r\n"),
        realtime.format(q="", h=f"api-key: {wrong}\r\n"),
        realtime.format(q=f"&token={wrong}", h=""),
        realtime.format(q=f"&api-key={wrong}", h="Authorization: Bearer \r\n"),
        realtime.format(q="", h=f"Authorization: Bearer {wrong}\r\nX-Pad: \x01\r\n"),     # 400
        f"GET /v1/models?token={wrong} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n",
        f"GET /admin/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\r\n",
        f"GET /admin/tokens?token={wrong} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {wrong}\r\n\r\n",
        # malformed: aiohttp quotes the offending input in its error
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {wrong}{'a' * 9000}\r\n\r\n",
        f"GET /v1/models?token={wrong}\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v1/models?token={wrong} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n",
        f"GET /admin/usage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Length: x\r\n\r\n",
    ]
    for h in heads:
        await send(port, h.encode("latin-1"), then=frame(1, b'{"type":"x"}') + frame(3))
    # a bad frame carrying a secret, after a good upgrade
    await send(port, upgrade(token), then=frame(8, struct.pack("!H", 1000) + wrong.encode() + b"\xff"))
    await settle(caplog, lambda rs: sum("closed by" in r.getMessage() for r in rs) >= 4)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (token, wrong, admin, UPSTREAM_KEY, token[4:14], wrong[4:14]):
        assert secret not in logged, secret
    assert "refused 401" in logged and "bad request" in logged   # the log did see them


async def test_an_upstream_protocol_error_is_one_warning_line(tmp_path, caplog):
    """An upstream that answers the upgrade with a frame no server may send:
    the operator's business (one WARNING line, no traceback); the client
    gets the refusal."""
    import hashlib

    async def bad_upstream(reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode()
                     + b"\x83\x00")                       # opcode 3: reserved
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(bad_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    caplog.set_level(logging.INFO)
    g = await start_gateway(tmp_path)
    try:
        await g.channel("bad", f"http://127.0.0.1:{port}/v1", ["gpt-realtime"])
        answer = await send(g.server.port, upgrade(await g.token()))
        assert answer.startswith(b"HTTP/1.1 502")
        await settle(caplog, lambda rs: any("refused 502" in r.getMessage() for r in rs))
        lines = [r for r in caplog.records if "broke the WebSocket protocol" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING
        assert lines[0].name == "openopen8.upstream"
        assert lines[0].getMessage().startswith(f"upstream 127.0.0.1:{port} broke")
        import gc
        gc.collect()      # an unread picows disconnect error would be logged now
        await asyncio.sleep(0)
        assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    finally:
        await g.stop()
        server.close()
