from openopen8.events import Event, peek_type
from openopen8.relay.stage import BaseStage, Chain, Session


def test_peek_reads_the_leading_type_without_parsing():
    ev = Event('{"type":"response.done","response":{"type":"x"}}')
    assert ev.type == "response.done" and ev._data is None


def test_fallback_parse_when_type_is_not_first():
    ev = Event('{"event_id":"e","type":"session.update","session":{"type":"realtime"}}')
    assert ev.type == "session.update"
    assert peek_type('{ "type" : "a"}') is None and Event('{ "type" : "a"}').type == "a"


def test_peek_reads_python_json_dumps_spacing_too():
    # the official Python SDK sends json.dumps(...) output
    ev = Event('{"type": "input_audio_buffer.append", "audio": "AAAA"}')
    assert ev.type == "input_audio_buffer.append" and ev._data is None
    assert peek_type('{"type": "a\\"b"}') is None


def test_invalid_frames_are_classified():
    assert Event("nope").invalid == "invalid_json"
    assert Event("[1,2]").invalid == "invalid_event"
    assert Event('{"no":"type"}').invalid == "invalid_event"
    assert Event('{"type":"ok"}').invalid is None


def test_text_is_reused_until_changed():
    raw = '{"type":"a",  "k": 1}'
    ev = Event(raw)
    assert ev.text is raw and ev.data["k"] == 1 and ev.text is raw
    ev.data["k"] = 2
    ev.touch()
    assert ev.text == '{"type":"a","k":2}'
    ev.replace({"type": "b"})
    assert ev.type == "b" and ev.text == '{"type":"b"}'


def test_chain_fast_path_returns_the_same_event_and_lists_continue_down_the_chain():
    class Upper(BaseStage):
        def on_client(self, ev, s):
            return Event.from_data({"type": ev.type.upper()}) if ev.type.islower() else ev

    class Split(BaseStage):
        def on_client(self, ev, s):
            return [ev, Event.from_data({"type": "b"})] if ev.type == "a" else ev

    s = Session(id="x", model="m")
    ev = Event('{"type":"Z"}')
    assert Chain([BaseStage(), BaseStage()]).client(ev, s)[0] is ev
    out = Chain([Split(), Upper()]).client(Event('{"type":"a"}'), s)
    assert [e.type for e in out] == ["A", "B"]
    # server events run the chain in reverse
    order = []

    class Rec(BaseStage):
        def __init__(self, n):
            self.n = n

        def on_server(self, ev, s):
            order.append(self.n)
            return ev

    Chain([Rec(1), Rec(2), Rec(3)]).server(Event('{"type":"x"}'), s)
    assert order == [3, 2, 1]
