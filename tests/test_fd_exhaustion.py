"""Out of file descriptors, the gateway pauses accepting instead of spinning
(issue 12, defect 4).

The real CLI serves under RLIMIT_NOFILE 128 and gets more idle connections
than that, so accept() fails with EMFILE.  Before the fix, aiofastnet's
back-off raised AttributeError and the loop spun (a full core, megabytes of
tracebacks a second).  Now: a warning or two, a session opened before the
flood is still served, a /healthz sent during the flood is answered, and new
clients are served again.

Pausing alone left every descriptor to the idle connections until the front
door's 15 s head timeout: /healthz and new clients waited that long in the
backlog.  Now connections that have sent no request head for a second are
closed, oldest first, to make room, so both are answered while the idle
clients still hold their sockets; a running session is never among them.
``serve`` also raises its soft descriptor limit to the hard one at start-up.

CPU is printed (``pytest -s``), not asserted: figures belong to bench/edge.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
import pytest

from tests.fdflood import (cli, close_all, healthz, hold_exhausted, open_idle, serve_limited,
                           wait_exhausted)
from tests.standin import StandIn
from tests.test_refusals import upgrade

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="measures the gateway through /proc")

NOFILE = 128
HOLD = 2.0   # seconds measured while out of descriptors


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, limit: int = 100) -> dict:
    for _ in range(limit):
        ev = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
        if ev["type"] == kind:
            return ev
    raise AssertionError(f"no {kind}")


async def still_served(ws) -> None:
    """The session on ``ws`` takes an update and completes a response."""
    await ws.send_str(json.dumps({"type": "session.update", "session": {
        "type": "realtime", "instructions": "Be brief."}}))
    updated = await next_of(ws, "session.updated")
    assert updated["session"]["instructions"] == "Be brief."
    await ws.send_str(json.dumps({"type": "response.create"}))
    done = await next_of(ws, "response.done")
    assert done["response"]["status"] == "completed"


def provision(tmp_path, up: StandIn) -> str:
    """A token and a channel to the stand-in, made with the CLI; the secret."""
    secret = cli("tokens", "create", "fd", data_dir=tmp_path).splitlines()[-1]
    cli("channels", "add", "standin", "--type", "openai", "--key", "sk-good",
        "--models", "gpt-realtime", "--base-url", up.base_url, data_dir=tmp_path)
    return secret


async def test_out_of_descriptors_accept_pauses_and_resumes(tmp_path):
    async with StandIn(ping_interval=5) as up:
        secret = provision(tmp_path, up)
        gw = serve_limited(tmp_path, NOFILE)
        idle: list = []
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(gw.url + "?model=gpt-realtime",
                                           headers={"Authorization": f"Bearer {secret}"}) as ws:
                    await next_of(ws, "session.created")
                    log0 = gw.log_bytes()
                    idle = open_idle(gw.port, NOFILE + 64)
                    late = asyncio.ensure_future(healthz(gw, timeout=20))  # waits in the backlog
                    ex = await hold_exhausted(gw, HOLD)
                    flood_log = gw.log_text(log0)
                    print(f"\nout of descriptors for {ex.seconds:.1f} s: gateway CPU "
                          f"{ex.cpu_percent:.1f}%, log {ex.log_bytes} B in the window, "
                          f"{len(flood_log.encode())} B since the flood began, "
                          f"{ex.open_fds}/{NOFILE} descriptors")

                    # accept paused: a line or two, no traceback, no spin of log lines
                    logged, head = ex.log_bytes, ex.log[:1500]
                    assert logged < 2048, f"{logged} B of log in {ex.seconds:.1f} s: {head}"
                    assert len(flood_log.encode()) < 4096, flood_log[:1500]
                    warnings = [ln for ln in flood_log.splitlines() if "WARNING" in ln]
                    assert 1 <= len(warnings) <= 2, flood_log
                    assert "out of file descriptors" in warnings[0]
                    assert "ulimit -n" in warnings[0] and f"limit {NOFILE}" in warnings[0]
                    assert "Traceback" not in flood_log

                    # the session opened before the flood is still served
                    await still_served(ws)

                    # descriptors free up: accepting resumes by itself
                    close_all(idle)
                    assert await late == 200
                    assert await healthz(gw, timeout=10) == 200
                    status, body = await upgrade(gw.url + "?model=gpt-realtime")
                    assert status == 401 and body["error"]["code"] == "missing_api_key"
                    await ws.send_str(json.dumps({"type": "response.create"}))
                    await next_of(ws, "response.done")
            after = gw.log_text(log0)
            assert "accepting connections again" in after
            assert "Traceback" not in after
        finally:
            close_all(idle)
            code = gw.stop()
    assert code == 0, gw.log_text()[-3000:]
    assert secret not in gw.log_text()


async def test_listener_keeps_aiofastnet_transports():
    """web/listen.py replaces only aiofastnet's accept callback: accepted
    sockets still get aiofastnet's transports (the cost per frame), and the
    private names it relies on still exist (this fails if aiofastnet changes
    shape, before a gateway is left unable to resume accepting)."""
    from aiofastnet.api_utils import Server as AiofastnetServer

    from openopen8.web.listen import BackoffServer, create_server

    # the reader aiofastnet registers is the method BackoffServer overrides
    assert "_accept_connection" in AiofastnetServer._start_serving_one_listener.__code__.co_names
    loop = asyncio.get_running_loop()
    made: asyncio.Future = loop.create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport):
            made.set_result(transport)

    server = await create_server(loop, Probe, "127.0.0.1", 0, backlog=16)
    try:
        assert isinstance(server, BackoffServer) and server.is_serving()
        for name in ("_accept_connection2", "_start_serving_one_listener", "_backlog", "_loop",
                     "_sockets"):
            assert hasattr(server, name), f"aiofastnet's Server has no {name} any more"
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        transport = await asyncio.wait_for(made, 5)
        assert type(transport).__module__.startswith("aiofastnet."), type(transport)
        writer.close()
    finally:
        server.close()


#: how long a /healthz or a refusal sent while out of descriptors may take:
#: generous (liveness, not speed), and shorter than the front door's 15 s head
#: timeout, the only other thing that frees the idle connections' descriptors
ANSWERED_WITHIN = 10.0


async def test_out_of_descriptors_idle_connections_make_room(tmp_path):
    """Descriptors all held by connections that never sent a request: the
    gateway closes the oldest of them to make room, so /healthz and a new
    client are answered while the idle clients still hold their sockets, and
    a running session (past its request head) is not among those closed."""
    async with StandIn(ping_interval=5) as up:
        secret = provision(tmp_path, up)
        gw = serve_limited(tmp_path, NOFILE)
        idle: list = []
        slow: list = []
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(gw.url + "?model=gpt-realtime",
                                           headers={"Authorization": f"Bearer {secret}"}) as ws:
                    await next_of(ws, "session.created")
                    log0, cpu0 = gw.log_bytes(), gw.cpu_seconds()
                    # the oldest: slowloris heads, begun and never finished
                    slow = open_idle(gw.port, 4)
                    for c in slow:
                        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    idle = open_idle(gw.port, NOFILE + 64)
                    await wait_exhausted(gw)
                    t0 = time.monotonic()

                    # sent while every descriptor is held (the idle clients keep
                    # theirs open until the end): both wait in the kernel's
                    # backlog behind idle connections
                    async def health() -> tuple[int | None, float]:
                        status = await healthz(gw, timeout=ANSWERED_WITHIN)
                        return status, time.monotonic() - t0

                    async def refused() -> tuple[int, dict]:
                        return await asyncio.wait_for(upgrade(
                            gw.url + "?model=gpt-realtime",
                            {"Authorization": "Bearer oo8_not-a-real-token"}), ANSWERED_WITHIN)

                    (status, took), refusal = await asyncio.gather(health(), refused(),
                                                                   return_exceptions=True)
                    print(f"\n/healthz answered {status} after {took:.2f} s out of descriptors")
                    assert status == 200, (f"/healthz unanswered within {ANSWERED_WITHIN:g} s "
                                           f"while idle connections hold every descriptor")
                    assert not isinstance(refusal, BaseException), (
                        f"a client with a bad token got no answer: {refusal!r}")
                    code, body = refusal
                    assert code == 401 and body["error"]["code"] == "invalid_api_key", body
                    # a slowloris closed to make room is told why (408), not just cut
                    loop = asyncio.get_running_loop()
                    for c in slow:
                        c.setblocking(False)
                        answer = await asyncio.wait_for(loop.sock_recv(c, 4096), ANSWERED_WITHIN)
                        assert answer.startswith(b"HTTP/1.1 408 "), answer
                        assert b"connection limit" in answer, answer

                    # the session (long past its request head) was not closed to make room
                    await still_served(ws)

                    flood_log = gw.log_text(log0)
                    print(f"log {len(flood_log.encode())} B, gateway CPU "
                          f"{gw.cpu_seconds() - cpu0:.2f} s in {time.monotonic() - t0:.1f} s:\n"
                          f"{flood_log}")
                    assert len(flood_log.encode()) < 4096, flood_log[:1500]
                    assert "Traceback" not in flood_log
                    warnings = [ln for ln in flood_log.splitlines() if "WARNING" in ln]
                    assert 1 <= len(warnings) <= 2, flood_log
                    assert "closed to make room" in warnings[0], warnings[0]
            # start-up said the limit could not be raised, and what that means
            start = gw.log_text()[:log0]
            assert f"file descriptor limit: {NOFILE} (not raised; hard limit {NOFILE})" in start
            assert f"file descriptor limit {NOFILE} is low: each session needs two" in start
        finally:
            close_all(idle)
            close_all(slow)
            code = gw.stop()
    assert code == 0, gw.log_text()[-3000:]
    assert secret not in gw.log_text()


async def test_serve_raises_the_soft_descriptor_limit_to_the_hard_one(tmp_path):
    """Like Go's runtime: a soft RLIMIT_NOFILE of 256 under a hard one of
    8192 becomes 8192 at start-up, said once at INFO, with no warning (8192 is
    not low); the rest of the process's life has the higher limit."""
    cli("tokens", "create", "fd", data_dir=tmp_path)
    gw = serve_limited(tmp_path, 256, hard=8192)
    try:
        assert gw.nofile_limits() == ("8192", "8192")
        assert await healthz(gw, timeout=10) == 200
    finally:
        code = gw.stop()
    text = gw.log_text()
    assert code == 0, text[-3000:]
    assert text.count("file descriptor limit") == 1, text
    assert "file descriptor limit: 8192 (raised from 256; hard limit 8192)" in text, text
