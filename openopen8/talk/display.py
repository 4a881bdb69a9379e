"""What the person (or script) sees: live captions, or one JSON line per
server event; and the end-of-run summary."""

from __future__ import annotations

import sys
from typing import TextIO

import orjson
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .conversation import Conversation

USER, ASSISTANT = ("you ▸ ", "bold cyan"), ("assistant ▸ ", "bold green")


class JsonLines:
    """Every server event, as received, one per line (for scripts)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def event(self, raw: str, etype: str, ev: dict) -> None:
        if "\n" in raw or "\r" in raw:
            raw = orjson.dumps(ev).decode()
        self.stream.write(raw + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        pass

    def user_text(self, text: str) -> None:
        pass

    def tool_result(self, name: str, result: str) -> None:
        pass

    def close(self) -> None:
        pass


class Captions:
    """Captions as they stream.  Several streams (the user's transcription,
    the assistant's speech) may interleave; each line says whose it is, and a
    stream interrupted by another carries on under a fresh label."""

    def __init__(self, console: Console) -> None:
        self.c = console
        self._open: str | None = None          # key of the line being written
        self._streamed: set[str] = set()      # keys that got deltas

    def _end_line(self) -> None:
        if self._open is not None:
            self.c.print()
            self._open = None

    def _stream(self, key: str, who: tuple[str, str], text: str) -> None:
        if self._open != key:
            self._end_line()
            self.c.print(Text(who[0], style=who[1]), end="")
            self._open = key
        self.c.print(Text(text), end="")
        self._streamed.add(key)

    def _whole(self, key: str, who: tuple[str, str], text: str) -> None:
        """A finished caption: print it unless its deltas already were."""
        if key in self._streamed:
            if self._open == key:
                self._end_line()
            return
        self._streamed.add(key)
        self._end_line()
        self.c.print(Text(who[0], style=who[1]) + Text(text))

    def note(self, text: str, style: str = "dim") -> None:
        self._end_line()
        self.c.print(Text(text, style=style))

    def user_text(self, text: str) -> None:
        self._end_line()
        self.c.print(Text(USER[0], style=USER[1]) + Text(text))

    def tool_result(self, name: str, result: str) -> None:
        self.note(f"  ↳ {name} → {result}", "yellow")

    def close(self) -> None:
        self._end_line()

    def event(self, raw: str, etype: str, ev: dict) -> None:
        item = str(ev.get("item_id") or "")
        if etype == "session.created":
            s = ev.get("session") or {}
            self.note(f"● connected: session {s.get('id', '?')} ({s.get('model', '?')})")
        elif etype == "input_audio_buffer.speech_started":
            self.note("· speech started")
        elif etype == "input_audio_buffer.speech_stopped":
            self.note("· speech stopped")
        elif etype == "conversation.item.input_audio_transcription.delta":
            self._stream("u" + item, USER, str(ev.get("delta") or ""))
        elif etype == "conversation.item.input_audio_transcription.completed":
            self._whole("u" + item, USER, str(ev.get("transcript") or ""))
        elif etype == "conversation.item.input_audio_transcription.failed":
            err = ev.get("error") or {}
            self.note(f"· (your speech could not be transcribed: {err.get('message', 'no reason given')})")
        elif etype in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            self._stream("a" + item, ASSISTANT, str(ev.get("delta") or ""))
        elif etype == "response.output_audio_transcript.done":
            self._whole("a" + item, ASSISTANT, str(ev.get("transcript") or ""))
        elif etype == "response.output_text.done":
            self._whole("a" + item, ASSISTANT, str(ev.get("text") or ""))
        elif etype == "response.function_call_arguments.done":
            self.note(f"⚙ {ev.get('name', '?')}({ev.get('arguments', '')})", "yellow")
        elif etype == "response.done":
            r = ev.get("response") or {}
            if r.get("status") not in (None, "completed"):
                reason = (r.get("status_details") or {}).get("reason")
                self.note(f"· response {r.get('status')}" + (f" ({reason})" if reason else ""))
        elif etype == "conversation.item.truncated":
            self.note(f"· reply cut at {ev.get('audio_end_ms', '?')} ms (you spoke over it)")


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


#: what each turn's latency is measured from, as the summary says it
TRIGGERS = {"speech stopped": "server's speech_stopped", "commit": "commit sent",
            "text": "text sent"}


def summary(conv: Conversation, console: Console) -> None:
    """Per response and per turn: how long until the first reply -- audio, or
    text in a text-only session.  A spoken turn gets two figures: from the end
    of the speech the client sent (what a listener waits) and from the
    server's ``speech_stopped``, which comes only after its VAD's silence window."""
    first = "first text" if conv.text_replies else "first audio"
    who = "reader" if conv.text_replies else "listener"
    console.print()
    console.print(Text("summary", style="bold"))
    if conv.responses:
        table = Table("response", "after", f"→ {first}", "reply audio", "status",
                      "tokens in/out", box=None, pad_edge=False)
        for i, r in enumerate(conv.responses.values(), 1):
            u = r.usage or {}
            status = r.status + (f" ({r.reason})" if r.reason else "")
            table.add_row(str(i), r.trigger or "—", _ms(r.latency(conv.text_replies)),
                          f"{conv.out_fmt.ms_of(r.audio_bytes) / 1000:.2f} s", Text(status),
                          Text(f"{u.get('input_tokens', '—')}/{u.get('output_tokens', '—')}"))
        console.print(Padding(table, (0, 0, 0, 2), expand=False))
    else:
        console.print("  no response")
    t = conv.usage_total()
    fmt = conv.out_fmt
    for n, turn in enumerate(conv.turns, 1):
        at = f"turn {n}: " if len(conv.turns) > 1 else ""
        if turn.speech_end_at is not None:
            console.print(f"  {at}end of speech (last sound sent) → {first}: "
                          f"{_ms(turn.heard_latency)}  (what a {who} waits)")
        label = TRIGGERS.get(turn.trigger, turn.trigger)
        console.print(f"  {at}{label} → {first}: {_ms(turn.latency)}"
                      + ("  (after the VAD's silence window)"
                         if turn.trigger == "speech stopped" else ""))
    if not conv.text_replies or conv.reply_audio:
        console.print(f"  reply audio: {conv.reply_seconds:.2f} s ({fmt.kind}, {fmt.rate} Hz)")
    console.print(f"  usage: input {t['input_tokens']} (text {t['input_text']}, audio "
                  f"{t['input_audio']}, cached {t['cached']}) · output {t['output_tokens']} "
                  f"(text {t['output_text']}, audio {t['output_audio']}) · total {t['total_tokens']}")
