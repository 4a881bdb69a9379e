"""The store's metering operations on SQLite and PostgreSQL: idempotent
ledger writes, spend kept in the database, limits checked atomically."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from openopen8 import ops
from openopen8.billing import Tokens
from openopen8.store.base import LimitReached, SessionEnd, StoreError, TokenLimits, UsageRow, utcnow
from openopen8.store.sql import open_store


def row(session: str, ref: str, token_id: int, cost: int, model: str = "gpt-realtime",
        kind: str = "response", **tokens) -> UsageRow:
    return UsageRow(session_id=session, kind=kind, ref=ref, token_id=token_id, model=model,
                    tokens=Tokens(**tokens), cost_nanos=cost, channel="main", status="completed")


def later(seconds: float = 30) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


@pytest.fixture
async def store(db_url):
    s = await open_store(db_url)
    try:
        yield s
    finally:
        await s.close()


async def test_a_row_is_recorded_and_charged_once(store):
    tok = (await ops.create_token(store, "alice", limits=TokenLimits(quota_nanos=10**9))).record
    await store.open_session("sess_1", tok.id, "gpt-realtime", "i1", later())
    r = row("sess_1", "resp_1", tok.id, 700, input_text=10, output_audio=5)
    [bal] = await store.write_ledger([r, r], [])
    assert (bal.spent_nanos, bal.quota_nanos) == (700, 10**9)
    [bal] = await store.write_ledger([r, row("sess_1", "resp_2", tok.id, 300)], [])
    assert bal.spent_nanos == 1000
    # the same response id in another session is another response
    await store.open_session("sess_2", tok.id, "gpt-realtime", "i1", later())
    [bal] = await store.write_ledger([row("sess_2", "resp_1", tok.id, 5)], [])
    assert bal.spent_nanos == 1005
    report = await store.usage_report("model")
    assert report[0]["responses"] == 3 and report[0]["cost_nanos"] == 1005
    assert report[0]["input_text"] == 10 and report[0]["output_audio"] == 5


async def test_quota_refuses_new_sessions_once_spent(store):
    tok = (await ops.create_token(store, "q", limits=TokenLimits(quota_nanos=1000))).record
    limits, spent = await store.open_session("s1", tok.id, "m", "i1", later())
    assert limits.quota_nanos == 1000 and spent == 0
    # what this instance has not written yet counts too
    with pytest.raises(LimitReached) as exc:
        await store.open_session("s2", tok.id, "m", "i1", later(), pending_nanos=1000)
    assert exc.value.limit == "quota_nanos"
    await store.write_ledger([row("s1", "r1", tok.id, 999)], [])
    await store.open_session("s3", tok.id, "m", "i1", later())
    await store.write_ledger([row("s1", "r2", tok.id, 1)], [])
    with pytest.raises(LimitReached):
        await store.open_session("s4", tok.id, "m", "i1", later())


async def test_max_sessions_counts_live_leases_only(store):
    tok = (await ops.create_token(store, "c", limits=TokenLimits(max_sessions=2))).record
    await store.open_session("a", tok.id, "m", "i1", later())
    await store.open_session("b", tok.id, "m", "i2", utcnow() + timedelta(seconds=0.3))
    with pytest.raises(LimitReached) as exc:
        await store.open_session("c", tok.id, "m", "i1", later())
    assert exc.value.limit == "max_sessions" and exc.value.value == 2
    # instance i2 died: once its lease runs out its session stops counting
    await asyncio.sleep(0.35)
    await store.open_session("c", tok.id, "m", "i1", later())
    with pytest.raises(LimitReached):
        await store.open_session("d", tok.id, "m", "i1", later())
    # a closed session frees its slot; a renewed lease keeps one
    await store.write_ledger([], [SessionEnd(id="a", closed_by="client", close_code=1000)])
    await store.renew_leases(["a", "c"], later())
    await store.open_session("d", tok.id, "m", "i1", later())


async def test_sessions_per_minute(store):
    tok = (await ops.create_token(store, "r", limits=TokenLimits(sessions_per_minute=2))).record
    await store.open_session("a", tok.id, "m", "i", later())
    await store.open_session("b", tok.id, "m", "i", later())
    await store.write_ledger([], [SessionEnd(id=x, closed_by="client", close_code=1000)
                                  for x in ("a", "b")])
    with pytest.raises(LimitReached) as exc:
        await store.open_session("c", tok.id, "m", "i", later())
    assert exc.value.limit == "sessions_per_minute"
    await store.drop_session("b")     # a session that never started does not count
    await store.open_session("c", tok.id, "m", "i", later())


async def test_concurrent_admissions_cannot_exceed_max_sessions(store):
    tok = (await ops.create_token(store, "race", limits=TokenLimits(max_sessions=3))).record

    async def attempt(i: int) -> bool:
        try:
            await store.open_session(f"s{i}", tok.id, "m", "i", later())
            return True
        except LimitReached:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sum(results) == 3


async def test_two_instances_add_to_one_spend(db_url, store):
    """Two stores (two gateway instances) writing rows for one token at once:
    the spend is the exact sum of what each recorded."""
    tok = (await ops.create_token(store, "shared")).record
    other = await open_store(db_url)
    try:
        await store.open_session("x", tok.id, "m", "i1", later())
        await other.open_session("y", tok.id, "m", "i2", later())

        async def write(st, sess):
            for n in range(10):
                await st.write_ledger([row(sess, f"r{n}", tok.id, 1000 + n)], [])

        await asyncio.gather(write(store, "x"), write(other, "y"))
        [bal] = await store.balances([tok.id])
        assert bal.spent_nanos == 2 * sum(1000 + n for n in range(10))
        assert (await store.usage_report("token"))[0]["cost_nanos"] == bal.spent_nanos
    finally:
        await other.close()


async def test_session_end_and_channel_are_recorded(store):
    tok = (await ops.create_token(store, "s")).record
    await store.open_session("sess_z", tok.id, "gpt-realtime", "i", later())
    await store.write_ledger([], [], {"sess_z": "main"})
    await store.write_ledger([], [SessionEnd(id="sess_z", closed_by="gateway", close_code=1013,
                                             events_in=3, events_out=7, bytes_in=300,
                                             bytes_out=900, audio_in_seconds=1.5,
                                             audio_out_seconds=2.25)])
    async with store.engine.connect() as conn:
        r = (await conn.exec_driver_sql("SELECT * FROM sessions")).mappings().one()
    assert r["channel"] == "main" and r["closed_by"] == "gateway" and r["close_code"] == 1013
    assert (r["events_in"], r["events_out"], r["bytes_in"], r["bytes_out"]) == (3, 7, 300, 900)
    assert (r["audio_in_seconds"], r["audio_out_seconds"]) == (1.5, 2.25)
    assert r["closed_at"] is not None


async def test_reports_group_and_filter(store):
    a = (await ops.create_token(store, "a")).record
    b = (await ops.create_token(store, "b")).record
    day1 = datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc)
    day2 = datetime(2026, 3, 2, 0, 30, tzinfo=timezone.utc)
    rows = [row("s1", "r1", a.id, 100, input_text=1, output_audio=2),
            row("s1", "r2", a.id, 200, model="gpt-realtime-mini", cached_audio=3, input_audio=4),
            row("s2", "r1", b.id, 400, output_text=8),
            row("s2", "i1/0", b.id, 50, model="whisper-1", kind="transcription", seconds=1.5)]
    rows[0].created_at = rows[1].created_at = day1
    rows[2].created_at = rows[3].created_at = day2
    rows[3].fallback = True
    await store.write_ledger(rows, [])
    by_token = {r["key"]: r for r in await store.usage_report("token")}
    assert by_token["a"]["cost_nanos"] == 300 and by_token["b"]["cost_nanos"] == 450
    assert by_token["b"]["transcriptions"] == 1 and by_token["b"]["seconds"] == 1.5
    assert by_token["b"]["fallback"] == 1
    by_day = await store.usage_report("day")
    assert [(r["key"], r["cost_nanos"]) for r in by_day] == [("2026-03-01", 300), ("2026-03-02", 450)]
    mini = await store.usage_report("model", model="gpt-realtime-mini")
    assert [(r["key"], r["cached_audio"], r["input_audio"]) for r in mini] == [("gpt-realtime-mini", 3, 4)]
    assert await store.usage_report("model", token="a", since=day2) == []
    only_b = await store.usage_report("token", until=day2 + timedelta(seconds=1), since=day2)
    assert [r["key"] for r in only_b] == ["b"]
    with pytest.raises(StoreError):
        await store.usage_report("week")


async def test_update_token_limits(store):
    await ops.create_token(store, "u")
    t = await store.update_token("u", {"quota_nanos": 5 * 10**9, "max_sessions": 2})
    assert t.limits == TokenLimits(quota_nanos=5 * 10**9, max_sessions=2)
    t = await store.update_token("u", {"quota_nanos": None})
    assert t.limits.quota_nanos is None and t.limits.max_sessions == 2
    with pytest.raises(StoreError):
        await store.update_token("nobody", {"max_sessions": 1})
    with pytest.raises(StoreError):
        await store.update_token("u", {"secret_hash": "x"})


async def test_names_too_long_for_their_columns_are_cut_not_fatal(db_url):
    """A client may name any transcription model; a name longer than the
    column must not make the ledger's batch fail (PostgreSQL refuses it)."""
    from openopen8 import ops
    from openopen8.billing import Tokens
    from openopen8.store.base import UsageRow
    from openopen8.store.sql import open_store
    from openopen8.store.base import utcnow
    store = await open_store(db_url)
    try:
        tok = (await ops.create_token(store, "long")).record
        await store.open_session("sess_long", tok.id, "m" * 300, "gw:1", utcnow())
        rows = [UsageRow(session_id="sess_long", kind="transcription", ref="r" * 300,
                         token_id=tok.id, model="x" * 500, tokens=Tokens(seconds=1.0),
                         cost_nanos=7, channel="c" * 300, status="completed"),
                UsageRow(session_id="sess_long", kind="response", ref="resp_1", token_id=tok.id,
                         model="gpt-realtime", tokens=Tokens(input_text=1), cost_nanos=5)]
        [bal] = await store.write_ledger(rows, [])
        assert bal.spent_nanos == 12
        async with store.engine.connect() as conn:
            got = (await conn.exec_driver_sql("SELECT model, ref FROM ledger ORDER BY id")).all()
        assert [(len(m), len(r)) for m, r in got] == [(200, 200), (12, 6)]
    finally:
        await store.close()
