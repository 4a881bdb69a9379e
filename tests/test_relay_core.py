"""The relay core with in-memory endpoints: ordering, stage actions, and
close-code mapping, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from openopen8.events import Event
from openopen8.relay.core import Relay
from openopen8.relay.stage import BaseStage, Chain, Session


class MemEndpoint:
    """An endpoint backed by a queue; ``feed`` events in, read ``sent``."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.sent: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_with: tuple[int, str] | None = None

    def feed(self, *texts: str) -> None:
        for t in texts:
            self.inbox.put_nowait(t)

    def hang_up(self, code: int, reason: str = "") -> None:
        self.inbox.put_nowait((code, reason))

    async def recv(self):
        item = await self.inbox.get()
        if isinstance(item, tuple):
            self.close_code, self.close_reason = item
            return None
        return Event(item)

    async def send(self, ev: Event) -> None:
        if self.closed_with:
            raise ConnectionError("closed")
        self.sent.append(ev.text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)


def types(texts: list[str]) -> list[str]:
    return [Event(t).type for t in texts]


async def run(client, upstream, stages=(), **kw):
    s = Session(id="sess_test", model="m")
    outcome = await asyncio.wait_for(Relay(client, upstream, Chain(list(stages)), s, **kw).run(), 5)
    return outcome, s


async def test_events_flow_in_order_untouched_and_client_close_ends_it():
    c, u = MemEndpoint(), MemEndpoint()
    texts = ['{"type":"a","n":1}', '{"type":"b", "weird":  [1,2]}', '{"type":"c","x":{"type":"y"}}']
    c.feed(*texts)
    u.feed('{"type":"session.created","event_id":"e"}')
    await asyncio.sleep(0)
    c.hang_up(1000)
    outcome, s = await run(c, u)
    assert u.sent == texts                    # byte-for-byte, in order
    assert c.sent == ['{"type":"session.created","event_id":"e"}']
    assert outcome.closed_by == "client" and u.closed_with == (1000, "")
    assert s.events_in == 3 and s.bytes_in == sum(map(len, texts))


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4000])
async def test_meaningful_upstream_codes_pass_through(code):
    c, u = MemEndpoint(), MemEndpoint()
    u.hang_up(code, "upstream says why")
    outcome, _ = await run(c, u)
    assert c.closed_with == (code, "upstream says why")
    assert outcome.closed_by == "upstream"


@pytest.mark.parametrize("code", [1006, 1011, 1005])
async def test_abnormal_upstream_close_gives_error_event_and_1014(code):
    c, u = MemEndpoint(), MemEndpoint()
    u.hang_up(code)
    outcome, _ = await run(c, u)
    assert types(c.sent) == ["error"]
    assert Event(c.sent[0]).data["error"]["code"] == "upstream_closed"
    assert c.closed_with[0] == 1014 and outcome.client_code == 1014


class Quota(BaseStage):
    """Closes after the second server event; replies and injects on the way."""

    def __init__(self) -> None:
        self.seen = 0

    def on_server(self, ev, s):
        self.seen += 1
        if self.seen == 2:
            s.inject(Event.from_data({"type": "response.cancel"}))
            s.reply(Event.from_data({"type": "error", "error": {"code": "insufficient_quota"}}))
            s.close(1013, "quota")
        return ev

    def on_client(self, ev, s):
        if ev.type == "drop.me":
            return None
        if ev.type == "split.me":
            return [Event.from_data({"type": "one"}), Event.from_data({"type": "two"})]
        return ev


async def test_stage_actions_are_carried_out_in_order_then_close():
    c, u = MemEndpoint(), MemEndpoint()
    c.feed('{"type":"drop.me"}', '{"type":"split.me"}')
    await asyncio.sleep(0)
    stage = Quota()
    # let the client events through before the upstream speaks
    async def later():
        await asyncio.sleep(0.05)
        u.feed('{"type":"x"}', '{"type":"response.done"}')
    asyncio.ensure_future(later())
    outcome, s = await run(c, u, [stage])
    assert types(u.sent) == ["one", "two", "response.cancel"]
    assert types(c.sent) == ["x", "response.done", "error"]
    assert c.closed_with == (1013, "quota") and u.closed_with[0] == 1000
    assert outcome.closed_by == "gateway"


class Ticker(BaseStage):
    def __init__(self) -> None:
        self.ticks = 0

    def on_tick(self, now, s):
        self.ticks += 1
        if self.ticks == 3:
            s.reply(Event.from_data({"type": "error", "error": {"code": "idle"}}))
            s.close(1008, "idle")


async def test_ticks_drive_time_limits():
    c, u = MemEndpoint(), MemEndpoint()
    outcome, _ = await run(c, u, [Ticker()], tick_seconds=0.01)
    assert types(c.sent) == ["error"] and c.closed_with == (1008, "idle")


async def test_cancellation_means_shutdown_with_1012():
    c, u = MemEndpoint(), MemEndpoint()
    s = Session(id="x", model="m")
    task = asyncio.ensure_future(Relay(c, u, Chain([]), s).run())
    await asyncio.sleep(0.05)
    task.cancel()
    outcome = await task
    assert outcome.closed_by == "shutdown" and c.closed_with[0] == 1012
    assert Event(c.sent[-1]).data["error"]["code"] == "server_shutting_down"
