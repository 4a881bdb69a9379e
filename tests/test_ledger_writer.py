"""The ledger writer: balances move from pending to spent as rows are
committed, other instances' spending reaches running sessions, leases are
renewed, and nothing queued is lost at stop."""

from __future__ import annotations

import asyncio

import pytest

from openopen8 import ops
from openopen8.billing import PriceTable, Tokens
from openopen8.errors import LimitError
from openopen8.ledger import Ledger
from openopen8.relay.stage import Session
from openopen8.store.base import SessionEnd, TokenLimits, UsageRow
from openopen8.store.sql import open_store


def usage_row(s: Session, ref: str, cost: int) -> UsageRow:
    return UsageRow(session_id=s.id, kind="response", ref=ref, token_id=s.token.id,
                    model=s.model, tokens=Tokens(input_text=1), cost_nanos=cost)


async def spent(store, token_id: int) -> int:
    return (await store.balances([token_id]))[0].spent_nanos


async def test_pending_becomes_spent_and_is_shared_by_a_tokens_sessions(db_url):
    store = await open_store(db_url)
    ledger = Ledger(store, PriceTable(), flush_seconds=60)
    try:
        tok = (await ops.create_token(store, "t", limits=TokenLimits(quota_nanos=1000))).record
        a, b = Session(id="sess_a", model="m", token=tok), Session(id="sess_b", model="m", token=tok)
        ga, gb = await ledger.admit(a), await ledger.admit(b)
        assert ga.balance is gb.balance and ga.balance.sessions == 2
        ledger.record(usage_row(a, "r1", 600))
        assert gb.balance.remaining() == 400 and await spent(store, tok.id) == 0
        ledger.record(usage_row(b, "r1", 400))
        assert gb.balance.exhausted()
        # admission counts what is still pending here
        with pytest.raises(LimitError) as exc:
            await ledger.admit(Session(id="sess_c", model="m", token=tok))
        assert exc.value.status == 429 and exc.value.code == "insufficient_quota"
        assert await ledger.flush()
        assert (ga.balance.spent_nanos, ga.balance.pending_nanos) == (1000, 0)
        assert await spent(store, tok.id) == 1000
        # a duplicate recorded again is neither written nor charged twice
        ledger.record(usage_row(a, "r1", 600))
        await ledger.flush()
        assert (ga.balance.spent_nanos, ga.balance.pending_nanos) == (1000, 0)
        ledger.closed(SessionEnd(id=a.id, closed_by="client", close_code=1000), tok.id)
        ledger.closed(SessionEnd(id=b.id, closed_by="client", close_code=1000), tok.id)
        await ledger.flush()
        assert ledger._balances == {}
    finally:
        await ledger.stop()
        await store.close()


async def test_other_instances_spending_and_quota_changes_reach_running_sessions(db_url):
    store = await open_store(db_url)
    other = await open_store(db_url)
    mine = Ledger(store, PriceTable(), flush_seconds=0.02, refresh_seconds=0.05)
    theirs = Ledger(other, PriceTable(), flush_seconds=0.02)
    mine.start()
    theirs.start()
    try:
        tok = (await ops.create_token(store, "t", limits=TokenLimits(quota_nanos=10**6))).record
        s1 = Session(id="sess_1", model="m", token=tok)
        s2 = Session(id="sess_2", model="m", token=tok)
        g1, g2 = await mine.admit(s1), await theirs.admit(s2)
        theirs.record(usage_row(s2, "r", 10**6 - 1))
        for _ in range(100):
            if g1.balance.remaining() == 1:
                break
            await asyncio.sleep(0.02)
        assert g1.balance.remaining() == 1
        await store.update_token("t", {"quota_nanos": 5 * 10**6})
        for _ in range(100):
            if g1.balance.quota_nanos == 5 * 10**6:
                break
            await asyncio.sleep(0.02)
        assert g1.balance.remaining() == 4 * 10**6 + 1
    finally:
        await mine.stop()
        await theirs.stop()
        await store.close()
        await other.close()


async def test_stop_writes_everything_queued_and_abandon_forgets_the_session(db_url):
    store = await open_store(db_url)
    ledger = Ledger(store, PriceTable(), flush_seconds=60, lease_seconds=0.6)
    ledger.start()
    try:
        tok = (await ops.create_token(store, "t", limits=TokenLimits(max_sessions=1))).record
        s = Session(id="sess_x", model="m", token=tok)
        await ledger.admit(s)
        with pytest.raises(LimitError) as exc:
            await ledger.admit(Session(id="sess_y", model="m", token=tok))
        assert exc.value.code == "too_many_sessions" and "max_sessions" in exc.value.message
        # the lease outlives its first term because the writer renews it (every 0.2 s)
        await asyncio.sleep(1.0)
        with pytest.raises(LimitError):
            await ledger.admit(Session(id="sess_y", model="m", token=tok))
        await ledger.abandon(s)
        y = Session(id="sess_y", model="m", token=tok)
        await ledger.admit(y)
        ledger.record(usage_row(y, "r1", 5))
        ledger.closed(SessionEnd(id=y.id, closed_by="shutdown", close_code=1012), tok.id)
    finally:
        await ledger.stop()
    try:
        assert await spent(store, tok.id) == 5
        async with store.engine.connect() as conn:
            rows = (await conn.exec_driver_sql("SELECT id, closed_by FROM sessions")).all()
        assert [tuple(r) for r in rows] == [("sess_y", "shutdown")]
    finally:
        await store.close()


async def test_sessions_of_an_instance_that_stopped_renewing_are_closed_as_crashed(db_url):
    """Several gateways on one database: one dies (its writer stops renewing
    leases); another closes its open rows a lease after they ran out."""
    store = await open_store(db_url)
    dead = Ledger(store, PriceTable(), lease_seconds=0.3)        # admits, never renews
    alive = Ledger(store, PriceTable(), flush_seconds=60, lease_seconds=0.3)
    alive.start()
    try:
        tok = (await ops.create_token(store, "t")).record
        await dead.admit(Session(id="sess_dead", model="m", token=tok))
        mine = Session(id="sess_alive", model="m", token=tok)
        await alive.admit(mine)
        for _ in range(150):
            async with store.engine.connect() as conn:
                rows = dict((await conn.exec_driver_sql(
                    "SELECT id, closed_by FROM sessions")).all())
            if rows["sess_dead"] is not None:
                break
            await asyncio.sleep(0.02)
        assert rows == {"sess_dead": "crash", "sess_alive": None}
    finally:
        await alive.stop()
        await store.close()


@pytest.mark.postgres
async def test_a_row_the_database_refuses_does_not_hold_back_the_others(pg_url, caplog):
    """PostgreSQL refuses a token count over its INTEGER column: that row is
    dropped with an ERROR naming it; every other row of the batch is written."""
    store = await open_store(pg_url)
    ledger = Ledger(store, PriceTable(), flush_seconds=60)
    try:
        tok = (await ops.create_token(store, "t")).record
        s = Session(id="sess_p", model="m", token=tok)
        g = await ledger.admit(s)
        ledger.opened(s.id, "ch-a")
        # the refused row first: what the batch carried besides rows still arrives
        ledger.record(UsageRow(session_id=s.id, kind="response", ref="poison", token_id=tok.id,
                               model="m", tokens=Tokens(input_text=2 ** 40), cost_nanos=100))
        ledger.record(usage_row(s, "ok1", 3))
        ledger.record(usage_row(s, "ok2", 4))
        ledger.closed(SessionEnd(id=s.id, closed_by="client", close_code=1000), tok.id)
        assert await ledger.flush()
        assert await spent(store, tok.id) == 7 and g.balance.pending_nanos == 0
        async with store.engine.connect() as conn:
            refs = [r for (r,) in (await conn.exec_driver_sql(
                "SELECT ref FROM ledger ORDER BY id")).all()]
            closed = tuple((await conn.exec_driver_sql(
                "SELECT closed_by, channel FROM sessions")).one())
        assert refs == ["ok1", "ok2"] and closed == ("client", "ch-a")
        assert "dropped a usage row" in caplog.text and "'poison'" in caplog.text
        assert ledger._rows == [] and ledger._ends == []
    finally:
        await ledger.stop()
        await store.close()
