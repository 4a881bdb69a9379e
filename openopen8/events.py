"""Realtime events: the raw text travels with a lazily parsed dict.

The relay never parses a frame it does not have to.  ``Event.type`` is peeked
from the text cheaply (every OpenAI server frame and every SDK client frame
starts with its type: ``{"type":"`` from OpenAI and compact writers such as
the JS SDK, ``{"type": "`` from the Python SDK's ``json.dumps``); the dict is
built only when a stage asks for it, and the text is serialised again only
when a stage replaced the dict.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

#: how OpenAI's frames and every SDK's start: compact JSON, and Python's json.dumps
TYPE_PREFIXES = _PREFIX, _SPACED = ('{"type":"', '{"type": "')


def peek_type(raw: str) -> str | None:
    """The top-level ``type`` of a frame, without parsing it; None if unsure."""
    if raw.startswith(_PREFIX):
        start = 9
    elif raw.startswith(_SPACED):
        start = 10
    else:
        return None
    end = raw.find('"', start)
    if end > 0:
        value = raw[start:end]
        if "\\" not in value:
            return value
    return None


class Event:
    """One Realtime event.  ``raw`` is the wire text, ``data`` the parsed dict.

    Exactly one of them may be missing: an event read from a socket starts
    with ``raw`` only; an event a stage built starts with ``data`` only.
    ``invalid`` holds an error code (``invalid_json`` / ``invalid_event``)
    when the frame could not be understood at all.
    """

    __slots__ = ("raw", "_data", "type", "invalid")

    def __init__(self, raw: str | None = None, data: dict[str, Any] | None = None,
                 type: str | None = None) -> None:
        self.raw = raw
        self._data = data
        self.invalid: str | None = None
        if type is None:
            if data is not None:
                type = data.get("type")
            elif raw is not None:
                type = peek_type(raw)
                if type is None:
                    type = self._type_from_parse()
        self.type = type

    def _type_from_parse(self) -> str | None:
        try:
            data = orjson.loads(self.raw)  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            self.invalid = "invalid_json"
            return None
        if not isinstance(data, dict):
            self.invalid = "invalid_event"
            return None
        self._data = data
        t = data.get("type")
        if not isinstance(t, str):
            self.invalid = "invalid_event"
            return None
        return t

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "Event":
        return cls(data=data)

    @property
    def data(self) -> dict[str, Any]:
        """The parsed event (parsed on first use).  Mutating it in place does
        not change ``text``: call :meth:`replace` or :meth:`touch` for that."""
        d = self._data
        if d is None:
            d = orjson.loads(self.raw)  # type: ignore[arg-type]
            self._data = d
        return d

    def replace(self, data: dict[str, Any]) -> None:
        """Swap in a new dict; the text is re-serialised on next ``text``."""
        self._data = data
        self.raw = None
        self.type = data.get("type")

    def touch(self) -> None:
        """Mark an in-place change of ``data`` so ``text`` is rebuilt."""
        _ = self.data
        self.raw = None
        self.type = self._data.get("type")  # type: ignore[union-attr]

    @property
    def text(self) -> str:
        raw = self.raw
        if raw is None:
            raw = orjson.dumps(self._data).decode()
            self.raw = raw
        return raw

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Event({self.type!r})"


_new = object.__new__


def wire_event(raw: str) -> Event:
    """``Event(raw)`` for a frame just read, with the type peek inlined (the
    relay makes one per frame)."""
    ev = _new(Event)
    ev.raw = raw
    ev._data = None
    ev.invalid = None
    start = 9 if raw.startswith(_PREFIX) else 10 if raw.startswith(_SPACED) else 0
    if start:
        end = raw.find('"', start)
        if end > 0:
            t = raw[start:end]
            if "\\" not in t:
                ev.type = t
                return ev
    ev.type = ev._type_from_parse()
    return ev


def new_event_id() -> str:
    return "event_" + secrets.token_hex(10)


def error_event(message: str, *, code: str | None = None,
                type: str = "invalid_request_error", param: str | None = None,
                event_id: str | None = None) -> Event:
    """An OpenAI-shaped ``error`` server event."""
    return Event.from_data({
        "type": "error",
        "event_id": new_event_id(),
        "error": {"type": type, "code": code, "message": message,
                  "param": param, "event_id": event_id},
    })
