"""Malformed and ill-typed client frames for the reliability run (``bench/edge.py``).

A seeded generator, so a run can be repeated frame for frame against another
version: ``FrameGen(seed).frame()`` returns ``(kind, payload, text)``, where
``text`` says whether the bytes go out as a text or a binary WebSocket frame.
Every text frame is UTF-8 except the deliberately invalid ones (kind
``bad_utf8``, which a gateway may answer with close 1007, as RFC 6455 says).

The frames come from two sources:

* fixed shapes that broke a gateway once or are classic parser traps
  (trailing commas, lone surrogates ``"\\ud800"``, ``1e400``, duplicate keys,
  nesting deeper than a parser's limit, non-object JSON, binary frames);
* mutations of valid client events (``session.update`` in both dialects,
  ``response.create``, ``conversation.item.create`` …): one field, chosen at
  random along the event's tree, replaced by a value of the wrong type or a
  value out of range.  Values JSON cannot carry from Python (``1e400``, bare
  ``NaN``) are spliced into the text through placeholders.

No frame is a ``session.close``: that ends a session on purpose, and the run
counts the sessions a gateway ends by itself.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

#: raw JSON tokens spliced in for placeholders ("\x00RAW<i>\x00")
RAW_TOKENS = ["1e400", "-1e400", "1" + "0" * 400, "NaN", "Infinity", "-0", "1E-400",
              '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', "0.1e1000000"]

JUNK: list[Any] = [None, True, False, 0, -1, 1, 2**63, -2**63 - 1, 1e308, -1e-308, 0.5, "",
                   "x", "\ud800", "\u0000", "🙂" * 3, "A" * 300, [], [None], [[]], {},
                   {"type": None}, {"type": 5}, {"": ""}, [{}], "audio/pcm", "pcm16",
                   "realtime", "none", -24000, 24000.5, "24000", 16000]

VALID: list[dict[str, Any]] = [
    {"type": "session.update", "session": {
        "type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"],
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                               "silence_duration_ms": 200},
                            "transcription": {"model": "whisper-1"},
                            "noise_reduction": {"type": "near_field"}},
                  "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy", "speed": 1.0}},
        "tools": [{"type": "function", "name": "f", "description": "d",
                   "parameters": {"type": "object", "properties": {}}}],
        "tool_choice": "auto", "max_output_tokens": 100}},
    {"type": "session.update", "session": {    # beta-shaped (flat)
        "modalities": ["audio", "text"], "instructions": "Hi.", "voice": "alloy",
        "input_audio_format": "pcm16", "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "threshold": 0.5}, "temperature": 0.8,
        "max_response_output_tokens": "inf"}},
    {"type": "response.create", "response": {
        "output_modalities": ["text"], "instructions": "Say hi.", "metadata": {"k": "v"},
        "conversation": "none", "max_output_tokens": 50,
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}},
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "hi"}]}]}},
    {"type": "response.create", "response": {"modalities": ["text"], "temperature": 0.7,
                                             "output_audio_format": "pcm16", "voice": "echo"}},
    {"type": "conversation.item.create", "previous_item_id": None, "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hello"},
                    {"type": "input_audio", "audio": "AAAAAA=="}]}},
    {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "{\"ok\":true}"}},
    {"type": "input_audio_buffer.append", "audio": "AAAAAAAAAAAAAAAA"},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
     "audio_end_ms": 100},
    {"type": "conversation.item.delete", "item_id": "item_1"},
    {"type": "conversation.item.retrieve", "item_id": "item_1"},
    {"type": "response.cancel", "response_id": "resp_1"},
    {"type": "output_audio_buffer.clear"},
]

#: kinds and their weights (out of the sum)
KINDS = {"mutated": 55, "invalid_json": 12, "surrogate": 6, "big_number": 6, "binary": 5,
         "unknown_type": 6, "non_object": 3, "deep": 1, "duplicate_keys": 2, "huge": 1,
         "bad_utf8": 0.5, "empty": 1}


class FrameGen:
    def __init__(self, seed: int, huge_max: int = 1 << 20) -> None:
        self.r = random.Random(seed)
        self.huge_max = huge_max
        self.kinds = list(KINDS)
        self.weights = [KINDS[k] for k in self.kinds]

    def frame(self) -> tuple[str, bytes, bool]:
        kind = self.r.choices(self.kinds, self.weights)[0]
        out = getattr(self, "_" + kind)()
        if isinstance(out, tuple):
            return kind, out[0], out[1]
        return kind, out, True

    # ---- helpers ------------------------------------------------------------------

    def _dump(self, obj: Any) -> bytes:
        """JSON text of ``obj`` with raw-token placeholders spliced in."""
        text = json.dumps(obj, separators=(",", ":"))
        while "\\u0000RAW" in text:
            start = text.index('"\\u0000RAW')
            end = text.index('\\u0000"', start + 10)
            i = int(text[start + 10:end])
            text = text[:start] + RAW_TOKENS[i] + text[end + 7:]
        # lone surrogates stay escaped (\ud800): valid UTF-8 on the wire, invalid Unicode
        return text.encode()

    def _raw(self) -> str:
        return f"\x00RAW{self.r.randrange(len(RAW_TOKENS))}\x00"

    def _junk(self) -> Any:
        r = self.r.random()
        if r < 0.25:
            return self._raw()
        if r < 0.3:
            return "B" * self.r.choice((1000, 70_000))
        return copy.deepcopy(self.r.choice(JUNK))   # the pool is never mutated

    def _valid(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.r.choice(VALID)))   # a deep copy

    # ---- kinds --------------------------------------------------------------------

    def _mutated(self) -> bytes:
        ev = self._valid()
        for _ in range(self.r.choice((1, 1, 1, 2, 3))):
            self._mutate(ev)
        ev.pop("event_id", None)
        if self.r.random() < 0.5:
            ev["event_id"] = f"fz_{self.r.getrandbits(32):08x}"
        return self._dump(ev)

    def _mutate(self, ev: dict[str, Any]) -> None:
        """Replace (or delete, or add) one node below the top level."""
        paths: list[tuple[Any, Any]] = []

        def walk(node: Any) -> None:
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in list(items):
                if node is ev and k == "type":
                    continue
                paths.append((node, k))
                if isinstance(v, (dict, list)):
                    walk(v)
        walk(ev)
        if not paths:
            ev["x"] = self._junk()
            return
        parent, key = self.r.choice(paths)
        roll = self.r.random()
        if roll < 0.8:
            parent[key] = self._junk()
        elif roll < 0.9 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[f"unknown_{self.r.randrange(100)}"] = self._junk()
        else:
            parent.append(self._junk())

    def _invalid_json(self) -> bytes:
        t = self.r.choice(("session.update", "response.create", "conversation.item.create",
                           "input_audio_buffer.append"))
        good = self._dump(self._valid() | {"type": t}).decode()
        return self.r.choice((
            f'{{"type":"{t}",}}',
            f'{{"type":"{t}","response":{{"instructions":"x",}}}}',
            good[:-1] + ",}",
            good[: self.r.randrange(1, max(2, len(good)))],            # truncated
            good + "}",
            good.replace('"', "'"),
            f'{{"type":"{t}" "session":{{}}}}',
            f'{{"type":"{t}","session":{{"type":"realtime"}}}}garbage',
            f'{{type:"{t}"}}',
            f'{{"type":"{t}","x":01}}',
            f'{{"type":"{t}","x":"\\x41"}}',
            f'{{"type":"{t}","x":"tab\there"}}',
            "{" * self.r.randrange(1, 50),
            "]",
        )).encode()

    def _surrogate(self) -> bytes:
        s = self.r.choice(('"\\ud800"', '"a\\udfffb"', '"\\ud800\\ud800"', '"\\udbff"'))
        return self.r.choice((
            f'{{"type":{s}}}',
            f'{{"type":"session.update","session":{{"type":"realtime","instructions":{s}}}}}',
            f'{{"type":"response.create","response":{{"instructions":{s}}}}}',
            f'{{"type":"response.create","event_id":{s}}}',
            '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
            f'"content":[{{"type":"input_text","text":{s}}}]}}}}',
            f'{{"type":"input_audio_buffer.append","audio":{s}}}',
            f'{{"type":"session.update","session":{{"audio":{{"input":{{"format":'
            f'{{"type":{s}}}}}}}}}}}',
            f'{{{s}:1,"type":"response.create"}}',
        )).encode()

    def _big_number(self) -> bytes:
        n = self.r.choice(("1e400", "-1e400", "1" + "0" * 400, "1e-400", "NaN", "-Infinity",
                           "9223372036854775808", "-9223372036854775809", "1.5", "0", "-24000"))
        return self.r.choice((
            f'{{"type":"session.update","session":{{"type":"realtime","audio":{{"input":'
            f'{{"format":{{"type":"audio/pcm","rate":{n}}}}}}}}}}}',
            f'{{"type":"session.update","session":{{"type":"realtime","audio":{{"output":'
            f'{{"format":{{"type":"audio/pcm","rate":{n}}},"speed":{n}}}}}}}}}',
            f'{{"type":"session.update","session":{{"temperature":{n},'
            f'"max_response_output_tokens":{n}}}}}',
            f'{{"type":"response.create","response":{{"max_output_tokens":{n}}}}}',
            f'{{"type":"conversation.item.truncate","item_id":"i","content_index":{n},'
            f'"audio_end_ms":{n}}}',
            f'{{"type":"session.update","session":{{"type":"realtime","audio":{{"input":'
            f'{{"turn_detection":{{"type":"server_vad","threshold":{n},'
            f'"silence_duration_ms":{n}}}}}}}}}}}',
        )).encode()

    def _binary(self) -> tuple[bytes, bool]:
        if self.r.random() < 0.3:
            return self._dump(self._valid()), False            # a valid event, as binary
        return self.r.randbytes(self.r.choice((0, 1, 16, 960, 5000))), False

    def _unknown_type(self) -> bytes:
        t = self.r.choice(("", " ", "session", "response.create ", "RESPONSE.CREATE", "bench.x",
                           "x" * 10_000, "session.updated", "error", "response.done", "💥",
                           "session.create", "transcription_session.update"))
        if self.r.random() < 0.3:
            return self._dump({"type": self._junk(), "session": {}})
        return self._dump({"type": t, "event_id": "fz_unknown"})

    def _non_object(self) -> bytes:
        return self.r.choice((b"[]", b'["session.update"]', b'"response.create"', b"42", b"null",
                              b"true", b"{}", b'{"event_id":"x"}', b'[{"type":"response.create"}]'))

    def _deep(self) -> bytes:
        d = self.r.choice((200, 1100, 5000))
        if self.r.random() < 0.5:
            return b"[" * d + b"]" * d
        return (b'{"type":"session.update","session":' + b'{"a":' * d + b"1" + b"}" * d + b"}")

    def _duplicate_keys(self) -> bytes:
        return self.r.choice((
            b'{"type":"session.update","type":"response.create"}',
            b'{"type":"response.create","response":{},"response":[]}',
            b'{"type":"session.update","session":{"type":"realtime","type":5}}',
        ))

    def _huge(self) -> bytes:
        n = self.r.randrange(16 * 1024, self.huge_max)
        where = self.r.choice(("instructions", "event_id", "audio", "text"))
        if where == "instructions":
            return self._dump({"type": "session.update", "session": {"type": "realtime",
                                                                     "instructions": "i" * n}})
        if where == "event_id":
            return self._dump({"type": "response.cancel", "event_id": "e" * n})
        if where == "audio":
            return self._dump({"type": "input_audio_buffer.append", "audio": "!" * n})
        return self._dump({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "t" * n}]}})

    def _bad_utf8(self) -> bytes:
        return self.r.choice((b'{"type":"response.create","x":"\xff"}', b"\xc3\x28",
                              b'{"type":"\xed\xa0\x80"}'))

    def _empty(self) -> bytes:
        return self.r.choice((b"", b" ", b"\n", b"\t\r\n "))
