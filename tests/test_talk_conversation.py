"""When is a conversation done?  The talk client's state, fed event lists."""

from __future__ import annotations

import base64

import pytest

from openopen8.talk.conversation import Conversation
from openopen8.talk.options import UsageError, load_tools, parse_tool_results, realtime_url
from openopen8.talk.wire import canonical

AUDIO = base64.b64encode(b"\x00\x01" * 2400).decode()  # 100 ms at 24 kHz


def feed(conv: Conversation, events: list[dict], t0: float = 0.0) -> None:
    for i, ev in enumerate(events):
        conv.on_event(canonical(ev["type"]), ev, t0 + i * 0.01)


def turn(rid: str, status: str = "completed", output: list | None = None, audio: bool = True) -> list[dict]:
    evs = [{"type": "response.created", "response": {"id": rid}}]
    if audio:
        evs.append({"type": "response.output_audio.delta", "response_id": rid, "delta": AUDIO})
    evs.append({"type": "response.done", "response": {
        "id": rid, "status": status, "output": output or [],
        "status_details": {"type": status, "reason": "turn_detected"} if status == "cancelled" else None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}})
    return evs


SPEECH = [{"type": "input_audio_buffer.speech_started"}, {"type": "input_audio_buffer.speech_stopped"},
          {"type": "input_audio_buffer.committed", "item_id": "u1"}]


def test_barge_in_is_not_the_end():
    conv = Conversation()
    feed(conv, SPEECH + turn("r1")[:2])
    assert not conv.settled()  # a response is running
    # the user speaks again: r1 is cancelled, a new commit wants its own reply
    feed(conv, [{"type": "input_audio_buffer.speech_started"}])
    feed(conv, [turn("r1", "cancelled")[-1]])
    assert not conv.settled()  # speech in progress
    feed(conv, SPEECH[1:])
    assert not conv.settled()  # committed, no response yet
    feed(conv, turn("r2"))
    assert conv.settled()
    assert [r.status for r in conv.responses.values()] == ["cancelled", "completed"]
    assert conv.usage_total()["total_tokens"] == 30
    assert conv.reply_seconds == pytest.approx(0.2)


def test_a_requested_response_is_waited_for():
    conv = Conversation()
    conv.mark("text", 0.0)
    conv.expect_response()
    assert not conv.settled()
    feed(conv, turn("r1"), t0=0.25)
    assert conv.settled()
    assert conv.turns[0].latency == pytest.approx(0.26)
    r = conv.responses["r1"]
    assert r.trigger == "text" and r.latency() == pytest.approx(0.26)


def test_a_spoken_turn_is_timed_from_the_speech_sent_and_from_speech_stopped():
    conv = Conversation()
    conv.speech_ended(1.00)                      # the client sent the speech's last frame
    feed(conv, SPEECH, t0=1.40)                  # speech_stopped at 1.41, a silence window later
    feed(conv, turn("r1"), t0=1.60)              # first audio at 1.61
    [t] = conv.turns
    assert t.latency == pytest.approx(0.20) and t.heard_latency == pytest.approx(0.61)
    # the next turn's speech_stopped does not reuse an end already claimed
    feed(conv, SPEECH[1:] + turn("r2"), t0=3.0)
    assert conv.turns[1].speech_end_at is None and conv.turns[1].heard_latency is None


def test_text_replies_are_timed_to_the_first_text():
    conv = Conversation()
    conv.text_replies = True
    conv.mark("text", 0.0)
    conv.expect_response()
    feed(conv, [{"type": "response.created", "response": {"id": "r1"}},
                {"type": "response.output_text.delta", "response_id": "r1", "delta": "Hi"},
                {"type": "response.done", "response": {"id": "r1", "status": "completed"}}],
         t0=0.1)
    assert conv.turns[0].latency == pytest.approx(0.11)
    r = conv.responses["r1"]
    assert r.latency(text_replies=True) == pytest.approx(0.11) and r.latency() is None


def test_function_calls_wait_for_response_done_and_cancelled_ones_are_dropped():
    call = {"type": "function_call", "status": "completed", "call_id": "c1", "name": "f",
            "arguments": "{}", "id": "i1"}
    conv = Conversation()
    conv.expect_response()
    feed(conv, turn("r1", audio=False)[:1] + [
        {"type": "response.output_item.done", "response_id": "r1", "item": call}])
    assert conv.calls_to_answer() == []  # not before response.done
    feed(conv, turn("r1", output=[call], audio=False)[-1:])
    calls = conv.calls_to_answer()
    assert [(c.call_id, c.name) for c in calls] == [("c1", "f")]  # once, from either event
    assert not conv.settled()
    calls[0].answered = True
    assert conv.settled()
    conv2 = Conversation()
    feed(conv2, turn("r1", "cancelled", output=[call], audio=False)[:1]
         + [{"type": "response.output_item.done", "response_id": "r1", "item": call}]
         + turn("r1", "cancelled", output=[call], audio=False)[-1:])
    assert conv2.calls_to_answer() == []


def test_beta_names_count_the_same():
    conv = Conversation()
    conv.mark("commit", 0.0)
    feed(conv, [{"type": "response.created", "response": {"id": "r"}},
                {"type": "response.audio.delta", "response_id": "r", "delta": AUDIO},
                {"type": "response.audio_transcript.delta", "response_id": "r", "delta": "hi"},
                {"type": "response.done", "response": {"id": "r", "status": "completed"}}])
    assert conv.responses["r"].audio_bytes == 4800 and conv.settled()


@pytest.mark.parametrize("url, want", [
    ("ws://127.0.0.1:8000", "ws://127.0.0.1:8000/v1/realtime?model=m"),
    ("http://gw:80/", "ws://gw:80/v1/realtime?model=m"),
    ("https://gw/v1", "wss://gw/v1/realtime?model=m"),
    ("127.0.0.1:8000", "ws://127.0.0.1:8000/v1/realtime?model=m"),
    ("ws://gw/openai/realtime?api-version=x&model=old", "ws://gw/openai/realtime?api-version=x&model=m"),
])
def test_realtime_url(url, want):
    assert realtime_url(url, "m") == want


def test_tools_and_results(tmp_path):
    f = tmp_path / "tools.json"
    f.write_text('[{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},'
                 ' {"name": "b"}]')
    tools = load_tools(f)
    assert tools == [{"type": "function", "name": "a", "parameters": {"type": "object"}},
                     {"type": "function", "name": "b", "parameters": {"type": "object", "properties": {}}}]
    assert parse_tool_results(['a={"x": 1}', "b=\"ok\""]) == {"a": '{"x": 1}', "b": '"ok"'}
    with pytest.raises(UsageError, match="not JSON"):
        parse_tool_results(["a=not json"])
    f.write_text('{"nope": 1}')
    with pytest.raises(UsageError, match="no function name"):
        load_tools(f)
