"""Stages: small objects without I/O that sit between the two endpoints.

A stage sees every event of a session, in order, and decides what goes on:

* ``on_client(ev, s)`` for an event from the client on its way upstream,
* ``on_server(ev, s)`` for an event from the upstream on its way to the client.

Both return what to forward further along the chain: the event itself (the
common, fast path), another event, a list of events, or ``None`` to drop it.
Anything else a stage wants done is recorded on the :class:`Session` it is
given -- ``s.reply(ev)`` sends an event back to the client, ``s.inject(ev)``
sends one to the upstream, ``s.close(code, reason)`` ends the session -- and
the relay carries it out after the call returns.  Stages are therefore tested
with lists in and lists out, no sockets.

Client events pass the stages in list order; server events in reverse order,
so the stage nearest the client (the dialect) sees client text first and
server text last.  Events a stage replies or injects skip the remaining
stages and go straight to the socket, so they must already be in the dialect
of the side they are sent to (``s.client_dialect`` / ``s.upstream_dialect``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Union

from ..events import Event

Forward = Union[Event, list[Event], None]


@dataclass
class Session:
    """Everything a stage may know about the session, plus the actions it
    asked for.  Owned by the relay task; stages run synchronously on it."""

    id: str
    model: str
    token: Any = None            # store.TokenRecord (None in unit tests)
    channel: Any = None          # store.ChannelRecord
    client_dialect: str = "ga"   # "ga" | "beta"
    upstream_dialect: str = "ga"
    opened_at: float = field(default_factory=time.time)
    # counters kept by the relay pumps
    events_in: int = 0           # client -> upstream
    events_out: int = 0          # upstream -> client
    bytes_in: int = 0
    bytes_out: int = 0
    last_client_activity: float = field(default_factory=time.monotonic)
    # free-form scratch space for stages that need to share facts
    # (e.g. the client's audio rate); keyed by stage name
    facts: dict[str, Any] = field(default_factory=dict)
    # actions requested by stages, drained by the relay
    to_client: list[Event] = field(default_factory=list)
    to_upstream: list[Event] = field(default_factory=list)
    close_request: tuple[int, str] | None = None
    closed_by: str | None = None
    close_code: int | None = None    # the code the client got, known at on_close

    def reply(self, ev: Event) -> None:
        self.to_client.append(ev)

    def inject(self, ev: Event) -> None:
        self.to_upstream.append(ev)

    def close(self, code: int, reason: str = "") -> None:
        if self.close_request is None:
            self.close_request = (code, reason)


class Stage(Protocol):
    name: str

    def on_client(self, ev: Event, s: Session) -> Forward: ...

    def on_server(self, ev: Event, s: Session) -> Forward: ...


class BaseStage:
    """Pass-through defaults; subclasses override what they need.

    Optional hooks the relay calls when present:
    ``on_open(s)`` once before any event, ``on_tick(now, s)`` about once a
    second (``now`` from ``time.monotonic()``), ``on_close(s)`` once at the end
    (after ``s.closed_by`` and ``s.close_code`` are known).

    Two more let a stage see a session's upstream through to the end after
    the client has gone (or been sent away): ``on_client_gone(s)`` is called
    once then -- a stage may ``s.inject`` (e.g. cancel a response nobody will
    hear) -- and while any stage's ``awaiting_upstream(s)`` is true the relay
    keeps reading the upstream, for at most ``settle_seconds``, and passes
    what comes through ``on_server`` (its output goes nowhere).  Metering
    uses this so the usage of a response in flight is not lost.
    """

    name = "stage"

    def on_client(self, ev: Event, s: Session) -> Forward:
        return ev

    def on_server(self, ev: Event, s: Session) -> Forward:
        return ev


def _run(ev: Event, stages: Iterable[Any], attr: str, s: Session) -> list[Event]:
    pending = [ev]
    for stage in stages:
        nxt: list[Event] = []
        fn = getattr(stage, attr)
        for e in pending:
            out = fn(e, s)
            if out is None:
                continue
            if isinstance(out, Event):
                nxt.append(out)
            else:
                nxt.extend(out)
        pending = nxt
        if not pending:
            break
    return pending


def _pass(ev: Event, s: Session, hooks: tuple, stages: list[Any],
          attr: str) -> Event | list[Event]:
    """``ev`` through ``hooks`` (the bound ``attr`` hooks of ``stages``); the
    single-event fast path builds no list."""
    cur = ev
    i = 0
    for hook in hooks:
        out = hook(cur, s)
        i += 1
        if out is not cur:
            if out is None:
                return []
            if not isinstance(out, Event):
                return [e for item in out for e in _run(item, stages[i:], attr, s)]
            cur = out
    return cur


class Chain:
    """An ordered list of stages, applied client->upstream in order and
    upstream->client in reverse.

    The relay calls :meth:`pass_client` / :meth:`pass_server`, which return
    the one event that comes out (the common case: no list is built) or a
    list when a stage dropped the event or made several.  The stages' hooks
    are looked up once, when the chain is built.  :meth:`client` /
    :meth:`server` always return a list (for tests and tools)."""

    def __init__(self, stages: list[Any]) -> None:
        self.stages = list(stages)
        self.reverse = list(reversed(self.stages))
        self.tickers = [st for st in self.stages if hasattr(st, "on_tick")]
        self.waiters = [st for st in self.stages if hasattr(st, "awaiting_upstream")]
        self._up = tuple(st.on_client for st in self.stages)
        self._down = tuple(st.on_server for st in self.reverse)

    def client(self, ev: Event, s: Session) -> list[Event]:
        out = self.pass_client(ev, s)
        return out if out.__class__ is list else [out]  # type: ignore[return-value]

    def server(self, ev: Event, s: Session) -> list[Event]:
        out = self.pass_server(ev, s)
        return out if out.__class__ is list else [out]  # type: ignore[return-value]

    def pass_client(self, ev: Event, s: Session) -> Event | list[Event]:
        """``ev`` through every stage's ``on_client``: one event, or a list."""
        return _pass(ev, s, self._up, self.stages, "on_client")

    def pass_server(self, ev: Event, s: Session) -> Event | list[Event]:
        """``ev`` through every stage's ``on_server``, nearest the upstream first."""
        return _pass(ev, s, self._down, self.reverse, "on_server")

    def open(self, s: Session) -> None:
        for st in self.stages:
            hook = getattr(st, "on_open", None)
            if hook:
                hook(s)

    def tick(self, now: float, s: Session) -> None:
        for st in self.tickers:
            st.on_tick(now, s)

    def client_gone(self, s: Session) -> None:
        for st in self.stages:
            hook = getattr(st, "on_client_gone", None)
            if hook:
                hook(s)

    def awaiting(self, s: Session) -> bool:
        return any(st.awaiting_upstream(s) for st in self.waiters)

    def close(self, s: Session) -> None:
        for st in self.stages:
            hook = getattr(st, "on_close", None)
            if hook:
                hook(s)
