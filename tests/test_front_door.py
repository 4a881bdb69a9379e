"""The front door: what it accepts is exactly what gets a 101, it is decided
before any token lookup or upstream connect, and nothing is spent on a
request that is refused or abandoned (issue 12, defects 2, 3 and 8).

Raw sockets on loopback send the request heads real clients send."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from pathlib import Path

import pytest

from openopen8.store.sql import open_store
from tests.conftest import start_gateway
from tests.standin import StandIn
from tests.test_ledger_e2e import table


def key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def head(lines: list[str], version: str = "HTTP/1.1",
         target: str = "/v1/realtime?model=gpt-realtime") -> bytes:
    return (f"GET {target} {version}\r\n" + "".join(f"{line}\r\n" for line in lines)
            + "\r\n").encode("latin-1")


async def exchange(port: int, data: bytes, *, hang_up: bool = False) -> bytes:
    """Send ``data``; the response head (up to the blank line) or b'' when the
    gateway just closed.  ``hang_up``: close right after sending."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if hang_up:
        writer.close()
        return b""
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    finally:
        writer.close()


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response else 0


def count_lookups(g) -> list[str]:
    """The token lookups the gateway makes from now on (hashes, in order)."""
    lookups: list[str] = []
    real = g.gw.store.token_by_hash

    async def counted(h: str):
        lookups.append(h)
        return await real(h)

    g.gw.store.token_by_hash = counted       # type: ignore[method-assign]
    return lookups


@pytest.fixture
async def front(tmp_path):
    """A gateway with a channel to the stand-in, a token, and a count of
    token lookups (the front door must refuse some requests before any)."""
    async with StandIn(ping_interval=0) as up:
        g = await start_gateway(tmp_path)
        try:
            await g.channel("standin", up.base_url, ["gpt-realtime"])
            secret = await g.token()
            yield g, up, secret, count_lookups(g)
        finally:
            await g.stop()


def port_of(g) -> int:
    return g.server.port


# ---- every form the RFCs allow is upgraded --------------------------------------------

#: request heads as real clients write them (beyond the Authorization line)
CLIENT_FORMS = {
    "Chrome / Firefox ESR / okhttp / Go": ["Connection: Upgrade", "Upgrade: websocket"],
    "older Firefox": ["Connection: keep-alive, Upgrade", "Upgrade: websocket"],
    "lower case (nginx proxy_set_header)": ["connection: upgrade", "upgrade: websocket"],
    "Connection on two lines": ["Connection: keep-alive", "Connection: Upgrade",
                                "Upgrade: WebSocket"],
    "browser with extensions offered": [
        "Connection: Upgrade", "Upgrade: websocket",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        "Pragma: no-cache", "Cache-Control: no-cache", "Origin: http://127.0.0.1"],
    "HTTP/1.1 token list with spaces": ["Connection:  Upgrade ,keep-alive", "Upgrade:websocket"],
}


@pytest.mark.parametrize("form", list(CLIENT_FORMS))
async def test_every_upgrade_form_real_clients_send_gets_101(front, form):
    g, up, secret, _ = front
    lines = ["Host: 127.0.0.1", f"Authorization: Bearer {secret}", *CLIENT_FORMS[form],
             "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key()}"]
    response = await exchange(port_of(g), head(lines))
    assert status(response) == 101, response
    assert b"sec-websocket-extensions" not in response.lower()    # nothing negotiated


async def test_http_1_2_is_http_1_1_too(front):
    g, up, secret, _ = front
    lines = [f"Authorization: Bearer {secret}", "Connection: Upgrade", "Upgrade: websocket",
             "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key()}"]
    assert status(await exchange(port_of(g), head(lines, "HTTP/1.2"))) == 101


# ---- what cannot be upgraded is refused before any lookup ------------------------------

def _good(secret: str) -> list[str]:
    return [f"Authorization: Bearer {secret}", "Connection: Upgrade", "Upgrade: websocket",
            "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key()}"]


REFUSED = {
    # name: (how the good head is spoiled, status)
    "HTTP/1.0": (lambda ls: head(ls, "HTTP/1.0"), 400),
    "NUL in a header": (lambda ls: head(ls + ["X-Trace: a\x00b"]), 400),
    "NUL in the Authorization header": (
        lambda ls: head([ls[0] + "\x00"] + ls[1:]), 400),
    "a request body": (lambda ls: head(ls + ["Content-Length: 5"]) + b"hello", 400),
    "chunked body": (lambda ls: head(ls + ["Transfer-Encoding: chunked"]) + b"0\r\n\r\n", 400),
    "Connection without upgrade": (
        lambda ls: head([ls[0], "Connection: keep-alive"] + ls[2:]), 426),
    "no Upgrade header": (lambda ls: head([ls[0], ls[1]] + ls[3:]), 426),
    "WebSocket version 8": (
        lambda ls: head(ls[:3] + ["Sec-WebSocket-Version: 8"] + ls[4:]), 426),
    "two keys": (lambda ls: head(ls + [f"Sec-WebSocket-Key: {key()}"]), 400),
    "a short key": (lambda ls: head(ls[:4] + ["Sec-WebSocket-Key: c2hvcnQ="]), 400),
    "folded header line": (lambda ls: head(ls + ["X-A: a", " folded"]), 400),
    "header name with a space": (lambda ls: head(ls + ["X A: b"]), 400),
}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_what_cannot_be_upgraded_is_refused_before_a_token_lookup_or_upstream(
        front, name):
    g, up, secret, lookups = front
    spoil, want = REFUSED[name]
    response = await exchange(port_of(g), spoil(_good(secret)))
    assert status(response) == want, response
    if name == "WebSocket version 8":
        assert b"Sec-WebSocket-Version: 13" in response      # RFC 6455 4.4
    assert lookups == [] and up.attempts == 0
    assert await table(g, "sessions") == []


@pytest.mark.parametrize("size", [20_000, 100_000])
async def test_a_head_too_large_in_one_read_gets_431_and_nothing_else(front, size):
    g, up, secret, lookups = front
    big = head(_good(secret) + [f"X-Pad: {'a' * size}"])
    response = await exchange(port_of(g), big)
    assert status(response) == 431
    assert lookups == [] and up.attempts == 0


# ---- a client that hangs up costs nothing -----------------------------------------------

async def test_heads_whose_clients_hang_up_at_once_open_no_upstream_and_no_session(front):
    g, up, secret, lookups = front
    for _ in range(30):
        await exchange(port_of(g), head(_good(secret)), hang_up=True)
    # the gateway saw them all (each at least reached the door) ...
    for _ in range(200):
        if not g.server._doors:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    # ... and opened no upstream and kept no session row for any
    assert up.attempts == 0
    assert await table(g, "sessions") == []
    # a client that stays is served as ever
    response = await exchange(port_of(g), head(_good(secret)))
    assert status(response) == 101 and up.attempts == 1


async def test_a_hang_up_during_a_slow_upstream_connect_cancels_it(tmp_path):
    """An upstream that accepts TCP and never answers: the connect would wait
    for connect_timeout (30 s here); the client's hang-up cancels it."""
    dropped = asyncio.Event()

    async def black_hole(reader, writer):
        await reader.read()           # until the gateway closes its side
        dropped.set()
        writer.close()

    hole = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    hole_port = hole.sockets[0].getsockname()[1]
    g = await start_gateway(tmp_path, connect_timeout=30)
    try:
        await g.channel("hole", f"http://127.0.0.1:{hole_port}/v1", ["gpt-realtime"])
        secret = await g.token()
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(g))
        writer.write(head(_good(secret)))
        await writer.drain()
        for _ in range(250):          # until the gateway is connecting upstream
            if await table(g, "sessions"):
                break
            await asyncio.sleep(0.02)
        assert len(await table(g, "sessions")) == 1
        writer.close()
        await asyncio.wait_for(dropped.wait(), 10)     # far sooner than connect_timeout
        for _ in range(100):
            if not await table(g, "sessions"):
                break
            await asyncio.sleep(0.02)
        assert await table(g, "sessions") == []         # the reservation was undone
    finally:
        await g.stop()
        hole.close()


# ---- frames with reserved bits; files only the owner reads --------------------------------

async def test_a_frame_with_rsv1_set_fails_the_connection_1002(front):
    g, up, secret, _ = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(g))
    writer.write(head(_good(secret)))
    assert status(await reader.readuntil(b"\r\n\r\n")) == 101
    payload = b'{"type":"input_audio_buffer.clear"}'
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    # FIN + RSV1 + text; no extension was negotiated
    writer.write(bytes([0x80 | 0x40 | 0x1, 0x80 | len(payload)]) + mask + masked)
    await writer.drain()
    close_code = None
    for _ in range(100):              # skip server frames until the close frame
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        body = await reader.readexactly(n)
        if b0 & 0x0F == 0x8:
            close_code = struct.unpack("!H", body[:2])[0]
            break
    writer.close()
    assert close_code == 1002


async def test_sqlite_files_are_created_0600(tmp_path: Path):
    data = tmp_path / "fresh"
    store = await open_store(f"sqlite:///{data / 'openopen8.db'}")
    try:
        async with store.engine.connect() as conn:       # WAL files exist while open
            await conn.exec_driver_sql("SELECT 1")
            modes = {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()}
    finally:
        await store.close()
    assert modes["openopen8.db"] == 0o600
    assert all(m == 0o600 for m in modes.values()), modes
    assert data.stat().st_mode & 0o777 == 0o700


async def test_a_head_that_does_not_finish_in_time_gets_408(front, monkeypatch):
    from openopen8.web import front as front_module
    monkeypatch.setattr(front_module, "HEAD_TIMEOUT", 0.3)
    g, up, secret, lookups = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(g))
    writer.write(b"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert status(response) == 408 and lookups == []


async def test_a_tls_hello_on_the_plain_port_is_closed_at_once(front):
    """A wss:// URL for a ws:// gateway: the client learns at once, not after
    the head timeout."""
    import ssl
    g, up, secret, lookups = front
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port_of(g), ssl=ctx), 5)


async def test_a_first_line_that_is_not_http_gets_400_without_waiting(front):
    g, up, secret, lookups = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(g))
    writer.write(b"HELLO there\r\nX: y\r\n")          # no blank line: the head never ends
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert status(response) == 400


async def test_the_doors_own_refusals_log_one_line_each_without_the_request(front, caplog):
    import logging
    caplog.set_level(logging.INFO)
    g, up, secret, lookups = front
    await exchange(port_of(g), head(_good(secret) + [f"X-Pad: {'a' * 20_000}"]))
    await exchange(port_of(g), b"NOT HTTP " + secret.encode() + b"\r\n\r\n")
    lines = [r.getMessage() for r in caplog.records if "bad request from" in r.getMessage()]
    assert len(lines) == 2 and "431" in lines[0] and "400" in lines[1]
    assert secret not in caplog.text


async def test_a_protocol_error_picows_closes_for_is_recorded_with_the_code_it_sent(tmp_path):
    """A frame with a reserved opcode: picows closes with 1002; the session row
    says 1002 too (it said 1006, 'connection lost')."""
    from tests.test_ledger_e2e import closed_sessions, eventually
    async with StandIn(ping_interval=0) as up:
        g = await start_gateway(tmp_path, ledger_flush_seconds=0.05)
        try:
            await g.channel("standin", up.base_url, ["gpt-realtime"])
            secret = await g.token()
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(g))
            writer.write(head(_good(secret)))
            assert status(await reader.readuntil(b"\r\n\r\n")) == 101
            writer.write(bytes([0x80 | 0x3, 0x80 | 0]) + os.urandom(4))   # opcode 3: reserved
            await writer.drain()
            await asyncio.wait_for(reader.read(), 10)                     # closed by the gateway
            writer.close()
            [row] = await eventually(lambda: closed_sessions(g))
            assert (row["closed_by"], row["close_code"]) == ("client", 1002)
        finally:
            await g.stop()
