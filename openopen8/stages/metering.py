"""Metering: every usage the upstream reports becomes a priced ledger row.

The stage sits last before the upstream's edge (only a beta upstream's
dialect stage lies beyond), so it sees what the upstream bills: GA events
and audio in the upstream's format.  It knows the beta names too, so it is
right wherever it stands.  It is cheap on the hot path: the
peeked ``ev.type`` picks the few events it reads, audio is never decoded
(seconds come from the length of the base64 text, found with ``str.find``)
and only ``response.created``/``response.done``, ``session.*`` and the
input transcription's ``completed`` are parsed -- once per response or per
configuration change, never per delta.

Rows go to a *sink* (the :class:`~openopen8.ledger.Ledger`) through
synchronous calls; the stage does no I/O.  A row is keyed by (session, kind,
ref) and a repeated ``response.done`` is counted once, here and again by the
database's unique key.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..billing import PriceTable, Tokens, cost_nanos, parse_usage
from ..events import Event, new_event_id
from ..relay.stage import Forward, Session
from ..store.base import SessionEnd, UsageRow

#: bytes of audio per second, by GA format type and beta format name
_GA_BPS = {"audio/pcmu": 8000, "audio/pcma": 8000}
_BETA_BPS = {"pcm16": 48000, "g711_ulaw": 8000, "g711_alaw": 8000}
PCM24_BPS = 48000

#: output audio: one token per 50 ms (OpenAI's realtime models), used for estimates only
OUTPUT_AUDIO_TOKENS_PER_SECOND = 20

_APPENDS = frozenset({"input_audio_buffer.append", "session.input_audio_buffer.append"})
_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
#: text and transcript deltas carry about one token each
_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.text.delta",
                          "response.output_audio_transcript.delta",
                          "response.audio_transcript.delta"})
_SESSIONS = frozenset({"session.created", "session.updated", "transcription_session.created",
                       "transcription_session.updated"})
TRANSCRIPTION_DONE = "conversation.item.input_audio_transcription.completed"
UNKNOWN_TRANSCRIBER = "unknown-transcription-model"
#: every server event type on_server acts on (the chain skips the stage for others)
_SERVER_SEEN = _AUDIO_DELTAS | _TEXT_DELTAS | _SESSIONS | {
    "response.created", "response.done", TRANSCRIPTION_DONE}


class Sink(Protocol):
    def record(self, row: UsageRow) -> None: ...
    def opened(self, session_id: str, channel: str | None) -> None: ...
    def closed(self, end: SessionEnd, token_id: int) -> None: ...


_COMPACT_KEYS = {"audio": '"audio":"', "delta": '"delta":"'}


def b64_len(ev: Event, field: str) -> int:
    """Length of the string in top-level ``field`` (base64 audio) without
    parsing the event: a few ``str.find`` calls, whatever the JSON spacing."""
    raw = ev.raw
    if raw is None:
        v = ev.data.get(field)
        return len(v) if isinstance(v, str) else 0
    # compact JSON (every SDK and OpenAI itself): one search from the end, where
    # the audio field usually is; an unescaped '"field":"' can only be a key
    key = _COMPACT_KEYS.get(field) or f'"{field}":"'
    i = raw.rfind(key)
    if i >= 0:
        i += len(key)
        j = raw.find('"', i)
        return j - i if j >= 0 else 0
    key = f'"{field}"'
    start = 0
    while True:
        i = raw.find(key, start)
        if i < 0:
            return 0
        k = i + len(key)
        while raw[k:k + 1] in (" ", "\n", "\r", "\t"):
            k += 1
        if raw[k:k + 1] == ":":                 # a key, not a value that happens to match
            q = raw.find('"', k + 1)
            j = raw.find('"', q + 1) if q >= 0 else -1
            return j - q - 1 if j > q else 0
        start = k


def _ga_bps(fmt: Any) -> int | None:
    if not isinstance(fmt, dict):
        return None
    t = fmt.get("type")
    if t == "audio/pcm":
        rate = fmt.get("rate")
        return 2 * rate if isinstance(rate, int) and rate > 0 else PCM24_BPS
    return _GA_BPS.get(t)


class MeteringStage:
    name = "metering"

    def __init__(self, sink: Sink, prices: PriceTable, token_id: int) -> None:
        self.sink = sink
        self.prices = prices
        self.token_id = token_id
        self.in_bps = PCM24_BPS
        self.out_bps = PCM24_BPS
        self.transcriber: str | None = None
        self.audio_in_seconds = 0.0
        self.audio_out_seconds = 0.0
        #: responses created and not yet done, and the ones we asked to cancel
        self.inflight: set[str] = set()
        self.cancelled: set[str] = set()
        #: output so far of what is in flight (for estimates)
        self.flight_audio_bytes = 0
        self.flight_text_deltas = 0
        #: the input part of the last settled response: the next one re-reads that context
        self.last_input_nanos = 0
        self._seen: set[tuple[str, str]] = set()
        self._channel: str | None = None
        self._price_per_token: tuple[float, float] = (0.0, 0.0)   # audio out, text out (nanos)

    # ---- hooks --------------------------------------------------------------------

    def on_open(self, s: Session) -> None:
        self._channel = getattr(s.channel, "name", None)
        p, _ = self.prices.lookup(s.model)
        self._price_per_token = (float(p.audio_out) * 1000, float(p.text_out) * 1000)
        self.sink.opened(s.id, self._channel)

    def on_client(self, ev: Event, s: Session) -> Forward:
        if ev.type in _APPENDS:
            self.audio_in_seconds += b64_len(ev, "audio") * 0.75 / self.in_bps
        return ev

    def on_server(self, ev: Event, s: Session) -> Forward:
        t = ev.type
        if t in _AUDIO_DELTAS:
            n = b64_len(ev, "delta") * 0.75
            self.audio_out_seconds += n / self.out_bps
            self.flight_audio_bytes += n
        elif t in _TEXT_DELTAS:
            self.flight_text_deltas += 1
        elif t == "response.created":
            rid = (ev.data.get("response") or {}).get("id")
            if isinstance(rid, str):
                self.inflight.add(rid)
        elif t == "response.done":
            self._response_done(ev, s)
        elif t == TRANSCRIPTION_DONE:
            self._transcription_done(ev, s)
        elif t in _SESSIONS:
            self._session(ev.data.get("session"))
        return ev

    def sees_client(self, t: str | None, s: Session) -> bool:
        return t in _APPENDS

    def sees_server(self, t: str | None, s: Session) -> bool:
        return t in _SERVER_SEEN

    def on_client_gone(self, s: Session) -> None:
        self.cancel_inflight(s)

    def awaiting_upstream(self, s: Session) -> bool:
        return bool(self.inflight)

    def on_close(self, s: Session) -> None:
        self.sink.closed(SessionEnd(
            id=s.id, closed_by=s.closed_by or "error", close_code=s.close_code,
            channel=self._channel, events_in=s.events_in, events_out=s.events_out,
            bytes_in=s.bytes_in, bytes_out=s.bytes_out,
            audio_in_seconds=round(self.audio_in_seconds, 3),
            audio_out_seconds=round(self.audio_out_seconds, 3)), self.token_id)

    # ---- actions and estimates --------------------------------------------------------

    def cancel_inflight(self, s: Session) -> bool:
        """Ask the upstream to cancel every response in flight (once each);
        True if there was one."""
        for rid in sorted(self.inflight - self.cancelled):
            self.cancelled.add(rid)
            s.inject(Event.from_data({"type": "response.cancel", "event_id": new_event_id(),
                                      "response_id": rid}))
        return bool(self.inflight)

    def estimate_nanos(self) -> int:
        """What the responses in flight will cost at least: the context the
        last response read, plus the output streamed so far."""
        if not self.inflight:
            return 0
        audio_rate, text_rate = self._price_per_token
        out_tokens = self.flight_audio_bytes / self.out_bps * OUTPUT_AUDIO_TOKENS_PER_SECOND
        return self.last_input_nanos + int(out_tokens * audio_rate + self.flight_text_deltas * text_rate)

    # ---- the events we read ------------------------------------------------------------

    def _session(self, sess: Any) -> None:
        if not isinstance(sess, dict):
            return
        audio = sess.get("audio")
        if isinstance(audio, dict):                      # GA
            inp, out = audio.get("input") or {}, audio.get("output") or {}
            self.in_bps = _ga_bps(inp.get("format")) or self.in_bps
            self.out_bps = _ga_bps(out.get("format")) or self.out_bps
            tr = inp.get("transcription") if "transcription" in inp else False
        else:                                            # beta
            self.in_bps = _BETA_BPS.get(sess.get("input_audio_format"), self.in_bps)
            self.out_bps = _BETA_BPS.get(sess.get("output_audio_format"), self.out_bps)
            tr = sess.get("input_audio_transcription", False)
        if tr is not False:
            model = tr.get("model") if isinstance(tr, dict) else None
            self.transcriber = model if isinstance(model, str) and model else None

    def _response_done(self, ev: Event, s: Session) -> None:
        resp = ev.data.get("response")
        if not isinstance(resp, dict):
            return
        rid = resp.get("id")
        if isinstance(rid, str):
            self.inflight.discard(rid)
        else:
            rid = "event:" + str(ev.data.get("event_id"))
        if not self.inflight:
            self.flight_audio_bytes = self.flight_text_deltas = 0
        tokens = parse_usage(resp.get("usage"))
        if tokens is None or not self._first("response", rid):
            return
        cost, fallback = self.prices.cost(s.model, tokens)
        price, _ = self.prices.lookup(s.model)
        self.last_input_nanos = cost_nanos(Tokens(
            input_text=tokens.input_text, input_audio=tokens.input_audio,
            input_image=tokens.input_image, cached_text=tokens.cached_text,
            cached_audio=tokens.cached_audio, cached_image=tokens.cached_image), price)
        status = resp.get("status")
        self.sink.record(UsageRow(
            session_id=s.id, kind="response", ref=rid, token_id=self.token_id, model=s.model,
            tokens=tokens, cost_nanos=cost, fallback=fallback, channel=self._channel,
            status=status if isinstance(status, str) else None))

    def _transcription_done(self, ev: Event, s: Session) -> None:
        d = ev.data
        tokens = parse_usage(d.get("usage"))
        if tokens is None:
            return
        ref = f"{d.get('item_id')}/{d.get('content_index', 0)}"
        if not self._first("transcription", ref):
            return
        model = self.transcriber or UNKNOWN_TRANSCRIBER
        cost, fallback = self.prices.cost(model, tokens)
        self.sink.record(UsageRow(
            session_id=s.id, kind="transcription", ref=ref, token_id=self.token_id,
            model=model, tokens=tokens, cost_nanos=cost, fallback=fallback,
            channel=self._channel, status="completed"))

    def _first(self, kind: str, ref: str) -> bool:
        key = (kind, ref)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True
