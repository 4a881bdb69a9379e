"""Dialect detection, item announcements, warnings, fast paths."""

from __future__ import annotations

import copy

from openopen8.events import Event
from openopen8.relay.stage import Chain
from openopen8.stages.dialect import DialectStage

from .helpers import client_to_upstream, make_session, upstream_to_client, wire

USER_ITEM = {"id": "item_U", "type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_audio", "transcript": None}]}
ASSISTANT_START = {"id": "item_A", "type": "message", "role": "assistant",
                   "status": "in_progress", "content": []}
ASSISTANT_DONE = {"id": "item_A", "type": "message", "role": "assistant", "status": "completed",
                  "content": [{"type": "output_audio", "transcript": "Hi there"}]}


def _beta_client():
    return make_session(client_dialect="beta", facts={"dialect_source": "header"})


# ---------------------------------------------------------------- detection
def test_default_source_switches_to_beta_on_a_beta_shaped_first_update():
    s = make_session(facts={"dialect_source": "default"})
    chain = Chain([DialectStage("client")])
    up, _ = client_to_upstream(chain, s, [{"type": "session.update",
                                           "session": {"instructions": "x"}}])
    assert s.client_dialect == "beta"
    assert up[0]["session"] == {"type": "realtime", "instructions": "x"}
    # from now on the client hears beta names
    out = upstream_to_client(chain, s, [{"type": "response.output_audio.delta", "event_id": "e",
                                         "response_id": "r", "item_id": "i", "output_index": 0,
                                         "content_index": 0, "delta": "AA=="}])
    assert out[0]["type"] == "response.audio.delta"


def test_default_source_stays_ga_for_a_ga_update_and_passes_it_untouched():
    s = make_session(facts={"dialect_source": "default"})
    ev = wire({"type": "session.update", "session": {"type": "realtime", "instructions": "x"}})
    raw = ev.raw
    out = Chain([DialectStage("client")]).client(ev, s)
    assert out[0] is ev and ev.raw == raw
    assert s.client_dialect == "ga"


def test_operator_default_beta_yields_to_a_ga_shaped_first_update():
    s = make_session(client_dialect="beta", facts={"dialect_source": "default"})
    client_to_upstream(Chain([DialectStage("client")]), s,
                       [{"type": "session.update", "session": {"type": "realtime"}}])
    assert s.client_dialect == "ga"


def test_only_the_first_update_decides():
    s = make_session(facts={"dialect_source": "default"})
    chain = Chain([DialectStage("client")])
    client_to_upstream(chain, s, [{"type": "session.update", "session": {"type": "realtime"}},
                                  {"type": "session.update", "session": {"voice": "ash"}}])
    assert s.client_dialect == "ga"


def test_header_source_is_never_overridden():
    s = _beta_client()
    up, _ = client_to_upstream(Chain([DialectStage("client")]), s,
                               [{"type": "session.update", "session": {"type": "realtime"}}])
    assert s.client_dialect == "beta"
    assert up == [{"type": "session.update", "session": {"type": "realtime"}}]


def test_seed_003_mixed_session_is_translated_and_client_stays_ga():
    """seeds/003: type "realtime" *and* beta modalities/turn_detection. The
    client reads GA names (response.output_audio.delta), so it stays GA; the
    beta fields are moved where GA wants them instead of being rejected."""
    s = make_session(facts={"dialect_source": "default"})
    chain = Chain([DialectStage("client")])
    up, replies = client_to_upstream(chain, s, [
        {"type": "session.update",
         "session": {"type": "realtime", "modalities": ["audio", "text"],
                     "turn_detection": {"type": "server_vad"},
                     "audio": {"output": {"voice": "alloy"}},
                     "instructions": "You are a concise assistant."}},
        {"type": "response.create", "response": {"modalities": ["audio", "text"]}},
    ])
    assert s.client_dialect == "ga"
    assert up == [
        {"type": "session.update",
         "session": {"type": "realtime", "output_modalities": ["audio"],
                     "audio": {"output": {"voice": "alloy"},
                               "input": {"turn_detection": {"type": "server_vad"}}},
                     "instructions": "You are a concise assistant."}},
        {"type": "response.create", "response": {"output_modalities": ["audio"]}},
    ]
    assert replies == []
    out = upstream_to_client(chain, s, [{"type": "response.output_audio.delta", "delta": "AA=="}])
    assert out[0]["type"] == "response.output_audio.delta"


# ---------------------------------------------------------------- warnings
def test_temperature_dropped_with_one_warning_per_field():
    s = _beta_client()
    chain = Chain([DialectStage("client")])
    up, replies = client_to_upstream(chain, s, [
        {"type": "session.update", "event_id": "u1", "session": {"temperature": 0.7}},
        {"type": "session.update", "session": {"temperature": 0.9, "voice": "ash"}},
        {"type": "response.create", "response": {"temperature": 0.6}},
        {"type": "response.create", "response": {"temperature": 0.6}},
    ])
    assert all("temperature" not in (e.get("session") or e.get("response")) for e in up)
    assert [r["error"]["param"] for r in replies] == ["session.temperature", "response.temperature"]
    w = replies[0]
    assert w["type"] == "error" and w["error"]["code"] == "parameter_ignored"
    assert w["error"]["event_id"] == "u1"
    assert "not a failure" in w["error"]["message"]


def test_warnings_can_be_switched_off():
    s = _beta_client()
    _, replies = client_to_upstream(Chain([DialectStage("client", warn="off")]), s,
                                    [{"type": "session.update", "session": {"temperature": 1}}])
    assert replies == []


# ------------------------------------------------------ item announcements
def test_ga_added_and_done_become_one_beta_created_per_item():
    s = _beta_client()
    out = upstream_to_client(Chain([DialectStage("client")]), s, [
        {"type": "conversation.item.added", "event_id": "e1", "previous_item_id": None,
         "item": USER_ITEM},
        {"type": "conversation.item.done", "event_id": "e2", "previous_item_id": None,
         "item": USER_ITEM},
        {"type": "conversation.item.added", "event_id": "e3", "previous_item_id": "item_U",
         "item": ASSISTANT_START},
        {"type": "conversation.item.done", "event_id": "e4", "previous_item_id": "item_U",
         "item": ASSISTANT_DONE},
    ])
    assert out == [
        {"type": "conversation.item.created", "event_id": "e1", "previous_item_id": None,
         "item": USER_ITEM},
        {"type": "conversation.item.created", "event_id": "e3", "previous_item_id": "item_U",
         "item": ASSISTANT_START},
    ]


def test_a_done_without_added_still_announces_the_item_once():
    s = _beta_client()
    out = upstream_to_client(Chain([DialectStage("client")]), s, [
        {"type": "conversation.item.done", "event_id": "e", "item": ASSISTANT_DONE}])
    assert out[0]["type"] == "conversation.item.created"
    assert out[0]["item"]["content"] == [{"type": "audio", "transcript": "Hi there"}]


def test_a_deleted_item_id_may_be_announced_again():
    s = _beta_client()
    chain = Chain([DialectStage("client")])
    ev = {"type": "conversation.item.added", "event_id": "e", "item": USER_ITEM}
    out = upstream_to_client(chain, s, [ev, {"type": "conversation.item.deleted",
                                             "event_id": "d", "item_id": "item_U"}, ev])
    assert [e["type"] for e in out] == ["conversation.item.created", "conversation.item.deleted",
                                        "conversation.item.created"]


def test_beta_upstream_created_becomes_ga_added_plus_done_in_ga_order():
    s = make_session(upstream_dialect="beta")
    beta_done = copy.deepcopy(ASSISTANT_DONE)
    beta_done["content"][0]["type"] = "audio"
    out = upstream_to_client(Chain([DialectStage("upstream")]), s, [
        {"type": "conversation.item.created", "event_id": "e1", "previous_item_id": None,
         "item": USER_ITEM},
        {"type": "conversation.item.created", "event_id": "e2", "previous_item_id": "item_U",
         "item": ASSISTANT_START},
        {"type": "response.audio.done", "event_id": "e3", "response_id": "r", "item_id": "item_A",
         "output_index": 0, "content_index": 0},
        {"type": "response.output_item.done", "event_id": "e4", "response_id": "r",
         "output_index": 0, "item": beta_done},
    ])
    assert [e["type"] for e in out] == [
        "conversation.item.added", "conversation.item.done",
        "conversation.item.added",
        "response.output_audio.done",
        "conversation.item.done", "response.output_item.done"]
    assert out[1]["item"] == USER_ITEM
    assert out[4]["item"] == ASSISTANT_DONE and out[4]["previous_item_id"] == "item_U"
    assert out[5]["item"] == ASSISTANT_DONE


def test_beta_upstream_cancelled_response_closes_open_items_before_response_done():
    s = make_session(upstream_dialect="beta")
    cut = dict(ASSISTANT_START, status="incomplete")
    out = upstream_to_client(Chain([DialectStage("upstream")]), s, [
        {"type": "conversation.item.created", "event_id": "e1", "item": ASSISTANT_START},
        {"type": "response.done", "event_id": "e2",
         "response": {"id": "r", "status": "cancelled", "output": [cut]}},
    ])
    assert [e["type"] for e in out] == ["conversation.item.added", "conversation.item.done",
                                        "response.done"]


# ---------------------------------------------------------------- fast paths
def test_ga_client_events_are_forwarded_as_the_same_object():
    s = make_session(facts={"dialect_source": "header"})
    chain = Chain([DialectStage("client"), DialectStage("upstream")])
    for d in ({"type": "input_audio_buffer.append", "audio": "AAAA"},
              {"type": "conversation.item.create", "item": {"type": "message", "role": "assistant",
                                                            "content": [{"type": "text"}]}},
              {"type": "response.create", "response": {"output_modalities": ["text"]}}):
        ev = wire(d)
        raw = ev.raw
        out = chain.client(ev, s)
        assert out == [ev] and out[0] is ev and ev.raw == raw


def test_ga_server_events_are_forwarded_as_the_same_object():
    s = make_session()
    chain = Chain([DialectStage("client"), DialectStage("upstream")])
    for d in ({"type": "response.output_audio.delta", "delta": "AAAA"},
              {"type": "conversation.item.added", "item": USER_ITEM},
              {"type": "session.created", "session": {"type": "realtime"}}):
        ev = wire(d)
        raw = ev.raw
        out = chain.server(ev, s)
        assert out[0] is ev and ev.raw == raw


def test_beta_rename_does_not_parse_the_frame():
    s = _beta_client()
    ev = Event(raw='{"type":"response.output_audio.delta","event_id":"e","delta":"QUJD"}')
    out = Chain([DialectStage("client")]).server(ev, s)
    assert out[0].raw == '{"type":"response.audio.delta","event_id":"e","delta":"QUJD"}'
    assert out[0].type == "response.audio.delta"
    assert ev._data is None            # the audio payload was never parsed
