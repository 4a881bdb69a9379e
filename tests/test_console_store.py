"""The console's store operations on SQLite and PostgreSQL: sessions with
their ledger spend (filters, pages), one session's ledger and turns, daily
figures, deleting a token, updating a channel, the turns' retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from openopen8.billing import Tokens
from openopen8.store.base import ChannelRecord, SessionEnd, StoreError, UsageRow, utcnow
from openopen8.store.console_sql import Turn
from openopen8.store.sql import open_store


async def test_console_queries(db_url):
    store = await open_store(db_url)
    try:
        a = await store.create_token("alice", "h" * 64, "oo8_a", [], None)
        b = await store.create_token("bob", "g" * 64, "oo8_b", [], None)
        now = utcnow()
        lease = now + timedelta(minutes=5)
        for sid, tok, model in (("s1", a, "gpt-realtime"), ("s2", a, "mini"), ("s3", b, "mini")):
            await store.open_session(sid, tok.id, model, "inst", lease,
                                     details={"client": "10.0.0.1", "via": "websocket"})
        await store.write_ledger(
            [UsageRow("s1", "response", "r1", a.id, "gpt-realtime", Tokens(output_text=10),
                      1000, channel="main"),
             UsageRow("s1", "transcription", "i/0", a.id, "whisper-1", Tokens(seconds=2), 500,
                      channel="main"),
             UsageRow("s3", "response", "r1", b.id, "mini", Tokens(output_text=1), 7,
                      channel="alt")],
            [SessionEnd("s1", "client", 1000, channel="main", events_in=3, events_out=9),
             SessionEnd("s3", "gateway", 1008, channel="alt")])
        rows, total = await store.list_sessions()
        assert total == 3 and {r["id"] for r in rows} == {"s1", "s2", "s3"}
        by_id = {r["id"]: r for r in rows}
        assert by_id["s1"]["cost_nanos"] == 1500 and by_id["s1"]["responses"] == 1
        assert by_id["s1"]["token"] == "alice" and by_id["s1"]["client"] == "10.0.0.1"
        assert by_id["s2"]["cost_nanos"] == 0 and by_id["s2"]["closed_at"] is None
        assert {r["id"] for r in (await store.list_sessions(token="alice"))[0]} == {"s1", "s2"}
        assert [r["id"] for r in (await store.list_sessions(close_code=1008))[0]] == ["s3"]
        assert [r["id"] for r in (await store.list_sessions(channel="main"))[0]] == ["s1"]
        assert [r["id"] for r in (await store.list_sessions(state="open"))[0]] == ["s2"]
        assert (await store.list_sessions(model="mini"))[1] == 2
        assert (await store.list_sessions(until=now - timedelta(days=1)))[1] == 0
        page, total = await store.list_sessions(limit=2, offset=2)
        assert len(page) == 1 and total == 3
        await store.write_turns([Turn("s1", 2, "assistant", "Hi!", ref="i2",
                                      usage={"output_tokens": 10}, cost_nanos=1000),
                                 Turn("s1", 1, "user", "Hello", ref="i1")])
        one = await store.get_session("s1")
        assert [t["text"] for t in one["turns"]] == ["Hello", "Hi!"]
        assert one["turns"][1]["usage"] == {"output_tokens": 10}
        assert sorted(r["cost_nanos"] for r in one["ledger"]) == [500, 1000]
        assert await store.get_session("nope") is None
        assert await store.session_costs(["s1", "s2", "s3"]) == {"s1": 1500, "s3": 7}
        day = now.date().isoformat()
        daily = await store.daily(now - timedelta(days=6))
        assert daily[day] == {"sessions": 3, "cost_nanos": 1507}
        used = await store.tokens_last_used()
        assert set(used) == {a.id, b.id} and used[a.id].tzinfo is not None
        # retention
        await store.write_turns([Turn("s3", 1, "user", "old",
                                      created_at=now - timedelta(days=40))])
        assert await store.delete_turns_before(now - timedelta(days=30)) == 1
        # a token with an open session is not deleted; one without is (usage stays)
        with pytest.raises(StoreError, match="open session"):
            await store.delete_token("alice")
        await store.delete_token("bob")
        assert [t.name for t in await store.list_tokens()] == ["alice"]
        assert (await store.get_session("s3"))["token"] is None
        with pytest.raises(StoreError, match="no token"):
            await store.delete_token("bob")
        # channels
        await store.add_channel(ChannelRecord(0, "main", "openai", "http://x/v1", b"k",
                                              ["gpt-realtime"]))
        ch = await store.update_channel("main", {"priority": 5, "weight": 2, "enabled": False,
                                                 "models": ["a", "b"], "key_encrypted": b"k2"})
        assert (ch.priority, ch.weight, ch.enabled, ch.models, ch.key_encrypted) == (
            5, 2, False, ["a", "b"], b"k2")
        with pytest.raises(StoreError):
            await store.update_channel("main", {"name": "other"})
        with pytest.raises(StoreError, match="no channel"):
            await store.update_channel("nope", {"priority": 1})
    finally:
        await store.close()
