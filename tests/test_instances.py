"""Several gateway instances on one database (issue 17), in process: limits
hold when instances admit at the same moment on PostgreSQL, and a session
ended from the store -- by an operator (``ops.end_session``), or by revoking
or expiring its token -- ends on whichever instance runs it, its usage
settled.  (tests/test_deploy.py runs real ``serve`` processes behind nginx.)"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from datetime import timedelta

import aiohttp
import pytest

from openopen8 import ops
from openopen8.store.base import LimitReached, StoreError, TokenLimits, utcnow
from openopen8.store.sql import open_store
from tests.conftest import start_gateway
from tests.standin import Script, StandIn
from tests.test_ledger_e2e import FAST, TEXT_ONLY, eventually, table


# ---- admission races across engines ---------------------------------------------------

@pytest.mark.postgres
@pytest.mark.parametrize("limit", ["max_sessions", "sessions_per_minute"])
async def test_admissions_racing_on_two_engines_never_pass_the_limit(pg_url, limit):
    """60 admissions at once, half through each of two engines (two
    instances' connection pools): exactly the limit get in.  open_session
    locks the token row (SELECT ... FOR UPDATE) before it counts, so the
    second transaction counts the first one's row."""
    a, b = await open_store(pg_url), await open_store(pg_url, migrate=False)
    try:
        rec = (await ops.create_token(a, "race", limits=TokenLimits(**{limit: 5}))).record
        until = utcnow() + timedelta(seconds=60)

        async def admit(store, i: int) -> bool:
            try:
                await store.open_session(f"sess_{i}", rec.id, "gpt-realtime", f"inst{i % 2}",
                                         until)
                return True
            except LimitReached as exc:
                assert exc.limit == limit
                return False

        for round_ in range(3):   # a few rounds: the race is real, not a lucky ordering
            got = await asyncio.gather(*(admit(a if i % 2 else b, round_ * 100 + i)
                                         for i in range(60)))
            assert sum(got) == (5 if round_ == 0 else 0)
        rows = await table_of(a, "sessions")
        assert len(rows) == 5 and {r["instance"] for r in rows} <= {"inst0", "inst1"}
    finally:
        await a.close()
        await b.close()


async def table_of(store, name: str) -> list[dict]:
    async with store.engine.connect() as conn:
        return [dict(r) for r in (await conn.exec_driver_sql(f"SELECT * FROM {name}"))
                .mappings().all()]


# ---- sessions ended from the store ----------------------------------------------------

async def two_gateways(tmp_path, db_url, up):
    key = secrets.token_urlsafe(32)     # instances on one database share it
    a = await start_gateway(tmp_path / "a", database_url=db_url, secret_key=key, **FAST)
    b = await start_gateway(tmp_path / "b", database_url=db_url, secret_key=key, **FAST)
    await a.channel("standin", up.base_url, ["gpt-realtime"])
    b.gw.router.invalidate()
    return a, b


async def read_until_closed(ws) -> list[dict]:
    events = []
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            events.append(msg.json())
    return events


@pytest.mark.parametrize("how", ["end_session", "cli", "revoke", "expire"])
async def test_a_session_ended_from_another_instance_ends_with_its_usage_settled(
        tmp_path, db_url, how):
    """On PostgreSQL, and on SQLite (two processes on one file work too)."""
    async with StandIn(ping_interval=0) as up:
        a, b = await two_gateways(tmp_path, db_url, up)
        try:
            name = "t-" + secrets.token_hex(3)
            secret = (await ops.create_token(a.gw.store, name)).secret
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(f"{a.url}?model=gpt-realtime",
                                           headers={"Authorization": f"Bearer {secret}"})
                await ws.send_json({"type": "session.update", "session": TEXT_ONLY})
                # a response still in flight when the session is ended: it is
                # cancelled upstream and its usage billed all the same
                up.script = Script(text="a b c d e f g h i j k l m n o p", delay=0.1)
                await ws.send_json({"type": "response.create"})
                while (await ws.receive_json())["type"] != "response.output_text.delta":
                    pass
                [row] = await table(b, "sessions")
                sid = row["id"]
                if how == "end_session":       # from instance B's side of the database
                    await ops.end_session(b.gw.store, sid)
                    code = "session_ended"
                elif how == "cli":             # `openopen8 sessions end ID`, another process
                    done = await asyncio.to_thread(subprocess.run, [
                        sys.executable, "-m", "openopen8.cli", "sessions", "end", sid,
                        "--database-url", db_url, "--data-dir", str(tmp_path / "cli")],
                        capture_output=True, text=True, timeout=60)
                    assert done.returncode == 0, done.stderr
                    code = "session_ended"
                elif how == "revoke":
                    await b.gw.store.revoke_token(name)
                    code = "token_revoked"
                else:
                    await b.gw.store.update_token(name, {"expires_at": utcnow()})
                    code = "token_expired"
                events = await asyncio.wait_for(read_until_closed(ws), 10)
                assert ws.close_code == 1008
                errors = [e["error"] for e in events if e["type"] == "error"]
                assert [e["code"] for e in errors] == [code]
                if how == "end_session":
                    assert "administrator" in errors[0]["message"]
                # refused on both instances from now on (the token), or not (an ended session)
                for g in (a, b):
                    try:
                        again = await http.ws_connect(f"{g.url}?model=gpt-realtime",
                                                      headers={"Authorization": f"Bearer {secret}"})
                    except aiohttp.WSServerHandshakeError as exc:
                        assert code != "session_ended" and exc.status == 401
                    else:
                        assert code == "session_ended"
                        await again.close()

            async def settled():
                rows = [r for r in await table(b, "sessions") if r["id"] == sid]
                return rows[0]["closed_at"] is not None and rows
            [row] = await eventually(settled)
            assert row["close_code"] == 1008 and row["closed_by"] == "gateway"
            assert row["end_requested"] == ("session_ended" if code == "session_ended" else None)
            # the cancelled response was billed: its response.done is in the ledger
            done = [e for e in up.sessions[0].sent if e["type"] == "response.done"]
            assert [d["response"]["status"] for d in done] == ["cancelled"]
            ledger = await eventually(lambda: table(b, "ledger"))
            assert [r["ref"] for r in ledger] == [done[0]["response"]["id"]]
        finally:
            await a.stop()
            await b.stop()


async def test_ending_a_session_that_is_not_open_is_an_error(db_url):
    store = await open_store(db_url)
    try:
        with pytest.raises(StoreError):
            await ops.end_session(store, "sess_nope")
    finally:
        await store.close()
