"""The metering and limits stages, lists in and lists out (no sockets), and
the relay seeing a response in flight through after the client is gone."""

from __future__ import annotations

import asyncio
import base64

import orjson

from openopen8.billing import PriceTable, Tokens
from openopen8.events import Event
from openopen8.ledger import TokenBalance
from openopen8.relay.core import Relay
from openopen8.relay.stage import Chain, Session
from openopen8.stages.limits import LimitsStage
from openopen8.stages.metering import MeteringStage
from openopen8.store.base import TokenLimits

from .test_relay_core import MemEndpoint


class Sink:
    def __init__(self, balance: TokenBalance | None = None) -> None:
        self.rows, self.ends, self.channels = [], [], {}
        self.balance = balance

    def record(self, row):
        self.rows.append(row)
        if self.balance is not None:
            self.balance.pending_nanos += row.cost_nanos

    def opened(self, sid, channel):
        self.channels[sid] = channel

    def closed(self, end, token_id):
        self.ends.append((end, token_id))


def ev(**data) -> Event:
    return Event(orjson.dumps(data).decode())


def usage(text_in=10, audio_in=20, cached_text=0, cached_audio=0, text_out=5, audio_out=40):
    return {"total_tokens": text_in + audio_in + text_out + audio_out,
            "input_tokens": text_in + audio_in, "output_tokens": text_out + audio_out,
            "input_token_details": {"text_tokens": text_in, "audio_tokens": audio_in,
                                    "image_tokens": 0, "cached_tokens": cached_text + cached_audio,
                                    "cached_tokens_details": {"text_tokens": cached_text,
                                                              "audio_tokens": cached_audio}},
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out}}


def created(rid: str) -> Event:
    return ev(type="response.created", event_id="e1", response={"id": rid, "status": "in_progress",
                                                              "usage": None})


def done(rid: str, status: str = "completed", **u) -> Event:
    return ev(type="response.done", event_id="e2",
              response={"id": rid, "status": status, "usage": usage(**u)})


def b64(n_bytes: int) -> str:
    return base64.b64encode(bytes(n_bytes)).decode()


def session(model: str = "gpt-realtime") -> Session:
    s = Session(id="sess_unit", model=model)
    return s


def meter(sink: Sink | None = None, model: str = "gpt-realtime"):
    sink = sink or Sink()
    m = MeteringStage(sink, PriceTable(), token_id=7)
    s = session(model)
    m.on_open(s)
    return m, s, sink


def test_response_usage_becomes_one_priced_row_and_events_pass_untouched():
    m, s, sink = meter()
    e = done("resp_1", text_in=59, audio_in=73, cached_audio=64, text_out=41, audio_out=147)
    raw = e.raw
    assert m.on_server(created("resp_1"), s) is not None
    assert m.on_server(e, s) is e and e.raw == raw        # not re-serialised
    assert m.on_server(done("resp_1", text_in=59), s) is not None   # a duplicate: ignored
    [row] = sink.rows
    assert (row.session_id, row.kind, row.ref, row.token_id, row.status) == \
        ("sess_unit", "response", "resp_1", 7, "completed")
    assert row.tokens == Tokens(input_text=59, input_audio=73, cached_audio=64, output_text=41,
                                output_audio=147)
    assert row.cost_nanos == 10_613_600 and not row.fallback
    assert not m.inflight


def test_cancelled_and_failed_responses_with_usage_are_recorded_without_usage_not():
    m, s, sink = meter()
    m.on_server(done("r1", status="cancelled"), s)
    m.on_server(done("r2", status="failed"), s)
    m.on_server(ev(type="response.done", response={"id": "r3", "status": "failed",
                                                   "usage": None}), s)
    assert [(r.ref, r.status) for r in sink.rows] == [("r1", "cancelled"), ("r2", "failed")]


def test_unknown_model_rows_are_flagged():
    m, s, sink = meter(model="brand-new-realtime")
    m.on_server(done("r1"), s)
    assert sink.rows[0].fallback and sink.rows[0].cost_nanos > 0


def test_audio_seconds_from_base64_length_in_the_sessions_format_without_parsing():
    m, s, sink = meter()
    # 24 kHz pcm16 by default: 48,000 bytes a second
    append = ev(type="input_audio_buffer.append", audio=b64(24000))
    m.on_client(append, s)
    assert append._data is None                           # never parsed
    assert abs(m.audio_in_seconds - 0.5) < 1e-3
    m.on_server(ev(type="session.updated", session={
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"},
                                                "transcription": {"model": "whisper-1"}},
                                      "output": {"format": {"type": "audio/pcma"}}}}), s)
    m.on_client(ev(type="input_audio_buffer.append", event_id="x", audio=b64(8000)), s)
    assert abs(m.audio_in_seconds - 1.5) < 1e-3
    delta = ev(type="response.output_audio.delta", response_id="r", item_id="i", output_index=0,
               content_index=0, delta=b64(4000))
    m.on_server(delta, s)
    assert delta._data is None and abs(m.audio_out_seconds - 0.5) < 1e-3
    # a transcription billed by the minute, at the model the session named
    m.on_server(ev(type="conversation.item.input_audio_transcription.completed", item_id="item_1",
                   content_index=0, transcript="hi", usage={"type": "duration", "seconds": 60}), s)
    [row] = sink.rows
    assert (row.kind, row.ref, row.model, row.cost_nanos) == ("transcription", "item_1/0",
                                                              "whisper-1", 6_000_000)
    s.closed_by, s.close_code, s.events_in = "client", 1000, 2
    m.on_close(s)
    [(end, token_id)] = sink.ends
    assert token_id == 7 and end.audio_in_seconds == 1.5 and end.audio_out_seconds == 0.5
    assert end.close_code == 1000 and end.events_in == 2


def test_audio_length_is_found_whatever_the_json_spacing():
    m, s, sink = meter()
    for text in ('{"type": "input_audio_buffer.append", "audio": "%s"}',
                 '{"type":"input_audio_buffer.append","event_id":"audio","audio" :\t"%s"}',
                 '{"audio":"%s","type":"input_audio_buffer.append"}'):
        m.on_client(Event(text % b64(4800)), s)
    m.on_client(Event.from_data({"type": "input_audio_buffer.append", "audio": b64(4800)}), s)
    assert abs(m.audio_in_seconds - 0.4) < 1e-3


def test_watchers_count_wire_bytes_like_the_full_path_across_a_rate_change():
    """What the relay's lanes call: the same seconds from the frame's bytes,
    compact, as Python's json.dumps writes it, or spaced any other way."""
    m, s, sink = meter()
    s_ = m.watch_client("input_audio_buffer.append", s)
    d_ = m.watch_server("response.output_audio.delta", s)
    assert m.watch_client("response.create", s) is None
    assert m.watch_server("response.done", s) is None
    for text in ('{"type":"input_audio_buffer.append","audio":"%s","event_id":"e"}',
                 '{"type": "input_audio_buffer.append", "audio": "%s"}',
                 '{"type":"input_audio_buffer.append","audio" :\n"%s"}'):
        s_((text % b64(4800)).encode())
    d_(('{"type":"response.output_audio.delta","delta":"%s"}' % b64(24000)).encode())
    assert abs(m.audio_in_seconds - 0.3) < 1e-3 and abs(m.audio_out_seconds - 0.5) < 1e-3
    assert m.flight_audio_bytes == 24000                 # output towards the in-flight estimate
    m.on_server(ev(type="session.updated", session={
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}},
                                      "output": {"format": {"type": "audio/pcm", "rate": 16000}}}}), s)
    s_(('{"type":"input_audio_buffer.append","audio":"%s"}' % b64(8000)).encode())
    d_(('{"type": "response.output_audio.delta", "delta": "%s"}' % b64(16000)).encode())
    # seconds before the change stay at the old rate; after it, the new one
    assert abs(m.audio_in_seconds - 1.3) < 1e-3 and abs(m.audio_out_seconds - 1.0) < 1e-3


def test_beta_upstream_session_and_names():
    m, s, sink = meter()
    m.on_server(ev(type="session.updated", session={
        "input_audio_format": "g711_ulaw", "output_audio_format": "pcm16",
        "input_audio_transcription": {"model": "gpt-4o-transcribe"}}), s)
    m.on_client(ev(type="input_audio_buffer.append", audio=b64(800)), s)
    m.on_server(ev(type="response.audio.delta", delta=b64(4800)), s)
    assert abs(m.audio_in_seconds - 0.1) < 1e-3 and abs(m.audio_out_seconds - 0.1) < 1e-3
    m.on_server(ev(type="conversation.item.input_audio_transcription.completed", item_id="i",
                   content_index=0, usage={"type": "tokens", "input_tokens": 16, "output_tokens": 8,
                                           "input_token_details": {"audio_tokens": 16}}), s)
    assert sink.rows[0].model == "gpt-4o-transcribe" and not sink.rows[0].fallback


def limits(quota_nanos: int | None = None, pending: int = 0, **kw):
    bal = TokenBalance(7, quota_nanos, spent_nanos=0, pending_nanos=pending)
    sink = Sink(bal)
    m, s, _ = meter(sink)
    lim = LimitsStage(m, TokenLimits(quota_nanos=quota_nanos, **kw), bal)
    lim.on_open(s)
    chain = Chain([lim, m])
    chain.open(s)
    return chain, lim, m, s, sink, bal


def errors(s: Session) -> list[dict]:
    return [e.data["error"] for e in s.to_client if e.type == "error"]


def test_a_settled_response_that_uses_up_the_quota_ends_the_session_with_1013():
    # one response of the default usage costs 10*4 + 20*32 + 5*16 + 40*64 = 3320 USD/1M
    chain, lim, m, s, sink, bal = limits(quota_nanos=5000 * 1000)
    assert chain.server(created("r1"), s) and chain.server(done("r1"), s)
    assert s.close_request is None and bal.pending_nanos == 3_320_000
    chain.server(created("r2"), s)
    # the second is cancelled as soon as what it would read (the first one's context)
    # plus what it streamed would overrun the 1.68 mUSD left
    for _ in range(30):
        if s.close_request:
            break
        chain.server(ev(type="response.output_audio.delta", delta=b64(4800)), s)
    assert s.close_request == (1013, "insufficient_quota")
    [err] = errors(s)
    assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    assert [e.data for e in s.to_upstream] == [
        {"type": "response.cancel", "event_id": s.to_upstream[0].data["event_id"],
         "response_id": "r2"}]
    # nothing more from the client goes upstream; the cancelled response is still billed
    assert chain.client(ev(type="response.create"), s) == []
    chain.server(done("r2", status="cancelled", audio_out=10), s)
    assert [r.status for r in sink.rows] == ["completed", "cancelled"]
    assert len(errors(s)) == 1 and len(s.to_upstream) == 1


def test_with_a_quota_deltas_are_watched_on_lanes_until_it_runs_out():
    """The chain offers deltas a lane (metering counts, limits checks); the
    delta that finds the quota overrun revokes it, and the next one, on the
    full path, stops the session."""
    chain, lim, m, s, sink, bal = limits(quota_nanos=5000 * 1000)
    lanes: dict = {}
    resets = []
    chain.on_lane = lambda up, t, w: lanes.__setitem__(t, w)
    chain.on_lanes_reset = lambda: (resets.append(1), lanes.clear())
    chain.server(created("r0"), s)
    chain.server(done("r0"), s)                       # 1.68 mUSD left
    chain.server(created("r1"), s)
    delta = "response.output_audio.delta"
    chain.server(ev(type=delta, delta=b64(4800)), s)   # the first one opens the lane
    watchers = lanes[delta]
    assert watchers == (m._count_audio_delta, lim._watch_delta)
    frame = ('{"type":"%s","delta":"%s"}' % (delta, b64(4800))).encode()
    n = 0
    while delta in lanes and n < 100:                 # what the endpoint does per frame
        for w in watchers:
            w(frame)
        n += 1
    assert delta not in lanes and resets and s.close_request is None and 1 < n < 100
    assert lim.watch_server(delta, s) is None         # no lane for deltas any more
    chain.server(ev(type=delta, delta=b64(4800)), s)
    assert s.close_request == (1013, "insufficient_quota")
    assert [e.data["response_id"] for e in s.to_upstream] == ["r1"]


def test_response_create_after_exhaustion_is_refused():
    chain, lim, m, s, sink, bal = limits(quota_nanos=100, pending=100)
    assert chain.client(ev(type="response.create"), s) == []
    assert errors(s)[0]["code"] == "insufficient_quota" and s.close_request[0] == 1013
    assert s.to_upstream == []      # nothing in flight to cancel


def test_without_a_quota_nothing_is_checked():
    chain, lim, m, s, sink, bal = limits()
    for i in range(3):
        chain.server(created(f"r{i}"), s)
        chain.server(done(f"r{i}"), s)
    chain.tick(1e9, s)
    assert s.close_request is None and len(sink.rows) == 3


def test_max_duration_and_idle_timeout_name_the_limit_and_close_1008():
    chain, lim, m, s, sink, bal = limits(max_duration=10.0)
    chain.tick(lim.started + 9.9, s)
    assert s.close_request is None
    chain.tick(lim.started + 10.0, s)
    assert s.close_request == (1008, "max_duration")
    assert errors(s)[0]["code"] == "max_duration_exceeded" and "max_duration" in errors(s)[0]["message"]

    chain, lim, m, s, sink, bal = limits(idle_timeout=5.0)
    s.last_client_activity = lim.started + 3
    chain.tick(lim.started + 7.9, s)
    assert s.close_request is None
    chain.server(created("r1"), s)           # not idle while a response plays
    chain.tick(lim.started + 60, s)
    assert s.close_request is None
    chain.server(done("r1"), s)
    chain.tick(max(lim.last_done, s.last_client_activity) + 4.9, s)
    assert s.close_request is None
    chain.tick(max(lim.last_done, s.last_client_activity) + 5.0, s)
    assert s.close_request == (1008, "idle_timeout")
    assert errors(s)[0]["code"] == "idle_timeout" and "idle_timeout" in errors(s)[0]["message"]


async def test_relay_sees_a_response_in_flight_through_after_the_client_vanishes():
    """The client drops mid-response: the response is cancelled upstream and
    its usage (which the upstream bills) still reaches the ledger."""
    sink = Sink()
    m = MeteringStage(sink, PriceTable(), token_id=1)
    client, upstream = MemEndpoint(), MemEndpoint()
    s = Session(id="sess_gone", model="gpt-realtime")
    relay = Relay(client, upstream, Chain([m]), s, settle_seconds=2)
    upstream.feed(created("r1").text, done("r0").text)
    task = asyncio.ensure_future(relay.run())
    await asyncio.sleep(0.05)
    client.hang_up(1006)
    for _ in range(100):                      # the gateway asks the upstream to cancel
        if upstream.sent:
            break
        await asyncio.sleep(0.01)
    assert [Event(t).data["type"] for t in upstream.sent] == ["response.cancel"]
    upstream.feed(done("r1", status="cancelled").text)
    outcome = await asyncio.wait_for(task, 3)
    assert outcome.closed_by == "client"
    assert [(r.ref, r.status) for r in sink.rows] == [("r0", "completed"), ("r1", "cancelled")]
    assert sink.ends[0][0].closed_by == "client" and sink.ends[0][0].close_code == 1006


async def test_settling_is_bounded():
    m = MeteringStage(Sink(), PriceTable(), token_id=1)
    client, upstream = MemEndpoint(), MemEndpoint()
    s = Session(id="sess_slow", model="gpt-realtime")
    upstream.feed(created("r1").text)
    client.hang_up(1000)
    t0 = asyncio.get_running_loop().time()
    await asyncio.wait_for(Relay(client, upstream, Chain([m]), s, settle_seconds=0.2).run(), 3)
    assert asyncio.get_running_loop().time() - t0 < 1.0
    assert upstream.closed_with == (1000, "")
