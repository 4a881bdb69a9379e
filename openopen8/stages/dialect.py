"""The dialect stage: beta ⇄ GA at the edges of the chain.

GA is the gateway's internal dialect, so two instances bracket the chain::

    [DialectStage(edge="client")] [audio] [policy] [metering] [DialectStage(edge="upstream")]

* ``edge="client"`` turns a beta client's events into GA on the way in and
  GA server events into beta on the way out (``s.client_dialect``).  It also
  detects a beta client from its first ``session.update`` when the web layer
  had no explicit signal (``s.facts["dialect_source"] != "header"``), and it
  translates stray beta fields a GA client put into ``session.update`` /
  ``response.create`` (seed 003 does) instead of letting OpenAI reject them.
* ``edge="upstream"`` turns GA into beta for an upstream that speaks beta
  (``s.upstream_dialect == "beta"``: Azure preview) and back.  When the
  upstream speaks GA, leave it out of the chain (it would only cost an
  attribute check per event).

Per-session state lives in ``s.facts`` (``dialect.client`` /
``dialect.upstream``) so one stage object may serve many sessions.
The rules are documented in ``docs/dialects-and-audio.md``.

Events may carry any JSON: the handlers check a value's type before they
use it as a dict, a list or a key (ids must be strings to be remembered),
and the dispatchers apply :mod:`.shapes` -- a client event the stage cannot
forward gets an ``error``, an upstream event it cannot read goes on as it
came.  A beta format name a client wrote (``input_audio_format``, also in a
GA client's update) is checked here, where the name it wrote is known, so
an error names it.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from .. import dialects as D
from ..audio.formats import FormatError, parse_ga_format
from ..events import Event, error_event, new_event_id
from ..relay.stage import BaseStage, Forward, Session
from .shapes import client_data, client_out, event_id_of, server_data, server_out

_PFX = '{"type":"'


def _renames(table: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """old type -> (old raw prefix, new raw prefix, new type)."""
    return {old: (f'{_PFX}{old}"', f'{_PFX}{new}"', new) for old, new in table.items()}


_TO_BETA = _renames(D.SERVER_TYPES_GA_TO_BETA)
_TO_GA = _renames(D.SERVER_TYPES_BETA_TO_GA)


def _rename(ev: Event, rule: tuple[str, str, str]) -> Event:
    """Rename an event's type without parsing it when its text starts with
    the type (every OpenAI frame does): a prefix swap on the string."""
    old_pfx, new_pfx, new = rule
    raw = ev.raw
    if raw is not None and raw.startswith(old_pfx):
        # one copy of the text (str.replace stops at the first match, at 0)
        return Event(raw=raw.replace(old_pfx, new_pfx, 1), type=new)
    try:
        d = ev.data
    except orjson.JSONDecodeError:
        return ev                        # not JSON: on as it came
    t = ev.type
    d["type"] = new
    ev.touch()
    return server_out(ev, raw, t)


class _ClientState:
    __slots__ = ("decided", "seen_items", "warned")

    def __init__(self) -> None:
        self.decided = False          # dialect sniffed (or fixed by the header)
        self.seen_items: set[str] = set()   # items already announced as .created
        self.warned: set[str] = set()        # dropped fields already warned about


class _UpstreamState:
    __slots__ = ("open_items",)

    def __init__(self) -> None:
        #: beta items announced with status in_progress: GA owes a
        #: ``conversation.item.done`` for them
        self.open_items: dict[str, Any] = {}   # item id -> previous_item_id


class DialectStage(BaseStage):
    """Beta ⇄ GA translation at one edge of the chain.

    ``edge``: ``"client"`` (first stage) or ``"upstream"`` (last stage).
    ``warn``: ``"error"`` (default) tells the client once per field when a
    beta field GA has no place for (``temperature``) was dropped, with a
    non-fatal ``error`` event, code ``parameter_ignored``; ``"off"`` drops
    silently.
    """

    def __init__(self, edge: str = "client", *, warn: str = "error") -> None:
        if edge not in ("client", "upstream"):
            raise ValueError("edge must be 'client' or 'upstream'")
        if warn not in ("error", "off"):
            raise ValueError("warn must be 'error' or 'off'")
        self.edge = edge
        self.name = "dialect." + edge
        self.warn = warn
        # bind the direction handlers once: the chain calls them per event
        if edge == "client":
            self.on_client = self._client_in     # type: ignore[method-assign]
            self.on_server = self._client_out    # type: ignore[method-assign]
        else:
            self.on_client = self._upstream_out  # type: ignore[method-assign]
            self.on_server = self._upstream_in   # type: ignore[method-assign]

    # ------------------------------------------------------------ state
    def _cstate(self, s: Session) -> _ClientState:
        st = s.facts.get("dialect.client")
        if st is None:
            st = s.facts["dialect.client"] = _ClientState()
        return st

    def _ustate(self, s: Session) -> _UpstreamState:
        st = s.facts.get("dialect.upstream")
        if st is None:
            st = s.facts["dialect.upstream"] = _UpstreamState()
        return st

    def sees_client(self, t: str | None, s: Session) -> bool:
        # the client edge acts on a few client events only; the upstream
        # edge (beta upstreams) and a beta client's way out see everything
        return t in _CLIENT_IN if self.edge == "client" else True

    def sees_server(self, t: str | None, s: Session) -> bool:
        return s.client_dialect == D.BETA if self.edge == "client" else True

    def on_open(self, s: Session) -> None:
        if self.edge == "client":
            self._cstate(s)
        else:
            self._ustate(s)

    # ============================================================ client edge
    # ---- client -> gateway (anything -> GA)
    def _client_in(self, ev: Event, s: Session) -> Forward:
        h = _CLIENT_IN.get(ev.type)  # type: ignore[arg-type]
        if h is None:
            return ev
        return client_out(h(self, ev, s), s, ev)

    def _decide(self, s: Session, beta: bool) -> None:
        """First session.update (or transcription_session.update) decides
        the dialect unless the web layer saw an explicit beta signal."""
        st = self._cstate(s)
        if st.decided:
            return
        st.decided = True
        if s.facts.get("dialect_source") != "header":
            s.client_dialect = D.BETA if beta else D.GA
            s.rechain()

    def _hints(self, s: Session) -> tuple[Any, Any]:
        f = s.facts
        return f.get("input_rate"), f.get("output_rate")

    def _session_update_in(self, ev: Event, s: Session) -> Forward:
        d = client_data(ev, s)
        if d is None:
            return None
        sess = d.get("session")
        if not isinstance(sess, dict):
            return ev
        self._decide(s, "type" not in sess)
        if "type" in sess and not D.has_beta_fields(sess):
            return ev                       # plain GA: untouched
        in_rate, out_rate = self._hints(s)
        ga, dropped = D.session_to_ga(sess, input_rate=in_rate, output_rate=out_rate)
        if self._bad_alias(sess, ga, "session", ("input", "output"), d, s):
            return None
        d["session"] = ga
        ev.touch()
        self._warn_dropped(dropped, "session", d, s)
        return ev

    def _transcription_update_in(self, ev: Event, s: Session) -> Forward:
        d = client_data(ev, s)
        if d is None:
            return None
        sess = d.get("session")
        self._decide(s, True)
        if not isinstance(sess, dict):
            sess = {}
        in_rate, _ = self._hints(s)
        ga, dropped = D.transcription_session_to_ga(sess, input_rate=in_rate)
        if self._bad_alias(sess, ga, "session", ("input",), d, s):
            return None
        out: dict[str, Any] = {"type": "session.update"}
        if "event_id" in d:
            out["event_id"] = d["event_id"]
        out["session"] = ga
        self._warn_dropped(dropped, "session", d, s)
        return Event.from_data(out)

    def _response_create_in(self, ev: Event, s: Session) -> Forward:
        d = client_data(ev, s)
        if d is None:
            return None
        resp = d.get("response")
        if not isinstance(resp, dict):
            return ev
        if s.client_dialect != D.BETA and not _RESPONSE_BETA_KEYS.intersection(resp):
            return ev
        ga, dropped = D.response_params_to_ga(resp)
        if self._bad_alias(resp, ga, "response", ("output",), d, s):
            return None
        d["response"] = ga
        ev.touch()
        self._warn_dropped(dropped, "response", d, s)
        return ev

    def _item_create_in(self, ev: Event, s: Session) -> Forward:
        if s.client_dialect != D.BETA:
            return ev
        d = client_data(ev, s)
        if d is None:
            return None
        if D.item_to_ga(d.get("item")):
            ev.touch()
        return ev

    def _bad_alias(self, src: dict[str, Any], ga: dict[str, Any], where: str,
                   sides: tuple[str, ...], d: dict[str, Any], s: Session) -> bool:
        """Answer an audio format given by beta names that the gateway cannot
        handle, naming the field the client wrote (the audio stage, which
        checks the rest, sees GA names only).  True if answered: the event
        is discarded whole, as OpenAI discards a bad update."""
        for side, param, fmt in D.aliased_formats(src, ga, where, sides):
            try:
                parse_ga_format(fmt, s.facts.get(f"{side}_rate") or 24000)
            except FormatError as e:
                param += "." + e.subfield if e.subfield else ""
                s.reply(error_event(str(e) + D.BETA_FORMATS_HINT, code="invalid_value",
                                    param=D.param_to_beta(param), event_id=event_id_of(d)))
                return True
        return False

    def _warn_dropped(self, dropped: list[str], where: str, d: dict[str, Any],
                      s: Session) -> None:
        if not dropped or self.warn == "off":
            return
        st = self._cstate(s)
        for name in dropped:
            param = f"{where}.{name}"
            if param in st.warned:
                continue
            st.warned.add(param)
            s.reply(error_event(
                f"'{param}' is not supported by the Realtime API this gateway speaks to "
                "(GA has no such field) and was ignored; the rest of the event was applied. "
                "This is a warning, not a failure: the session continues. "
                "It is reported once per session.",
                type="invalid_request_error", code="parameter_ignored", param=param,
                event_id=event_id_of(d)))

    # ---- gateway -> client (GA -> beta)
    def _client_out(self, ev: Event, s: Session) -> Forward:
        if s.client_dialect != D.BETA:
            return ev
        t = ev.type
        rule = _TO_BETA.get(t)  # type: ignore[arg-type]
        if rule is not None:
            return _rename(ev, rule)
        h = _CLIENT_OUT.get(t)  # type: ignore[arg-type]
        if h is None:
            return ev
        raw = ev.raw
        if server_data(ev) is None:
            return ev
        return server_out(h(self, ev, s), raw, t)

    def _session_out(self, ev: Event, s: Session) -> Forward:
        d = ev.data
        sess = d.get("session")
        if not isinstance(sess, dict):
            return ev
        if sess.get("type") == "transcription":
            t: str = ev.type  # type: ignore[assignment]
            d["type"] = "transcription_session." + t.split(".", 1)[1]
        d["session"] = D.session_to_beta(sess)
        ev.touch()
        return ev

    def _item_announce_out(self, ev: Event, s: Session) -> Forward:
        """GA ``conversation.item.added`` / ``.done`` -> one beta
        ``conversation.item.created`` per item: the first of them wins (GA
        sends ``added`` first: user items complete, assistant items at their
        start with status in_progress -- exactly where beta sent
        ``created``); later ones for the same item are dropped."""
        d = ev.data
        item = d.get("item")
        st = self._cstate(s)
        iid = item.get("id") if isinstance(item, dict) else None
        if isinstance(iid, str):
            if iid in st.seen_items:
                return None
            st.seen_items.add(iid)
        D.item_to_beta(item)
        d["type"] = "conversation.item.created"
        ev.touch()
        return ev

    def _item_deleted_out(self, ev: Event, s: Session) -> Forward:
        iid = ev.data.get("item_id")
        if isinstance(iid, str):
            self._cstate(s).seen_items.discard(iid)
        return ev

    def _item_out(self, ev: Event, s: Session) -> Forward:
        if D.item_to_beta(ev.data.get("item")):
            ev.touch()
        return ev

    def _part_out(self, ev: Event, s: Session) -> Forward:
        part = ev.data.get("part")
        if isinstance(part, dict):
            pt = part.get("type")
            new = _PART_TO_BETA.get(pt) if isinstance(pt, str) else None
            if new is not None:
                part["type"] = new
                ev.touch()
        return ev

    def _response_out(self, ev: Event, s: Session) -> Forward:
        d = ev.data
        resp = d.get("response")
        if isinstance(resp, dict):
            d["response"] = D.response_object_to_beta(resp)
            ev.touch()
        return ev

    def _error_out(self, ev: Event, s: Session) -> Forward:
        err = ev.data.get("error")
        if isinstance(err, dict):
            p = err.get("param")
            bp = D.param_to_beta(p)
            if bp != p:
                err["param"] = bp
                ev.touch()
        return ev

    # ============================================================ upstream edge
    # ---- gateway -> upstream (GA -> beta)
    def _upstream_out(self, ev: Event, s: Session) -> Forward:
        if s.upstream_dialect != D.BETA:
            return ev
        h = _UPSTREAM_OUT.get(ev.type)  # type: ignore[arg-type]
        if h is None:
            return ev
        d = client_data(ev, s)
        if d is None:
            return None
        return client_out(h(self, ev, s), s, ev)

    def _session_update_up(self, ev: Event, s: Session) -> Forward:
        d = ev.data
        sess = d.get("session")
        if not isinstance(sess, dict):
            return ev
        if sess.get("type") == "transcription":
            d["type"] = "transcription_session.update"
        d["session"] = D.session_to_beta(sess)
        ev.touch()
        return ev

    def _response_create_up(self, ev: Event, s: Session) -> Forward:
        d = ev.data
        resp = d.get("response")
        if isinstance(resp, dict):
            d["response"] = D.response_params_to_beta(resp)
            ev.touch()
        return ev

    # ---- upstream -> gateway (beta -> GA)
    def _upstream_in(self, ev: Event, s: Session) -> Forward:
        if s.upstream_dialect != D.BETA:
            return ev
        t = ev.type
        rule = _TO_GA.get(t)  # type: ignore[arg-type]
        if rule is not None:
            return _rename(ev, rule)
        h = _UPSTREAM_IN.get(t)  # type: ignore[arg-type]
        if h is None:
            return ev
        raw = ev.raw
        if server_data(ev) is None:
            return ev
        return server_out(h(self, ev, s), raw, t)

    def _session_in(self, ev: Event, s: Session) -> Forward:
        d = ev.data
        sess = d.get("session")
        if not isinstance(sess, dict):
            return ev
        t: str = ev.type  # type: ignore[assignment]
        if t.startswith("transcription_session."):
            d["type"] = "session." + t.split(".", 1)[1]
            ga, _ = D.transcription_session_to_ga(sess)
        else:
            ga, _ = D.session_to_ga(sess)
        ev_obj = ga.pop("object", None)
        ga_sorted: dict[str, Any] = {"type": ga.pop("type")}
        if ev_obj is not None:
            ga_sorted["object"] = ev_obj
        ga_sorted.update(ga)
        d["session"] = ga_sorted
        ev.touch()
        return ev

    def _item_created_in(self, ev: Event, s: Session) -> Forward:
        """Beta ``conversation.item.created`` -> GA ``conversation.item.added``,
        followed at once by ``conversation.item.done`` for a complete item;
        for an in-progress (assistant) item the ``done`` comes just before
        its ``response.output_item.done``, where GA sends it."""
        d = ev.data
        item = d.get("item")
        D.item_to_ga(item)
        d["type"] = "conversation.item.added"
        ev.touch()
        if not isinstance(item, dict):
            return ev
        if item.get("status") == "in_progress":
            iid = item.get("id")
            if isinstance(iid, str):
                self._ustate(s).open_items[iid] = d.get("previous_item_id")
            return ev
        done = {"type": "conversation.item.done", "event_id": new_event_id(),
                "previous_item_id": d.get("previous_item_id"), "item": dict(item)}
        return [ev, Event.from_data(done)]

    def _output_item_done_in(self, ev: Event, s: Session) -> Forward:
        d = ev.data
        item = d.get("item")
        if D.item_to_ga(item):
            ev.touch()
        iid = item.get("id") if isinstance(item, dict) else None
        st = self._ustate(s)
        if isinstance(iid, str) and iid in st.open_items:
            done = {"type": "conversation.item.done", "event_id": new_event_id(),
                    "previous_item_id": st.open_items.pop(iid), "item": dict(item)}
            return [Event.from_data(done), ev]
        return ev

    def _item_in(self, ev: Event, s: Session) -> Forward:
        if D.item_to_ga(ev.data.get("item")):
            ev.touch()
        return ev

    def _response_in(self, ev: Event, s: Session) -> Forward:
        d = ev.data
        resp = d.get("response")
        if isinstance(resp, dict):
            done = ev.type == "response.done"
            d["response"] = D.response_object_to_ga(resp)
            ev.touch()
            output = resp.get("output")
            if done and isinstance(output, list):
                # items of a response cut short never got output_item.done
                st = self._ustate(s)
                out: list[Event] = []
                for item in output:
                    iid = item.get("id") if isinstance(item, dict) else None
                    if isinstance(iid, str) and iid in st.open_items:
                        out.append(Event.from_data({
                            "type": "conversation.item.done", "event_id": new_event_id(),
                            "previous_item_id": st.open_items.pop(iid), "item": dict(item)}))
                if out:
                    out.append(ev)
                    return out
        return ev


Handler = Callable[[DialectStage, Event, Session], Forward]

#: ``response.create`` keys that only a beta client writes
_RESPONSE_BETA_KEYS = frozenset({"modalities", "voice", "output_audio_format",
                                 "max_response_output_tokens", "temperature",
                                 D.OUTPUT_RATE_FIELD})
_PART_TO_BETA = {"output_text": "text", "output_audio": "audio"}

_CLIENT_IN: dict[str, Handler] = {
    "session.update": DialectStage._session_update_in,
    "transcription_session.update": DialectStage._transcription_update_in,
    "response.create": DialectStage._response_create_in,
    "conversation.item.create": DialectStage._item_create_in,
}
_CLIENT_OUT: dict[str, Handler] = {
    "session.created": DialectStage._session_out,
    "session.updated": DialectStage._session_out,
    "conversation.item.added": DialectStage._item_announce_out,
    "conversation.item.done": DialectStage._item_announce_out,
    "conversation.item.created": DialectStage._item_announce_out,
    "conversation.item.deleted": DialectStage._item_deleted_out,
    "conversation.item.retrieved": DialectStage._item_out,
    "response.output_item.added": DialectStage._item_out,
    "response.output_item.done": DialectStage._item_out,
    "response.content_part.added": DialectStage._part_out,
    "response.content_part.done": DialectStage._part_out,
    "response.created": DialectStage._response_out,
    "response.done": DialectStage._response_out,
    "error": DialectStage._error_out,
}
_UPSTREAM_OUT: dict[str, Handler] = {
    "session.update": DialectStage._session_update_up,
    "response.create": DialectStage._response_create_up,
    "conversation.item.create": DialectStage._item_out,
}
_UPSTREAM_IN: dict[str, Handler] = {
    "session.created": DialectStage._session_in,
    "session.updated": DialectStage._session_in,
    "transcription_session.created": DialectStage._session_in,
    "transcription_session.updated": DialectStage._session_in,
    "conversation.item.created": DialectStage._item_created_in,
    "conversation.item.retrieved": DialectStage._item_in,
    "response.output_item.added": DialectStage._item_in,
    "response.output_item.done": DialectStage._output_item_done_in,
    "response.created": DialectStage._response_in,
    "response.done": DialectStage._response_in,
}
