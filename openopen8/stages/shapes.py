"""What a stage does with an event whose shape it cannot use.

Clients and upstreams send whatever JSON they like, and a stage that reads
an event must never raise on it: an exception in a stage is a gateway bug
(the chain logs it with its traceback), not an answer.  Stages check a
value's type where they read it; this module holds the rules they share:

* A **client** event the gateway cannot forward is answered the way OpenAI
  answers (an ``error`` with ``invalid_value`` / ``invalid_event`` /
  ``invalid_json``, the client's ``event_id`` when it is a string) and
  dropped; the session goes on.  Text that is not JSON is left to the chain,
  which answers ``invalid_json`` when ``ev.data`` raises.
* An **upstream** event a stage cannot understand goes on to the client as
  it came: a misbehaving upstream is the client's to see, not a reason to
  end the session.

Two shapes need a check beyond a value's type:

* *Two ``type`` keys*: ``ev.type`` is read from the start of the text and
  the parsed dict keeps the last key.  A stage that rewrote such an event
  would forward a different event from the one the chain judged (and give
  later stages a type that may not even be a string), so a stage works on
  an event only when both agree (:func:`client_data`, :func:`server_data`).
* *Nesting deeper than orjson writes* (254 levels; it reads 1024): an event
  a stage rewrote is serialised here, inside the stage, where a failure
  can still be answered (:func:`client_out`, :func:`server_out`).  The
  relay would serialise it a moment later anyway: no work is added.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..events import Event, error_event
from ..relay.stage import Forward, Session


def event_id_of(d: Any) -> str | None:
    """A client event's ``event_id`` as an error may echo it: a string or None."""
    eid = d.get("event_id") if isinstance(d, dict) else None
    return eid if isinstance(eid, str) else None


def client_data(ev: Event, s: Session) -> dict[str, Any] | None:
    """``ev.data`` of a client event, or None after telling the client its
    event has two different ``type`` values.  (Text that is not JSON raises
    ``orjson.JSONDecodeError``: the chain answers ``invalid_json``.)"""
    d = ev.data
    if d.get("type") == ev.type:
        return d
    s.reply(error_event("The event has more than one 'type' key, with different values.",
                        code="invalid_event", param="type", event_id=event_id_of(d)))
    return None


def server_data(ev: Event) -> dict[str, Any] | None:
    """``ev.data`` of an upstream event, or None when it is not JSON or has
    two different ``type`` values (the caller passes it on untouched)."""
    try:
        d = ev.data
    except orjson.JSONDecodeError:
        return None
    return d if d.get("type") == ev.type else None


def _unwritable(out: Forward) -> bool:
    """Whether an event a stage rewrote cannot be serialised."""
    if out is None:
        return False
    for e in (out,) if isinstance(out, Event) else out:
        if e.raw is None:
            try:
                e.text
            except orjson.JSONEncodeError:
                return True
    return False


def client_out(out: Forward, s: Session, ev: Event) -> Forward:
    """``out`` as a stage made it from the client event ``ev``, or None
    after an ``invalid_json`` error when it nests too deeply to be written."""
    if not _unwritable(out):
        return out
    s.reply(error_event("The event nests objects or arrays more than 254 levels deep; "
                        "the gateway cannot forward it.", code="invalid_json",
                        event_id=event_id_of(ev.data)))
    return None


def server_out(out: Forward, raw: str | None, t: str | None) -> Forward:
    """``out`` as a stage made it from an upstream event whose text was
    ``raw``; that text, unchanged, when ``out`` cannot be written."""
    if not _unwritable(out):
        return out
    return Event(raw=raw, type=t) if raw is not None else None
