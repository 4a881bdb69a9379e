"""Ill-typed events, one class each: what the stages answer or pass on.

Each class was found by ``test_fuzz.py`` and made a stage raise (the chain
then ended the session, or -- since its guard -- logged a gateway bug).  A
client event the gateway cannot use is answered as OpenAI answers (an
``error`` naming the field the client wrote, its ``event_id`` when it is a
string) and the session goes on; an upstream event a stage cannot read
goes on to the client as it came.
"""

from __future__ import annotations

import base64
import logging

import orjson
import pytest

from openopen8.billing import PriceTable
from openopen8.events import Event, wire_event
from openopen8.relay.stage import Chain
from openopen8.stages.audio import AudioStage
from openopen8.stages.dialect import DialectStage
from openopen8.stages.frames import FrameStage
from openopen8.stages.metering import MeteringStage

from .helpers import client_to_upstream, make_session, upstream_to_client

PCM = base64.b64encode(bytes(960)).decode()


def edge(client: str = "ga", **facts):
    """The client end of the production chain: frames, dialect, audio."""
    s = make_session(client_dialect=client, facts={"dialect_source": "header", **facts})
    return Chain([FrameStage(), DialectStage("client"), AudioStage()]), s


def one_error(replies: list[dict]) -> dict:
    assert len(replies) == 1, replies
    assert replies[0]["type"] == "error"
    return replies[0]["error"]


def still_works(chain: Chain, s) -> None:
    """The session's next event goes through."""
    ok = {"type": "session.update", "event_id": "next",
          "session": {"type": "realtime", "instructions": "hi"}} if s.client_dialect == "ga" else \
         {"type": "session.update", "event_id": "next", "session": {"instructions": "hi"}}
    up, replies = client_to_upstream(chain, s, [ok])
    assert replies == []
    assert up[0]["session"]["instructions"] == "hi"


# ------------------------------------------------------------------ client: formats
@pytest.mark.parametrize("client,session,param", [
    # the case: a GA update with a beta field whose value is an object
    ("ga", {"type": "realtime", "input_audio_format": {}}, "session.input_audio_format"),
    ("beta", {"input_audio_format": {}}, "session.input_audio_format"),
    ("ga", {"type": "realtime", "output_audio_format": ["pcm16"]}, "session.output_audio_format"),
    ("ga", {"type": "realtime", "input_audio_format": "pcm16", "input_audio_sample_rate": {}},
     "session.input_audio_sample_rate"),
    ("beta", {"output_audio_sample_rate": True}, "session.output_audio_sample_rate"),
    ("ga", {"type": "realtime", "audio": {"input": {"format": {"type": {}}}}},
     "session.audio.input.format.type"),
    ("ga", {"type": "realtime", "audio": {"output": {"format": {"type": ["audio/pcm"]}}}},
     "session.audio.output.format.type"),
    ("ga", {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm",
                                                               "rate": [24000]}}}},
     "session.audio.input.format.rate"),
])
def test_an_ill_typed_audio_format_is_invalid_value_named_as_the_client_wrote_it(
        client, session, param):
    chain, s = edge(client)
    up, replies = client_to_upstream(chain, s, [
        {"type": "session.update", "event_id": "evt_1", "session": session}])
    assert up == []                      # discarded whole, as OpenAI does
    err = one_error(replies)
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", param, "evt_1")
    still_works(chain, s)


def test_a_gateway_audio_format_beats_the_beta_alias_it_overrides():
    """GA fields win over their beta aliases: an alias the GA field replaced
    is not judged."""
    chain, s = edge("ga")
    up, replies = client_to_upstream(chain, s, [{"type": "session.update", "session": {
        "type": "realtime", "input_audio_format": {},
        "audio": {"input": {"format": {"type": "audio/pcmu"}}}}}])
    assert replies == []
    assert up[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}


@pytest.mark.parametrize("client,response,param", [
    ("ga", {"audio": {"output": {"format": {"type": {"x": 1}}}}},
     "response.audio.output.format.type"),
    ("beta", {"output_audio_format": []}, "response.output_audio_format"),
    ("ga", {"output_audio_format": 5}, "response.output_audio_format"),
])
def test_an_ill_typed_response_format_is_invalid_value(client, response, param):
    chain, s = edge(client)
    up, replies = client_to_upstream(chain, s, [
        {"type": "response.create", "event_id": "r1", "response": response}])
    assert up == []
    err = one_error(replies)
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", param, "r1")


def test_a_transcription_session_with_an_ill_typed_format_is_invalid_value():
    chain, s = edge("beta")
    up, replies = client_to_upstream(chain, s, [{"type": "transcription_session.update",
                                                 "session": {"input_audio_format": {"a": 1}}}])
    assert up == []
    assert one_error(replies)["param"] == "session.input_audio_format"


def test_a_message_quotes_a_huge_value_briefly():
    chain, s = edge("ga")
    _, replies = client_to_upstream(chain, s, [{"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "x" * 100_000}}}}}])
    assert len(one_error(replies)["message"]) < 300


@pytest.mark.parametrize("eid", [{}, [], 5, True, None])
def test_an_event_id_that_is_not_a_string_is_not_echoed(eid):
    chain, s = edge("ga", input_rate=16000)
    _, replies = client_to_upstream(chain, s, [
        {"type": "session.update", "event_id": eid,
         "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/x"}}}}},
        {"type": "input_audio_buffer.append", "event_id": eid, "audio": "%%%%\u00e9"},
    ])
    assert len(replies) == 2
    assert [r["error"]["event_id"] for r in replies] == [None, None]


# ------------------------------------------------------------------ client: items
@pytest.mark.parametrize("part_type", [["text"], {"t": 1}, None, 3])
def test_an_ill_typed_content_type_goes_upstream_untouched(part_type):
    item = {"type": "message", "role": "assistant", "content": [{"type": part_type, "text": "x"}]}
    event = {"type": "conversation.item.create", "item": item}
    response = {"type": "response.create", "response": {"input": [item]}}
    chain, s = edge("beta")
    up, replies = client_to_upstream(chain, s, [event, response])
    assert replies == []
    assert up[0] == event and up[1]["response"]["input"] == [item]
    # and through a beta upstream's edge
    s2 = make_session(upstream_dialect="beta")
    up, replies = client_to_upstream(Chain([DialectStage("upstream")]), s2, [event])
    assert (up, replies) == ([event], [])


# ------------------------------------------------------------------ client: text
def test_two_different_type_keys_are_invalid_event():
    """The chain judged the event by its first ``type``; forwarding the last
    one would be another event (and a non-string type breaks the stages
    after)."""
    chain, s = edge("beta", input_rate=16000)
    for text in ('{"type":"session.update","event_id":"d1","session":{"voice":"ash"},'
                 '"type":{"x":1}}',
                 '{"type":"input_audio_buffer.append","event_id":"d1","audio":"' + PCM
                 + '","type":"response.create"}'):
        assert chain.client(wire_event(text), s) == []
        err = orjson.loads(s.to_client.pop().text)["error"]
        assert (err["code"], err["param"], err["event_id"]) == ("invalid_event", "type", "d1")
    still_works(chain, s)


def nested(depth: int):
    v: object = []
    for _ in range(depth):
        v = [v]
    return v


def test_an_event_nested_too_deep_to_write_is_invalid_json_and_changes_nothing():
    """orjson reads 1024 levels and writes 254: an event a stage rewrote is
    written in the stage, where the client can still be answered."""
    deep = "[" * 300 + "]" * 300
    for client, text in (
        # the dialect stage rewrites these
        ("beta", '{"type":"session.update","event_id":"n1","session":{"voice":"ash","tools":'
         + deep + "}}"),
        ("beta", '{"type":"session.update","event_id":"n1","session":{"input_audio_format":'
         '"g711_ulaw","output_audio_format":"g711_ulaw","x":' + deep + "}}"),
        # the audio stage rewrites this one (16 kHz is asked of the upstream as 24 kHz)
        ("ga", '{"type":"session.update","event_id":"n1","session":{"type":"realtime","audio":'
         '{"input":{"format":{"type":"audio/pcm","rate":16000}}},"x":' + deep + "}}"),
    ):
        chain, s = edge(client)
        assert chain.client(wire_event(text), s) == []
        err = orjson.loads(s.to_client.pop().text)["error"]
        assert (err["code"], err["event_id"]) == ("invalid_json", "n1")
        # the refused format change did not happen: appends still pass as they are
        ap = wire_event(orjson.dumps({"type": "input_audio_buffer.append", "audio": PCM}).decode())
        assert chain.client(ap, s) == [ap]
        still_works(chain, s)


# ------------------------------------------------------------------ upstream events
def beta_client():
    s = make_session(client_dialect="beta", facts={"dialect_source": "header"})
    return Chain([DialectStage("client")]), s


@pytest.mark.parametrize("event", [
    {"type": "conversation.item.added", "event_id": "e", "item": {"id": ["item_A"], "content": []}},
    {"type": "conversation.item.deleted", "event_id": "e", "item_id": {"id": "item_A"}},
    {"type": "response.content_part.added", "event_id": "e", "part": {"type": {"a": 1}}},
    {"type": "conversation.item.retrieved", "event_id": "e",
     "item": {"id": "i", "role": "assistant", "content": [{"type": ["output_text"]}]}},
])
def test_ill_typed_ids_and_types_reach_a_beta_client_as_they_came(event):
    chain, s = beta_client()
    out = upstream_to_client(chain, s, [event])
    want = dict(event)
    if event["type"] == "conversation.item.added":
        want["type"] = "conversation.item.created"
    assert out == [want]


@pytest.mark.parametrize("event", [
    {"type": "conversation.item.created", "event_id": "e",
     "item": {"id": ["x"], "status": "in_progress", "content": []}},
    {"type": "response.output_item.done", "event_id": "e", "item": {"id": {"a": 1}}},
    {"type": "response.done", "event_id": "e", "response": {"id": "r", "output": 5}},
])
def test_ill_typed_events_of_a_beta_upstream_reach_the_client(event):
    s = make_session(upstream_dialect="beta")
    out = upstream_to_client(Chain([DialectStage("upstream")]), s, [event])
    assert len(out) == 1 and out[0]["event_id"] == "e"


@pytest.mark.parametrize("text", [
    '{"type":"session.updated","event_id":"e","session":{"type":"realtime",}}',
    '{"type":"response.done","event_id":"e","response":{"id":"r"',
    '{"type":"response.output_audio.delta","item_id":"i","delta":"' + PCM + '",}',
    '{"type": "response.output_audio.delta", "item_id": "i", "delta": "AAAA",}',
    '{"type":"session.updated","event_id":"e","session":{"type":"realtime"},"type":5}',
    '{"type":"transcription_session.updated","event_id":"e","session":{},"type":{"a":1}}',
])
@pytest.mark.parametrize("client,upstream", [("beta", "ga"), ("ga", "beta"), ("beta", "beta")])
def test_upstream_text_a_stage_cannot_read_goes_on_as_it_came(text, client, upstream):
    s = make_session(client_dialect=client, upstream_dialect=upstream,
                     facts={"dialect_source": "header", "output_rate": 16000})
    sink = _Sink()
    meter = MeteringStage(sink, PriceTable(), token_id=1)
    stages = [DialectStage("client"), AudioStage(), meter]
    if upstream == "beta":
        stages.append(DialectStage("upstream"))
    chain = Chain(stages)
    chain.open(s)
    out = chain.server(wire_event(text), s)
    assert len(out) == 1 and s.to_client == []
    if client == "beta" and text.startswith('{"type":"response.output_audio.delta"'):
        assert out[0].text == text.replace("output_audio", "audio", 1)   # renamed, nothing else
    else:
        assert out[0].text == text


def test_an_upstream_event_nested_too_deep_to_write_goes_on_as_it_came():
    s = make_session(client_dialect="beta", facts={"dialect_source": "header"})
    chain = Chain([DialectStage("client")])
    text = ('{"type":"response.done","event_id":"e","response":{"id":"r","modalities":["text"],'
            '"x":' + "[" * 300 + "]" * 300 + "}}")
    (out,) = chain.server(wire_event(text), s)
    assert out.text == text


def test_audio_deltas_with_ids_that_cannot_key_a_stream_pass_unconverted():
    s = make_session(facts={"output_rate": 16000})
    chain = Chain([AudioStage()])
    chain.open(s)
    for event in ({"type": "response.output_audio.delta", "item_id": ["i"], "content_index": 0,
                   "delta": PCM},
                  {"type": "response.output_audio.done", "item_id": {"i": 1}, "content_index": 0},
                  {"type": "response.done", "response": ["resp_1"]}):
        ev = wire_event(orjson.dumps(event).decode())
        # a real stream first, so the stage has streams to look up and end
        chain.server(wire_event(orjson.dumps({"type": "response.output_audio.delta",
                                              "item_id": "ok", "content_index": 0,
                                              "delta": PCM}).decode()), s)
        assert chain.server(ev, s) == [ev]


# ------------------------------------------------------------------ metering
class _Sink:
    def __init__(self) -> None:
        self.rows: list = []

    def record(self, row) -> None:
        self.rows.append(row)

    def opened(self, *a) -> None:
        pass

    def closed(self, *a) -> None:
        pass


def metered():
    sink = _Sink()
    m = MeteringStage(sink, PriceTable(), token_id=1)
    s = make_session()
    m.on_open(s)
    return m, s, sink


@pytest.mark.parametrize("event", [
    {"type": "response.created", "response": ["in_progress"]},
    {"type": "response.done", "response": "done"},
    {"type": "session.updated", "session": {"type": "realtime", "audio": {"input": "AAAA",
                                                                          "output": [1]}}},
    {"type": "session.updated", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": {"a": 1}}}, "output": {"format": {"type": []}}}}},
    {"type": "session.updated", "session": {"input_audio_format": {}, "output_audio_format": []}},
])
def test_metering_passes_on_what_it_cannot_read(event):
    m, s, sink = metered()
    ev = Event(orjson.dumps(event).decode())
    assert m.on_server(ev, s) is ev
    assert sink.rows == [] and (m.in_bps, m.out_bps) == (48000, 48000)


def _usage(**kw):
    return {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2, **kw}


@pytest.mark.parametrize("event", [
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "i",
     "usage": {"type": "duration", "seconds": 1e308}},
    {"type": "response.done", "response": {"id": "r", "usage": _usage(input_tokens=2**40)}},
    {"type": "response.done", "response": {"id": "r", "usage": _usage(
        input_token_details={"text_tokens": 2**62, "audio_tokens": 2**62})}},
])
def test_usage_no_ledger_row_can_hold_is_logged_not_recorded(event, caplog):
    """A row the database refuses would hold up every row written with it."""
    caplog.set_level(logging.WARNING, logger="openopen8.metering")
    m, s, sink = metered()
    ev = Event(orjson.dumps(event).decode())
    assert m.on_server(ev, s) is ev
    assert sink.rows == []
    assert "out of range" in caplog.text


def test_ledger_refs_fit_their_column_and_stay_distinct():
    """Refs over the column's 200 characters are digested, not cut: two long
    ids that share a prefix remain two rows."""
    m, s, sink = metered()
    for event in ({"type": "response.done", "response": {"id": "r" * 500 + "1", "usage": _usage()}},
                  {"type": "response.done", "response": {"id": "r" * 500 + "2", "usage": _usage()}},
                  {"type": "conversation.item.input_audio_transcription.completed",
                   "item_id": "i" * 500, "content_index": 0, "usage": _usage()},
                  {"type": "conversation.item.input_audio_transcription.completed",
                   "item_id": nested(3), "content_index": {}, "usage": _usage()}):
        m.on_server(Event(orjson.dumps(event).decode()), s)
    refs = [row.ref for row in sink.rows]
    assert len(set(refs)) == 4 and all(len(r) <= 200 for r in refs)
    assert refs[3] == "?/?"
