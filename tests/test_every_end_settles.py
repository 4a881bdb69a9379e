"""Nothing unbilled: however a session ends, the responses the upstream started
are cancelled and settled into the ledger; and bad client input never ends a
session (issue 12, defect 1).

Each test cuts a scripted 10-delta audio response after 8 deltas, the way the
defect was measured, through a real gateway on loopback in front of the
stand-in upstream, and counts ledger rows in the real database."""

from __future__ import annotations

import asyncio

import pytest

from openopen8.relay.stage import Chain
from openopen8.web import admission as realtime_module
from tests.standin import Script, StandIn
from tests.test_ledger_e2e import Client, U1_NANOS, closed_sessions, eventually, metered, \
    spent, table, token

DELTAS, CUT = 10, 8


@pytest.fixture
async def upstream():
    async with StandIn(ping_interval=0) as up:
        yield up


async def cut_response(g, upstream: StandIn, secret: str) -> Client:
    """A session with one audio response streaming, 8 of its 10 deltas read."""
    upstream.scripts.append(Script(audio_deltas=DELTAS, delay=0.03))
    c = await Client.open(g, secret)
    assert await c.next("session.created")
    await c.send(type="response.create")
    for _ in range(CUT):
        assert await c.next("response.output_audio.delta")
    return c


async def rows(g, n: int) -> list[dict] | None:
    got = [r for r in await table(g, "ledger") if r["kind"] == "response"]
    return got if len(got) >= n else None


#: client frames that made a stage raise (and ended the session, unbilled)
BAD_FRAMES = {
    "trailing comma": ('{"type":"response.create",}', {"invalid_json"}),
    "lone surrogate": ('{"type":"session.update","session":{"type":"realtime",'
                       '"instructions":"\\ud800"}}', {"invalid_json"}),
    "rate 1e400": ('{"type":"session.update","session":{"type":"realtime","audio":{"input":'
                   '{"format":{"type":"audio/pcm","rate":1e400}}}}}', {"invalid_json"}),
    "beta format object in GA": ('{"type":"session.update","session":{"type":"realtime",'
                                 '"input_audio_format":{}}}',
                                 {"invalid_value"}),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_bad_client_input_gets_an_error_and_the_response_is_billed(
        tmp_path, upstream, name):
    frame, codes = BAD_FRAMES[name]
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'bad.db'}", upstream)
    try:
        secret, token_id = await token(g, "bad")
        c = await cut_response(g, upstream, secret)
        await c.ws.send_str(frame)
        err = await c.next("error")
        assert err is not None and err["error"]["code"] in codes, err
        # the session goes on: the rest of the response arrives, then another turn works
        done = await c.next("response.done")
        assert done is not None and done["response"]["status"] == "completed"
        assert len([e for e in c.seen if e["type"] == "response.output_audio.delta"]) == DELTAS
        upstream.scripts.append(Script(audio_deltas=1))
        await c.send(type="response.create")
        assert await c.next("response.done")
        await c.close()
        [session] = await eventually(lambda: closed_sessions(g))
        assert (session["closed_by"], session["close_code"]) == ("client", 1000)
        got = await eventually(lambda: rows(g, 2))
        assert [r["status"] for r in got] == ["completed", "completed"]
        assert await spent(g, token_id) == 2 * U1_NANOS
    finally:
        await g.stop()


class _Faulty:
    """A stage with a bug: it raises on one event (fault injection)."""

    name = "faulty"

    def __init__(self, client_type: str | None = None, server_type: str | None = None,
                 after: int = 0) -> None:
        self.client_type, self.server_type, self.after, self.seen = (
            client_type, server_type, after, 0)

    def sees_client(self, t, s):
        return t == self.client_type

    def sees_server(self, t, s):
        return t == self.server_type

    def on_client(self, ev, s):
        raise RuntimeError("injected fault on a client event")

    def on_server(self, ev, s):
        self.seen += 1
        if self.seen > self.after:
            raise RuntimeError("injected fault on an upstream event")
        return ev


def _with_fault(monkeypatch, stage: _Faulty) -> None:
    real = realtime_module.build_chain

    def build(gw, s):
        # first in client order: last to see upstream events, after metering
        return Chain([stage, *real(gw, s).stages])

    monkeypatch.setattr(realtime_module, "build_chain", build)


async def test_a_stage_failing_on_an_upstream_event_ends_1011_and_the_response_is_billed(
        tmp_path, upstream, monkeypatch, caplog):
    _with_fault(monkeypatch, _Faulty(server_type="response.output_audio.delta", after=CUT))
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'fault.db'}", upstream)
    try:
        secret, token_id = await token(g, "fault")
        c = await cut_response(g, upstream, secret)
        err = await c.next("error")
        assert err is not None and err["error"]["code"] == "internal_error"
        assert await c.next("never") is None and c.close_code == 1011
        await c.close()
        # the response in flight was cancelled upstream and its usage settled
        [row] = await eventually(lambda: rows(g, 1))
        assert "response.cancel" in [e["type"] for e in upstream.sessions[-1].received]
        assert row["status"] == "cancelled" and row["cost_nanos"] == U1_NANOS
        [session] = await eventually(lambda: closed_sessions(g))
        assert (session["closed_by"], session["close_code"]) == ("error", 1011)
        assert await spent(g, token_id) == U1_NANOS
        assert "injected fault on an upstream event" in caplog.text   # a bug: traceback logged
    finally:
        await g.stop()


async def test_a_stage_failing_on_a_client_event_answers_an_error_and_the_session_goes_on(
        tmp_path, upstream, monkeypatch):
    _with_fault(monkeypatch, _Faulty(client_type="conversation.item.create"))
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'cfault.db'}", upstream)
    try:
        secret, token_id = await token(g, "cfault")
        c = await cut_response(g, upstream, secret)
        await c.send(type="conversation.item.create", event_id="evt_mine", item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]})
        err = await c.next("error")
        assert err["error"]["code"] == "event_not_processed"
        assert err["error"]["event_id"] == "evt_mine"
        done = await c.next("response.done")
        assert done["response"]["status"] == "completed"
        await c.close()
        [row] = await eventually(lambda: rows(g, 1))
        assert row["status"] == "completed"
        # the event was not forwarded
        assert "conversation.item.create" not in [
            e["type"] for e in upstream.sessions[-1].received]
    finally:
        await g.stop()


async def test_a_client_closing_mid_response_still_pays_for_it(tmp_path, upstream):
    g = await metered(tmp_path, f"sqlite:///{tmp_path / 'close.db'}", upstream)
    try:
        secret, token_id = await token(g, "close")
        c = await cut_response(g, upstream, secret)
        await c.close()
        [row] = await eventually(lambda: rows(g, 1))
        assert row["status"] == "cancelled"
        assert await spent(g, token_id) == U1_NANOS
    finally:
        await g.stop()


async def test_shutdown_mid_response_cancels_and_bills_it(tmp_path, upstream):
    db = f"sqlite:///{tmp_path / 'down.db'}"
    g = await metered(tmp_path, db, upstream)
    secret, token_id = await token(g, "down")
    c = await cut_response(g, upstream, secret)
    stopper = asyncio.ensure_future(g.stop())
    assert await c.next("never") is None and c.close_code == 1012
    await stopper
    await c.close()
    from openopen8.store.sql import open_store
    store = await open_store(db)
    try:
        async with store.engine.connect() as conn:
            got = (await conn.exec_driver_sql("SELECT status, cost_nanos FROM ledger")).all()
        assert [tuple(r) for r in got] == [("cancelled", U1_NANOS)]
        assert (await store.balances([token_id]))[0].spent_nanos == U1_NANOS
    finally:
        await store.close()
