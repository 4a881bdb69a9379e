"""The deployment of issue 17, for real: two ``openopen8 serve`` processes on
one PostgreSQL database, behind nginx running deploy/nginx/openopen8.conf,
the stand-in as the OpenAI upstream.

* sessions through nginx (plain and TLS) spread over both instances, and a
  token's ``max_sessions`` holds across them;
* quota spent on one instance stops a session on the other within
  ``balance_refresh_seconds + tick_seconds`` (README, "Deploying");
* a rolling restart under load: no session fails to connect, sessions on a
  drained instance finish or get 1012 after ``drain_seconds``, the processes
  exit 0, and the ledger holds exactly the responses the upstream reported;
* client addresses come from X-Forwarded-For only when nginx (a trusted
  proxy) wrote it: the brake on failed authentications, the refusal log and
  the session row name the client, not nginx and not a forged header;
* while one instance drains, nginx sends every new session and WebRTC call
  offer to the other (the 503s are retried, never seen by a client);
* the drain on one instance: /healthz 503 ``draining``, new sessions 503
  ``server_draining`` with Retry-After, running ones on until
  ``drain_seconds`` then 1012 with their usage settled, exit 0; a second
  signal ends the drain at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import secrets
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from openopen8.store.sql import open_store
from tests.deploykit import Instance, Nginx, provision
from tests.standin import Script, StandIn, tone
from tests.test_refusals import upgrade
from tests.tls import client_context, make_cert

pytestmark = pytest.mark.postgres

#: every clock small, so the tests stay short
SETTINGS = dict(refresh_seconds=0.5, balance_refresh_seconds=0.5, tick_seconds=0.2,
                drain_seconds=3, settle_seconds=2, ledger_flush_seconds=0.2,
                auth_failure_limit=3)
TEXT_ONLY = {"type": "realtime", "output_modalities": ["text"],
             "audio": {"input": {"turn_detection": None}}}


@dataclass
class Deployment:
    up: StandIn
    db_url: str
    nginx: Nginx
    instances: list[Instance]
    token: str
    secret: str
    tls: ssl.SSLContext
    folder: Any = None
    key: str = ""

    def auth(self, secret: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret or self.secret}"}

    async def rows(self, sql: str) -> list[Any]:
        store = await open_store(self.db_url, migrate=False)
        try:
            async with store.engine.connect() as conn:
                return list((await conn.execute(text(sql))).mappings().all())
        finally:
            await store.close()

    def replacement(self, i: int) -> Instance:
        """A new process for instance ``i``: same port, same data directory."""
        old = self.instances[i]
        new = Instance(old.name, self.folder, self.db_url, self.key, port=old.port, **SETTINGS)
        self.instances[i] = new
        return new


@contextlib.asynccontextmanager
async def deployment(tmp_path, pg_url, n: int = 2, **limits: Any):
    key = secrets.token_urlsafe(32)
    cert, cert_key = make_cert(tmp_path)
    async with StandIn(ping_interval=0) as up:
        token, secret = await provision(pg_url, key, up.base_url, **limits)
        instances = [Instance(f"gw{i}", tmp_path, pg_url, key, **SETTINGS) for i in range(n)]
        nginx = Nginx(tmp_path, [i.port for i in instances], cert, cert_key)
        try:
            await asyncio.gather(*(i.start() for i in instances))
            await nginx.start()
            yield Deployment(up, pg_url, nginx, instances, token, secret,
                             client_context(cert), tmp_path, key)
        finally:
            await nginx.stop()
            await asyncio.gather(*(i.stop() for i in instances))


async def open_session(http: aiohttp.ClientSession, url: str, d: Deployment, **kw: Any):
    ws = await http.ws_connect(f"{url}?model=gpt-realtime", headers=d.auth(), **kw)
    await ws.send_json({"type": "session.update", "session": TEXT_ONLY})
    while (await ws.receive_json())["type"] != "session.updated":
        pass
    return ws


async def test_sessions_spread_over_two_instances_and_max_sessions_holds_across_them(
        tmp_path, pg_url):
    async with deployment(tmp_path, pg_url, max_sessions=3) as d:
        async with aiohttp.ClientSession() as http:
            # one over TLS (nginx's 443 server block), two over plain HTTP
            sessions = [await open_session(http, d.nginx.wss, d, ssl=d.tls),
                        await open_session(http, d.nginx.ws, d),
                        await open_session(http, d.nginx.ws, d)]
            rows = await d.rows("SELECT instance FROM sessions WHERE closed_at IS NULL")
            assert len(rows) == 3
            assert len({r["instance"].split(":")[0] for r in rows}) == 2   # both instances
            # the 4th is refused, whichever instance takes it
            for url in (d.nginx.ws, *(f"ws://127.0.0.1:{i.port}/v1/realtime"
                                      for i in d.instances)):
                status, body = await upgrade(f"{url}?model=gpt-realtime", d.auth())
                assert (status, body["error"]["code"]) == (429, "too_many_sessions")
            await sessions[0].close()
            # once its end is written, a new one gets in (the group commit: promptly)
            for _ in range(100):
                try:
                    again = await open_session(http, d.nginx.ws, d)
                    break
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 429
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the closed session still counted")
            for ws in (*sessions[1:], again):
                await ws.close()


async def test_quota_spent_on_one_instance_stops_a_session_on_the_other(tmp_path, pg_url):
    """Y spends the quota on instance 0; X, idle on instance 1, is told
    within balance_refresh_seconds + tick_seconds (a generous wait here: the
    machine is shared).  The overspend is at most Y's response in flight."""
    async with deployment(tmp_path, pg_url, quota_usd="0.05") as d:
        a, b = (f"ws://127.0.0.1:{i.port}/v1/realtime" for i in d.instances)
        async with aiohttp.ClientSession() as http:
            x = await open_session(http, b, d)
            y = await open_session(http, a, d)
            await y.send_json({"type": "response.create"})
            async for msg in y:
                ev = msg.json()
                if ev["type"] == "response.done":
                    await y.send_json({"type": "response.create"})
                elif ev["type"] == "error":
                    assert ev["error"]["code"] == "insufficient_quota"
            assert y.close_code == 1013
            bound = SETTINGS["balance_refresh_seconds"] + SETTINGS["tick_seconds"]
            msg = await asyncio.wait_for(x.receive(), 10 * bound)
            assert msg.json()["error"]["code"] == "insufficient_quota"
            await asyncio.wait_for(x.receive(), 10 * bound)
            assert x.close_code == 1013
        quota = 50_000_000
        [row] = await d.rows("SELECT spent_nanos FROM tokens")
        costs = [r["cost_nanos"] for r in await d.rows("SELECT cost_nanos FROM ledger")]
        assert quota <= row["spent_nanos"] == sum(costs) <= quota + max(costs)


# ---- rolling restart -------------------------------------------------------------------

async def until(predicate, timeout: float, what: Any = None) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not reached in {timeout} s: {what}") from None


@dataclass
class Load:
    """Workers that keep sessions open through nginx, streaming audio."""

    url: str
    auth: dict[str, str]
    running: bool = True
    failures: list[str] = field(default_factory=list)      # could not connect / broke
    outcomes: list[str] = field(default_factory=list)      # finished | restarted
    open: int = 0

    async def worker(self, rng: random.Random, long: bool) -> None:
        async with aiohttp.ClientSession() as http:
            while self.running:
                try:
                    ws = await http.ws_connect(f"{self.url}?model=gpt-realtime", headers=self.auth)
                except (aiohttp.ClientError, OSError) as exc:
                    self.failures.append(f"connect: {exc!r}")
                    await asyncio.sleep(0.2)
                    continue
                self.open += 1
                try:
                    self.outcomes.append(await self.session(ws, rng, long))
                except Exception as exc:  # noqa: BLE001 - counted, and the load goes on
                    self.failures.append(f"session: {exc!r}")
                finally:
                    self.open -= 1

    async def session(self, ws, rng: random.Random, long: bool) -> str:
        chunk = base64.b64encode(tone({"type": "audio/pcm", "rate": 24000}, 50)).decode()
        lifetime = rng.uniform(6, 9) if long else rng.uniform(0.5, 2)
        loop = asyncio.get_running_loop()
        end = loop.time() + lifetime
        await ws.send_json({"type": "session.update", "session": TEXT_ONLY})
        errors: list[str] = []
        idle = asyncio.Event()           # no response in flight: the next turn may start
        idle.set()

        async def read() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    ev = msg.json()
                    if ev["type"] == "error":
                        errors.append(ev["error"]["code"])
                    elif ev["type"] == "response.done":
                        idle.set()

        reader = asyncio.ensure_future(read())
        n = 0
        while loop.time() < end and not reader.done() and self.running:
            await ws.send_json({"type": "input_audio_buffer.append", "audio": chunk})
            n += 1
            if n % 10 == 0 and idle.is_set():   # a turn every ~0.5 s or so: usage to bill
                idle.clear()
                await ws.send_json({"type": "input_audio_buffer.commit"})
                await ws.send_json({"type": "response.create"})
            await asyncio.sleep(0.05)
        if not reader.done():
            await ws.close()
        await asyncio.wait_for(reader, 15)
        if ws.close_code == 1012 and errors[-1:] == ["server_shutting_down"]:
            return "restarted"
        if ws.close_code == 1000 and not errors:
            return "finished"
        self.failures.append(f"session ended with {ws.close_code} {errors}")
        return "failed"


async def test_rolling_restart_under_load_drops_no_session_and_bills_every_response(
        tmp_path, pg_url):
    async with deployment(tmp_path, pg_url) as d:
        # a response takes ~0.6 s: some are in flight when a drain ends, and
        # are cancelled and settled then
        d.up.script = Script(text="Fine, thanks for asking.", audio_deltas=0, delay=0.05)
        load = Load(d.nginx.ws, d.auth())
        rng = random.Random(17)
        workers = [asyncio.ensure_future(load.worker(random.Random(rng.random()), i % 2 == 0))
                   for i in range(20)]
        try:
            await until(lambda: load.open == 20, 30, load)
            for i in range(2):        # A, then B: SIGTERM, wait for the exit, start anew
                old = d.instances[i]
                old.signal()
                assert await old.exited(30) == 0
                await d.replacement(i).start()
                await until(lambda: load.open == 20, 30, load)   # back at full strength
            await asyncio.sleep(0.5)
        finally:
            load.running = False
            await asyncio.wait_for(asyncio.gather(*workers), 30)
        assert load.failures == []
        assert set(load.outcomes) == {"finished", "restarted"}
        logs = [(d.folder / f"gw{i}.log").read_text() for i in range(2)]
        assert all("draining: new sessions are refused" in log for log in logs)

        # every response the upstream reported, billed once
        async def billed() -> bool:
            return not await d.rows("SELECT id FROM sessions WHERE closed_at IS NULL")
        for _ in range(200):
            if await billed():
                break
            await asyncio.sleep(0.05)
        reported = sorted(e["response"]["id"] for s in d.up.sessions for e in s.sent
                          if e["type"] == "response.done")
        ledger = sorted(r["ref"] for r in await d.rows("SELECT ref FROM ledger"))
        # among them responses cut short (a client's close, a drain's end): settled, billed
        statuses = [r["status"] for r in await d.rows("SELECT status FROM ledger")]
        assert "cancelled" in statuses and "completed" in statuses
        assert ledger == reported and len(reported) > 20
        [row] = await d.rows("SELECT spent_nanos FROM tokens")
        [(total,)] = [tuple(r.values()) for r in await d.rows("SELECT sum(cost_nanos) FROM ledger")]
        assert row["spent_nanos"] == total


# ---- client addresses behind the proxy -------------------------------------------------

async def test_the_brake_and_the_log_count_the_client_behind_nginx_not_a_forged_header(
        tmp_path, pg_url):
    async with deployment(tmp_path, pg_url, n=1) as d:
        bad = {"Authorization": "Bearer oo8_wrong", "X-Forwarded-For": "203.0.113.9"}

        async def attempt(source: str, headers: dict[str, str], url: str = d.nginx.ws) -> int:
            conn = aiohttp.TCPConnector(local_addr=(source, 0))
            async with aiohttp.ClientSession(connector=conn) as http:
                async with http.get(f"{url}?model=gpt-realtime", headers={
                        "Connection": "Upgrade", "Upgrade": "websocket",
                        "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": base64.b64encode(b"k" * 16).decode(),
                        **headers}) as r:
                    return r.status

        # 127.0.0.5 guesses, each time forging another address: braked all the same
        assert [await attempt("127.0.0.5", {**bad, "X-Forwarded-For": f"198.51.100.{i}"})
                for i in range(4)] == [401, 401, 401, 429]
        # another client behind the same nginx is not braked by it
        assert await attempt("127.0.0.6", bad) == 401
        # straight to the instance (a peer that is no trusted proxy): its header is ignored
        direct = f"ws://127.0.0.1:{d.instances[0].port}/v1/realtime"
        assert await attempt("127.0.0.8", bad, direct) == 401
        # a session's row records its client the same way
        conn = aiohttp.TCPConnector(local_addr=("127.0.0.7", 0))
        async with aiohttp.ClientSession(connector=conn) as http:
            ws = await http.ws_connect(f"{d.nginx.ws}?model=gpt-realtime", headers={
                **d.auth(), "X-Forwarded-For": "203.0.113.9"})
            await ws.close()
        [row] = await d.rows("SELECT client FROM sessions")
        assert row["client"] == "127.0.0.7"
        log = (d.folder / "gw0.log").read_text()
        assert all(f"client=127.0.0.{i}" in log for i in (5, 6, 8))
        assert "203.0.113.9" not in log and "198.51.100" not in log


# ---- the drain, on one instance ----------------------------------------------------------

async def test_a_draining_instance_refuses_new_sessions_and_ends_running_ones_after_drain_seconds(
        tmp_path, pg_url):
    async with deployment(tmp_path, pg_url, n=1) as d:
        [gw] = d.instances
        url = f"ws://127.0.0.1:{gw.port}/v1/realtime"
        async with aiohttp.ClientSession() as http:
            ws = await open_session(http, url, d)
            d.up.script = Script(text="Fine.", audio_deltas=0)
            gw.signal()
            status, body = await gw.until_draining(http, seconds=5)
            assert (status, body) == (503, {"status": "draining", "sessions": 1})
            # a new session: 503, Retry-After, an OpenAI-style error
            async with http.get(f"{url}?model=gpt-realtime", headers={
                    **d.auth(), "Connection": "Upgrade", "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": base64.b64encode(b"k" * 16).decode()}) as r:
                assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
                err = (await r.json(content_type=None))["error"]
                assert (err["code"], err["type"]) == ("server_draining", "server_error")
            # the running session goes on meanwhile ...
            await ws.send_json({"type": "response.create"})
            while (await ws.receive_json())["type"] != "response.done":
                pass
            # ... until drain_seconds: then server_shutting_down and 1012
            events = [m.json() async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
            assert [e["error"]["code"] for e in events if e["type"] == "error"] == [
                "server_shutting_down"]
            assert ws.close_code == 1012
        assert await gw.exited(30) == 0
        [row] = await d.rows("SELECT close_code, closed_by FROM sessions")
        assert dict(row) == {"close_code": 1012, "closed_by": "shutdown"}
        assert len(await d.rows("SELECT id FROM ledger")) == 1


async def test_a_second_signal_ends_the_drain_at_once(tmp_path, pg_url):
    async with deployment(tmp_path, pg_url, n=1) as d:
        [gw] = d.instances
        gw.env["OPENOPEN8_DRAIN_SECONDS"] = "600"     # only the second signal can end it
        await gw.stop()
        await gw.start()
        async with aiohttp.ClientSession() as http:
            ws = await open_session(http, f"ws://127.0.0.1:{gw.port}/v1/realtime", d)
            # a response in flight when the session is cut: settled and billed all the same
            d.up.script = Script(text=" ".join(["word"] * 50), delay=0.1)
            await ws.send_json({"type": "response.create"})
            while (await ws.receive_json())["type"] != "response.output_text.delta":
                pass
            gw.signal()
            assert (await gw.until_draining(http))[0] == 503
            gw.signal()
            events = [m.json() async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
            assert [e["error"]["code"] for e in events if e["type"] == "error"] == [
                "server_shutting_down"]
            assert ws.close_code == 1012
        assert await gw.exited(30) == 0
        [done] = [e for e in d.up.sessions[-1].sent if e["type"] == "response.done"]
        assert done["response"]["status"] == "cancelled"
        [row] = await d.rows("SELECT ref, status FROM ledger")
        assert dict(row) == {"ref": done["response"]["id"], "status": "cancelled"}


SDP = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
       "a=rtpmap:111 opus/48000/2\r\na=mid:0\r\na=sendrecv\r\n")


async def test_nginx_sends_what_a_draining_instance_refuses_to_the_other(tmp_path, pg_url):
    """While instance 0 drains, new sessions and WebRTC call offers through
    nginx all reach instance 1: the 503s instance 0 answers never reach a
    client (proxy_next_upstream http_503; for the calls' POST, non_idempotent)."""
    async with deployment(tmp_path, pg_url) as d:
        a = d.instances[0]
        async with aiohttp.ClientSession() as http:
            # a session straight to instance 0 keeps it draining for drain_seconds
            held = await open_session(http, f"ws://127.0.0.1:{a.port}/v1/realtime", d)
            a.signal()
            assert (await a.until_draining(http, every=0.02))[0] == 503
            sessions = [await open_session(http, d.nginx.wss, d, ssl=d.tls) for _ in range(6)]
            calls = []
            for _ in range(6):   # no model: the live instance refuses (400), after nginx chose it
                async with http.post(f"https://127.0.0.1:{d.nginx.https_port}/v1/realtime/calls",
                                     data=SDP, ssl=d.tls, headers={
                                         **d.auth(), "Content-Type": "application/sdp"}) as r:
                    calls.append(r.status)
            draining = await d.rows("SELECT count(*) AS n FROM sessions WHERE closed_at IS NULL")
            for ws in (*sessions, held):
                await ws.close()
        assert 503 not in calls and len(set(calls)) == 1
        assert draining[0]["n"] == 7
        # instance 0 did refuse some of them: nginx retried those on instance 1
        assert "refused 503 server_draining" in (d.folder / "gw0.log").read_text()
