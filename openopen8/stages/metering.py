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

The upstream's events may have any shape: the stage reads only values of
the types it expects, and records only rows the ledger can hold (a row the
database refuses would hold up every row written with it), see
:func:`_storable`; an event it cannot read goes on untouched.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable, Protocol

from ..billing import PriceTable, Tokens, cost_nanos, parse_usage
from ..events import Event, new_event_id
from ..relay.stage import Forward, Session
from ..store.base import SessionEnd, UsageRow
from .shapes import server_data

log = logging.getLogger("openopen8.metering")

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


#: the audio fields as compact JSON and as Python's json.dumps writes them
_AUDIO_KEY, _AUDIO_SPACED = b'"audio":"', b'"audio": "'
_DELTA_KEY, _DELTA_SPACED = b'"delta":"', b'"delta": "'


def b64_len(raw: str, field: str) -> int:
    """Length of the string in top-level ``field`` (base64 audio) of an
    event's wire text, without parsing it: a few ``str.find`` calls,
    whatever the JSON spacing."""
    # compact JSON (OpenAI, the JS SDK): an unescaped '"field":"' can only
    # be a key; the fields before the audio are short
    key = f'"{field}":"'
    i = raw.find(key)
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
        ok = isinstance(rate, int) and not isinstance(rate, bool) and rate > 0
        return 2 * rate if ok else PCM24_BPS
    return _GA_BPS.get(t) if isinstance(t, str) else None


def _beta_bps(name: Any) -> int | None:
    return _BETA_BPS.get(name) if isinstance(name, str) else None


#: the ledger's columns: token counts are INTEGER, cost BIGINT, ref 200 characters
_MAX_TOKENS, _MAX_NANOS, _MAX_REF = 2**31 - 1, 2**63 - 1, 200


def _ref(*parts: Any) -> str:
    """A ledger ref from upstream ids (strings or numbers; anything else is
    ``?``), as long as the column allows: a longer one is a digest of it
    (cut to the column, two refs could become one and a row be lost)."""
    ref = "/".join(p if isinstance(p, str) else
                   str(p) if isinstance(p, (int, float)) or p is None else "?" for p in parts)
    if len(ref) <= _MAX_REF:
        return ref
    return "sha256:" + hashlib.sha256(ref.encode("utf-8", "replace")).hexdigest()


def _storable(tokens: Tokens, cost: int) -> bool:
    return (0 <= cost <= _MAX_NANOS and tokens.seconds < 1e12
            and max(tokens.input_text, tokens.input_audio, tokens.input_image,
                    tokens.output_text, tokens.output_audio) <= _MAX_TOKENS)


class MeteringStage:
    name = "metering"
    # slots: its counters are touched on every audio frame
    __slots__ = ("sink", "prices", "token_id", "in_bps", "out_bps", "transcriber",
                 "_in_chars", "_in_mark", "_out_chars", "_out_mark", "_in_done", "_out_done",
                 "inflight", "cancelled", "_flight_mark", "flight_text_deltas",
                 "last_input_nanos", "_seen", "_channel", "_local", "_price_per_token")

    def __init__(self, sink: Sink, prices: PriceTable, token_id: int) -> None:
        self.sink = sink
        self.prices = prices
        self.token_id = token_id
        self.in_bps = PCM24_BPS
        self.out_bps = PCM24_BPS
        self.transcriber: str | None = None
        # audio is counted in base64 characters (integers: the hot path does
        # no float work) and turned into seconds at the rate in force:
        # ``_*_done`` holds the seconds before the last rate change, when the
        # character count stood at ``_*_mark``
        self._in_chars = self._in_mark = 0
        self._out_chars = self._out_mark = 0
        self._in_done = self._out_done = 0.0
        #: responses created and not yet done, and the ones we asked to cancel
        self.inflight: set[str] = set()
        self.cancelled: set[str] = set()
        #: output so far of what is in flight (for estimates)
        self._flight_mark = 0              # output characters when nothing was in flight
        self.flight_text_deltas = 0
        #: the input part of the last settled response: the next one re-reads that context
        self.last_input_nanos = 0
        self._seen: set[tuple[str, str]] = set()
        self._channel: str | None = None
        #: the built-in engine serves the session: its price, whatever names the usage carries
        self._local = False
        self._price_per_token: tuple[float, float] = (0.0, 0.0)   # audio out, text out (nanos)

    # ---- hooks --------------------------------------------------------------------

    def on_open(self, s: Session) -> None:
        self._channel = getattr(s.channel, "name", None)
        self._local = getattr(s.channel, "type", None) == "local"
        p, _ = self.prices.lookup(s.model, local=self._local)
        self._price_per_token = (float(p.audio_out) * 1000, float(p.text_out) * 1000)
        self.sink.opened(s.id, self._channel)

    def on_client(self, ev: Event, s: Session) -> Forward:
        if ev.type in _APPENDS:
            # an event a stage made is serialised here, once: it is sent as this text
            self._in_chars += b64_len(ev.text, "audio")
        return ev

    def on_server(self, ev: Event, s: Session) -> Forward:
        t = ev.type
        if t in _AUDIO_DELTAS:
            self._out_chars += b64_len(ev.text, "delta")
        elif t in _TEXT_DELTAS:
            self.flight_text_deltas += 1
        elif t == "response.created":
            d = server_data(ev)
            resp = d.get("response") if d is not None else None
            rid = resp.get("id") if isinstance(resp, dict) else None
            if isinstance(rid, str):
                self.inflight.add(rid)
        elif t == "response.done":
            self._response_done(ev, s)
        elif t == TRANSCRIPTION_DONE:
            self._transcription_done(ev, s)
        elif t in _SESSIONS:
            d = server_data(ev)
            if d is not None:
                self._session(d.get("session"))
        return ev

    def sees_client(self, t: str | None, s: Session) -> bool:
        return t in _APPENDS

    def sees_server(self, t: str | None, s: Session) -> bool:
        return t in _SERVER_SEEN

    # the hot events are only counted: the relay may pass their frames on as
    # they came (lanes), showing the watchers the bytes

    def watch_client(self, t: str, s: Session) -> Callable[[bytes], None] | None:
        return self._count_append if t in _APPENDS else None

    def watch_server(self, t: str, s: Session) -> Callable[[bytes], None] | None:
        if t in _AUDIO_DELTAS:
            return self._count_audio_delta
        return self._count_text_delta if t in _TEXT_DELTAS else None

    def _count_append(self, data: bytes) -> None:
        # b64_len, inlined for the two usual spellings
        i = data.find(_AUDIO_KEY)
        if i >= 0:
            i += 9
        else:
            i = data.find(_AUDIO_SPACED)
            if i < 0:
                self._in_chars += b64_len(data.decode(), "audio")
                return
            i += 10
        j = data.find(b'"', i)
        if j > 0:
            self._in_chars += j - i

    def _count_audio_delta(self, data: bytes) -> None:
        # the same for deltas, spelled out: a shared helper is one more call per frame
        i = data.find(_DELTA_KEY)
        if i >= 0:
            i += 9
        else:
            i = data.find(_DELTA_SPACED)
            if i < 0:
                self._out_chars += b64_len(data.decode(), "delta")
                return
            i += 10
        j = data.find(b'"', i)
        if j > 0:
            self._out_chars += j - i

    def _count_text_delta(self, data: bytes) -> None:
        self.flight_text_deltas += 1   # about one token each

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

    # ---- audio seconds ----------------------------------------------------------------

    @property
    def audio_in_seconds(self) -> float:
        return self._in_done + (self._in_chars - self._in_mark) * 0.75 / self.in_bps

    @property
    def audio_out_seconds(self) -> float:
        return self._out_done + (self._out_chars - self._out_mark) * 0.75 / self.out_bps

    @property
    def flight_audio_bytes(self) -> float:
        """Output audio (bytes) of the responses in flight so far."""
        return (self._out_chars - self._flight_mark) * 0.75

    def _rates(self, in_bps: int, out_bps: int) -> None:
        if in_bps != self.in_bps:
            self._in_done, self._in_mark = self.audio_in_seconds, self._in_chars
            self.in_bps = in_bps
        if out_bps != self.out_bps:
            self._out_done, self._out_mark = self.audio_out_seconds, self._out_chars
            self.out_bps = out_bps

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
            inp, out = audio.get("input"), audio.get("output")
            inp = inp if isinstance(inp, dict) else {}
            out = out if isinstance(out, dict) else {}
            self._rates(_ga_bps(inp.get("format")) or self.in_bps,
                        _ga_bps(out.get("format")) or self.out_bps)
            tr = inp.get("transcription") if "transcription" in inp else False
        else:                                            # beta
            self._rates(_beta_bps(sess.get("input_audio_format")) or self.in_bps,
                        _beta_bps(sess.get("output_audio_format")) or self.out_bps)
            tr = sess.get("input_audio_transcription", False)
        if tr is not False:
            model = tr.get("model") if isinstance(tr, dict) else None
            self.transcriber = model if isinstance(model, str) and model else None

    def _response_done(self, ev: Event, s: Session) -> None:
        d = server_data(ev)
        resp = d.get("response") if d is not None else None
        if not isinstance(resp, dict):
            return
        rid = resp.get("id")
        if isinstance(rid, str):
            self.inflight.discard(rid)
            rid = _ref(rid)
        else:
            eid = d.get("event_id")
            rid = _ref("event:" + (eid if isinstance(eid, str) else _ref(eid)))
        if not self.inflight:
            self._flight_mark = self._out_chars
            self.flight_text_deltas = 0
        tokens = parse_usage(resp.get("usage"))
        if tokens is None or not self._first("response", rid):
            return
        cost, fallback = self._cost(s.model, tokens, s, "response " + rid)
        if cost is None:
            return
        price, _ = self.prices.lookup(s.model, local=self._local)
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
        d = server_data(ev)
        tokens = parse_usage(d.get("usage")) if d is not None else None
        if tokens is None:
            return
        ref = _ref(d.get("item_id"), d.get("content_index", 0))
        if not self._first("transcription", ref):
            return
        # the model that ran, if the upstream names it (the local engine does), else the configured one
        ran = d["usage"].get("model")
        model = ran if isinstance(ran, str) and ran else self.transcriber or UNKNOWN_TRANSCRIBER
        cost, fallback = self._cost(model, tokens, s, "transcription " + ref)
        if cost is None:
            return
        self.sink.record(UsageRow(
            session_id=s.id, kind="transcription", ref=ref, token_id=self.token_id,
            model=model, tokens=tokens, cost_nanos=cost, fallback=fallback,
            channel=self._channel, status="completed"))

    def _cost(self, model: str, tokens: Tokens, s: Session, what: str) -> tuple[Any, Any]:
        """The cost of ``tokens``, or (None, None) -- logged -- when the
        upstream reported usage no ledger row can hold."""
        try:
            cost, fallback = self.prices.cost(model, tokens, local=self._local)
        except (ArithmeticError, ValueError):   # decimal.InvalidOperation: 1e308 seconds
            cost = -1
        if _storable(tokens, cost):
            return cost, fallback
        log.warning("session %s: the upstream reported usage out of range for %s; "
                    "not recorded: %s", s.id, what, tokens)
        return None, None

    def _first(self, kind: str, ref: str) -> bool:
        key = (kind, ref)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True
