"""The audio stage: the client's audio format on one side, the upstream's on
the other.

It sits right after the client-edge dialect stage, so it only sees GA.  The
client declares its formats in GA ``audio.input.format`` /
``audio.output.format`` (a beta client's ``input_audio_format`` plus
``input_audio_sample_rate`` arrive here already translated), or with rate
hints the web layer read from the URL (``s.facts["input_rate"]`` /
``["output_rate"]``).  For each direction the stage picks the format the
upstream gets:

* the client's own format when the upstream accepts it natively (OpenAI:
  ``audio/pcm`` 24 kHz, ``audio/pcmu``, ``audio/pcma``) -- G.711 from a phone
  bridge is passed through untouched, both ways;
* otherwise ``audio/pcm`` 24 kHz, converted with a streaming resampler that
  keeps its state across chunks.

It rewrites ``session.update`` so the upstream is asked for that format,
converts ``input_audio_buffer.append`` and ``response.output_audio.delta``
audio, and rewrites ``session.created`` / ``session.updated`` so the client
sees the formats it asked for.  Conversion preserves duration to the sample
over each stretch of audio (the resampler is flushed before
``input_audio_buffer.commit`` / ``clear`` and at ``response.output_audio.done``),
so the time fields (``audio_start_ms``, ``audio_end_ms``, truncation
``audio_end_ms``) mean the same on both sides and pass unchanged.

When client and upstream formats match there is no conversion work at all:
an append or a delta costs a dict lookup and an attribute check.

Events may carry any JSON.  A format the stage cannot use is answered with
``invalid_value`` naming the field in the client's dialect; ids must be
strings to key a conversion stream; anything else it does not understand
goes on as it came, and :mod:`.shapes` covers the rest (two ``type`` keys,
nesting too deep to write, an upstream's text that is not JSON).
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson

from ..audio.convert import StreamConverter, b64decode, b64encode, convert_once
from ..audio.formats import OPENAI_FORMATS, PCM24, Fmt, FormatError, parse_ga_format
from ..dialects import BETA, BETA_FORMATS_HINT, param_for
from ..events import Event, error_event, new_event_id
from ..relay.stage import BaseStage, Forward, Session
from .shapes import client_data, client_out, event_id_of, server_data, server_out

APPEND = "input_audio_buffer.append"
DELTA = "response.output_audio.delta"
STATE_KEY = "audio.state"


class _State:
    __slots__ = ("client_in", "client_out", "up_in", "up_out", "in_conv", "out_convs")

    def __init__(self, client_in: Fmt, client_out: Fmt, up_in: Fmt, up_out: Fmt) -> None:
        self.client_in = client_in
        self.client_out = client_out
        self.up_in = up_in
        self.up_out = up_out
        self.in_conv: StreamConverter | None = None
        #: output converters per (item_id, content_index): one stream per
        #: audio content part, so concurrent responses never mix
        self.out_convs: dict[Any, tuple[Any, StreamConverter]] = {}


class AudioStage(BaseStage):
    """Audio format conversion between the client and the upstream.

    ``upstream_formats``: the formats the upstream accepts as they are
    (default: OpenAI's -- PCM16 at 24 kHz, G.711 μ-law, G.711 A-law).
    ``upstream_default``: the format the upstream uses until told otherwise
    and the one the stage converts to when the client's is not accepted.
    ``quality``: soxr quality (``"HQ"``; ``"LQ"`` halves the resampler's
    latency at some cost in stop-band rejection).
    """

    name = "audio"

    def __init__(self, upstream_formats: Iterable[Fmt] = OPENAI_FORMATS,
                 upstream_default: Fmt = PCM24, quality: str = "HQ") -> None:
        self.upstream_formats = frozenset(upstream_formats)
        self.upstream_default = upstream_default
        self.quality = quality

    # ------------------------------------------------------------ state
    def on_open(self, s: Session) -> None:
        self._state(s)

    def _state(self, s: Session) -> _State:
        st = s.facts.get(STATE_KEY)
        if st is None:
            d = self.upstream_default
            cin = Fmt("pcm", s.facts["input_rate"]) if s.facts.get("input_rate") else d
            cout = Fmt("pcm", s.facts["output_rate"]) if s.facts.get("output_rate") else d
            st = _State(cin, cout, self._upstream_for(cin), self._upstream_for(cout))
            if st.client_in != st.up_in:
                st.in_conv = StreamConverter(st.client_in, st.up_in, self.quality)
            s.facts[STATE_KEY] = st
        return st

    def _upstream_for(self, fmt: Fmt) -> Fmt:
        return fmt if fmt in self.upstream_formats else self.upstream_default

    def _default_rate(self, s: Session, side: str) -> int:
        return s.facts.get(f"{side}_rate") or 24000

    # ============================================================ client -> upstream
    def sees_client(self, t: str | None, s: Session) -> bool:
        if t == APPEND:
            st = s.facts.get(STATE_KEY)
            return st is None or st.in_conv is not None
        return t in _CLIENT

    def sees_server(self, t: str | None, s: Session) -> bool:
        if t == DELTA:
            st = s.facts.get(STATE_KEY)
            return st is None or st.client_out != st.up_out
        return t in _SERVER

    def on_client(self, ev: Event, s: Session) -> Forward:
        t = ev.type
        if t == APPEND:
            st = s.facts.get(STATE_KEY) or self._state(s)
            if st.in_conv is None:
                return ev
            return self._append(ev, st, s)
        h = _CLIENT.get(t)  # type: ignore[arg-type]
        if h is None:
            return ev
        return client_out(h(self, ev, s), s, ev)

    def _append(self, ev: Event, st: _State, s: Session) -> Forward:
        d = ev.data
        if d.get("type") != APPEND:
            client_data(ev, s)             # two 'type' keys: answered there
            return None
        audio = d.get("audio")
        if not isinstance(audio, str):
            return ev                      # let the upstream explain
        try:
            pcm = b64decode(audio)
        except ValueError:
            s.reply(error_event("The 'audio' field is not valid base64.", code="invalid_value",
                                param="audio", event_id=event_id_of(d)))
            return None
        out = st.in_conv.process(pcm)  # type: ignore[union-attr]
        if not out:
            return None                    # the resampler holds it; it comes out later
        d["audio"] = b64encode(out)
        ev.touch()
        try:
            ev.text                        # written now, as metering or the relay would
        except orjson.JSONEncodeError:
            return client_out(ev, s, ev)   # nested too deep: answered there
        return ev

    def _flush_input(self, ev: Event, s: Session) -> Forward:
        """Before commit/clear: send what the resampler still holds, so the
        upstream's buffer ends where the client's does."""
        st = self._state(s)
        if st.in_conv is None:
            return ev
        tail = st.in_conv.flush()
        if not tail:
            return ev
        return [Event.from_data({"type": APPEND, "audio": b64encode(tail)}), ev]

    def _session_update(self, ev: Event, s: Session) -> Forward:
        d = client_data(ev, s)
        if d is None:
            return None
        sess = d.get("session")
        if not isinstance(sess, dict):
            return ev
        audio = sess.get("audio")
        if not isinstance(audio, dict):
            return ev
        st = self._state(s)
        new: dict[str, tuple[dict[str, Any], Fmt]] = {}
        for side in ("input", "output"):
            a = audio.get(side)
            if not isinstance(a, dict) or "format" not in a:
                continue
            try:
                new[side] = (a, parse_ga_format(a["format"], self._default_rate(s, side)))
            except FormatError as e:
                self._reject(e, f"session.audio.{side}.format", d, s)
                return None                # OpenAI too discards a bad update whole
        if not new:
            return ev
        # the upstream is asked for what it accepts; the event is written
        # before the session's formats change, so a refused one changes nothing
        up = {side: self._upstream_for(fmt) for side, (_, fmt) in new.items()}
        changed = False
        for side, (a, _) in new.items():
            want = up[side].to_ga()
            if a["format"] != want:
                a["format"] = want
                changed = True
        if changed:
            ev.touch()
            if client_out(ev, s, ev) is None:
                return None
        s.rechain()            # formats may change: appends/deltas may need converting
        pre: list[Event] = []
        if "input" in new:
            fmt = new["input"][1]
            if fmt != st.client_in:
                if st.in_conv is not None:
                    tail = st.in_conv.flush()
                    if tail:
                        pre.append(Event.from_data({"type": APPEND, "audio": b64encode(tail)}))
                st.client_in = fmt
                st.up_in = up["input"]
                st.in_conv = (StreamConverter(fmt, st.up_in, self.quality)
                              if fmt != st.up_in else None)
        if "output" in new:
            fmt = new["output"][1]
            if fmt != st.client_out:
                st.client_out = fmt
                st.up_out = up["output"]
                st.out_convs.clear()
        if pre:
            pre.append(ev)
            return pre
        return ev

    def _response_create(self, ev: Event, s: Session) -> Forward:
        d = client_data(ev, s)
        if d is None:
            return None
        resp = d.get("response")
        if not isinstance(resp, dict):
            return ev
        st = self._state(s)
        changed = False
        out = (resp.get("audio") or {}).get("output") if isinstance(resp.get("audio"), dict) else None
        if isinstance(out, dict) and "format" in out:
            try:
                fmt = parse_ga_format(out["format"], self._default_rate(s, "output"))
            except FormatError as e:
                self._reject(e, "response.audio.output.format", d, s)
                return None
            if fmt == st.client_out:
                want = st.up_out.to_ga()
                if out["format"] != want:
                    out["format"] = want
                    changed = True
            elif not (fmt in self.upstream_formats and st.client_out == st.up_out):
                s.reply(error_event(
                    "This gateway converts output audio per session: a response cannot ask for "
                    f"{fmt} while the session's output format is {st.client_out}. "
                    "Change the output format with session.update instead.",
                    code="invalid_value",
                    param=param_for(s.client_dialect, "response.audio.output.format"),
                    event_id=event_id_of(d)))
                return None
        if st.in_conv is not None and self._items_audio(resp.get("input"), st, to_upstream=True):
            changed = True
        if changed:
            ev.touch()
        return ev

    def _item_create(self, ev: Event, s: Session) -> Forward:
        st = self._state(s)
        if st.in_conv is None and st.client_out == st.up_out:
            return ev
        d = client_data(ev, s)
        if d is None:
            return None
        if self._items_audio([d.get("item")], st, to_upstream=True):
            ev.touch()
        return ev

    def _items_audio(self, items: Any, st: _State, *, to_upstream: bool) -> bool:
        """Convert whole audio clips inside items (``input_audio`` content the
        client sends, or items the upstream returns with audio)."""
        if not isinstance(items, list):
            return False
        changed = False
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            if not isinstance(content, list):
                continue
            for part in content:
                if not isinstance(part, dict) or not isinstance(part.get("audio"), str):
                    continue
                is_input = part.get("type") == "input_audio"
                if is_input:
                    src, dst = (st.client_in, st.up_in) if to_upstream else (st.up_in, st.client_in)
                else:
                    src, dst = (st.client_out, st.up_out) if to_upstream else (st.up_out, st.client_out)
                if src == dst:
                    continue
                try:
                    raw = b64decode(part["audio"])
                except ValueError:
                    continue
                part["audio"] = b64encode(convert_once(raw, src, dst, self.quality))
                changed = True
        return changed

    def _reject(self, e: FormatError, ga_param: str, d: dict[str, Any], s: Session) -> None:
        param = ga_param + ("." + e.subfield if e.subfield else "")
        msg = str(e)
        if s.client_dialect == BETA:
            msg += BETA_FORMATS_HINT
        s.reply(error_event(msg, code="invalid_value", param=param_for(s.client_dialect, param),
                            event_id=event_id_of(d)))

    # ============================================================ upstream -> client
    def on_server(self, ev: Event, s: Session) -> Forward:
        t = ev.type
        if t == DELTA:
            st = s.facts.get(STATE_KEY) or self._state(s)
            if st.client_out == st.up_out:
                return ev
            return self._delta(ev, st)
        h = _SERVER.get(t)  # type: ignore[arg-type]
        if h is None:
            return ev
        raw = ev.raw
        return server_out(h(self, ev, s), raw, t)

    def _delta(self, ev: Event, st: _State) -> Forward:
        # shapes.server_data, inlined: this runs per delta
        raw = ev.raw
        try:
            d = ev.data
        except orjson.JSONDecodeError:
            return ev
        audio = d.get("delta")
        if not isinstance(audio, str) or d.get("type") != DELTA:
            return ev
        key = (d.get("item_id"), d.get("content_index"))
        try:
            entry = st.out_convs.get(key)
        except TypeError:                  # an id that cannot key a stream (a list...)
            return ev
        if entry is None:
            entry = st.out_convs[key] = (
                d.get("response_id"), StreamConverter(st.up_out, st.client_out, self.quality))
        try:
            out = entry[1].process(b64decode(audio))
        except ValueError:
            return ev
        if not out:
            return None
        d["delta"] = b64encode(out)
        ev.touch()
        try:
            ev.text                        # written now, as the relay would
        except orjson.JSONEncodeError:
            return server_out(ev, raw, DELTA)
        return ev

    def _audio_done(self, ev: Event, s: Session) -> Forward:
        st = s.facts.get(STATE_KEY)
        if st is None or not st.out_convs:
            return ev
        d = server_data(ev)
        if d is None:
            return ev
        try:
            entry = st.out_convs.pop((d.get("item_id"), d.get("content_index")), None)
        except TypeError:
            return ev
        if entry is None:
            return ev
        tail = entry[1].flush()
        if not tail:
            return ev
        delta = {"type": DELTA, "event_id": new_event_id()}
        for k in ("response_id", "item_id", "output_index", "content_index"):
            if k in d:
                delta[k] = d[k]
        delta["delta"] = b64encode(tail)
        return [Event.from_data(delta), ev]

    def _response_done(self, ev: Event, s: Session) -> Forward:
        st = s.facts.get(STATE_KEY)
        if st is None or not st.out_convs:
            return ev
        d = server_data(ev)
        if d is None:
            return ev
        resp = d.get("response")
        rid = resp.get("id") if isinstance(resp, dict) else None
        for key in [k for k, (r, _) in st.out_convs.items() if r == rid]:
            del st.out_convs[key]
        return ev

    def _session_out(self, ev: Event, s: Session) -> Forward:
        """Show the client the formats it asked for where the upstream reports
        the one the stage converts to.  (The stage does not *learn* formats
        from these events: they can trail the client's own updates, and the
        upstream applies updates in the order the stage forwarded them.)"""
        st = s.facts.get(STATE_KEY) or self._state(s)
        if st.client_in == st.up_in and st.client_out == st.up_out:
            return ev
        d = server_data(ev)
        if d is None:
            return ev
        sess = d.get("session")
        audio = sess.get("audio") if isinstance(sess, dict) else None
        if not isinstance(audio, dict):
            return ev
        changed = False
        for side, client, up in (("input", st.client_in, st.up_in),
                                 ("output", st.client_out, st.up_out)):
            a = audio.get(side)
            if client == up or not isinstance(a, dict) or not isinstance(a.get("format"), dict):
                continue
            try:
                reported = parse_ga_format(a["format"])
            except FormatError:
                continue
            if reported == up:
                a["format"] = client.to_ga()
                changed = True
        if changed:
            ev.touch()
        return ev

    def _item_retrieved(self, ev: Event, s: Session) -> Forward:
        st = s.facts.get(STATE_KEY)
        if st is None or (st.in_conv is None and st.client_out == st.up_out):
            return ev
        d = server_data(ev)
        if d is not None and self._items_audio([d.get("item")], st, to_upstream=False):
            ev.touch()
        return ev


_CLIENT = {
    "input_audio_buffer.commit": AudioStage._flush_input,
    "input_audio_buffer.clear": AudioStage._flush_input,
    "session.update": AudioStage._session_update,
    "response.create": AudioStage._response_create,
    "conversation.item.create": AudioStage._item_create,
}
_SERVER = {
    "response.output_audio.done": AudioStage._audio_done,
    "response.done": AudioStage._response_done,
    "session.created": AudioStage._session_out,
    "session.updated": AudioStage._session_out,
    "conversation.item.retrieved": AudioStage._item_retrieved,
}
