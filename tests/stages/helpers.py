"""Lists in, lists out: run events through a Chain without sockets, and
check them against the official SDK's types."""

from __future__ import annotations

import collections.abc
import json
import types
import typing
from typing import Any, Iterable

import orjson
import pydantic
from typing_extensions import is_typeddict

from openopen8.events import Event
from openopen8.relay.stage import Chain, Session


def make_session(**kw: Any) -> Session:
    facts = kw.pop("facts", {})
    s = Session(id="sess_test", model="gpt-realtime", **kw)
    s.facts.update(facts)
    return s


def wire(d: dict[str, Any]) -> Event:
    """An event as it comes off a socket: text only, type peeked."""
    return Event(raw=orjson.dumps(d).decode())


def loads(ev: Event) -> dict[str, Any]:
    return json.loads(ev.text)


def client_to_upstream(chain: Chain, s: Session, events: Iterable[dict[str, Any]]
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the upstream receives, and what the client gets back directly."""
    up: list[dict[str, Any]] = []
    for d in events:
        up.extend(loads(e) for e in chain.client(wire(d), s))
        up.extend(loads(e) for e in s.to_upstream)
        s.to_upstream.clear()
    replies = [loads(e) for e in s.to_client]
    s.to_client.clear()
    return up, replies


def upstream_to_client(chain: Chain, s: Session, events: Iterable[dict[str, Any]]
                       ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for d in events:
        out.extend(loads(e) for e in chain.server(wire(d), s))
        out.extend(loads(e) for e in s.to_client)
        s.to_client.clear()
    return out


# ---------------------------------------------------------------- SDK checks

class Unknown(AssertionError):
    pass


def _type_literal(tp: Any) -> tuple[Any, ...] | None:
    """The Literal values of a TypedDict's/model's ``type`` key, if any."""
    try:
        if is_typeddict(tp):
            hint = typing.get_type_hints(tp).get("type")
        elif isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            f = tp.model_fields.get("type")
            hint = f.annotation if f else None
        else:
            return None
    except Exception:  # noqa: BLE001
        return None
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    return None


def strict(value: Any, tp: Any, path: str = "$", allow: frozenset[str] = frozenset()) -> None:
    """Like validation, but also refuses keys the SDK type does not declare.

    Works on the SDK's TypedDict params (client events) and pydantic models
    (server events), whose own validation ignores extra keys.  ``allow``
    names keys to accept anywhere although the type lacks them (the frozen
    beta SDK types miss a few fields the beta wire had).
    """
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return
    if origin is typing.Annotated:
        return strict(value, typing.get_args(tp)[0], path, allow)
    if tp is type(None):
        if value is not None:
            raise Unknown(f"{path}: expected null, got {value!r}")
        return
    if origin in (typing.Union, types.UnionType):
        members = list(typing.get_args(tp))
        if isinstance(value, dict) and "type" in value:
            typed = [m for m in members if (_type_literal(m) or ()) and value["type"] in _type_literal(m)]
            if typed:
                members = typed
        errors = []
        for m in members:
            try:
                strict(value, m, path, allow)
                return
            except Unknown as e:
                errors.append(str(e))
        raise Unknown(f"{path}: matches no member: " + " | ".join(errors))
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise Unknown(f"{path}: {value!r} not in {typing.get_args(tp)}")
        return
    if is_typeddict(tp) or (isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)):
        if not isinstance(value, dict):
            raise Unknown(f"{path}: expected an object for {tp.__name__}, got {value!r}")
        if is_typeddict(tp):
            hints = typing.get_type_hints(tp)
            required = getattr(tp, "__required_keys__", set())
        else:
            hints = {k: f.annotation for k, f in tp.model_fields.items()}
            required = {k for k, f in tp.model_fields.items() if f.is_required()}
        unknown = set(value) - set(hints) - allow
        if unknown:
            raise Unknown(f"{path}: keys {sorted(unknown)} unknown to {tp.__name__}")
        missing = set(required) - set(value)
        if missing:
            raise Unknown(f"{path}: missing {sorted(missing)} for {tp.__name__}")
        for k, v in value.items():
            if k in hints:
                strict(v, hints[k], f"{path}.{k}", allow)
        return
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence, typing.List):
        if not isinstance(value, list):
            raise Unknown(f"{path}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        for i, v in enumerate(value):
            strict(v, arg, f"{path}[{i}]", allow)
        return
    if origin in (dict, typing.Dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise Unknown(f"{path}: expected an object, got {value!r}")
        return
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise Unknown(f"{path}: expected a number, got {value!r}")
        return
    if tp in (str, int, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise Unknown(f"{path}: expected {tp.__name__}, got {value!r}")
        return
    # anything else (NewType, TypeVar, …): accept
    return


_adapters: dict[Any, pydantic.TypeAdapter] = {}


def validate_model(value: dict[str, Any], tp: Any) -> None:
    """pydantic validation through the SDK's discriminated unions."""
    ad = _adapters.get(tp)
    if ad is None:
        ad = _adapters[tp] = pydantic.TypeAdapter(tp)
    ad.validate_python(value)
