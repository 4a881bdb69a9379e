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

A stage that only *counts* some event type may say so: ``watch_client(t, s)``
/ ``watch_server(t, s)`` return a function that reads the frame of such an
event as it came off the wire (``fn(data: bytes)``, UTF-8 JSON: no change to
the event and no action on the session but ``s.rechain()``, which sends the
type back through the full path from the next event on), or None.  When
every stage that sees a type watches it, the chain offers the relay a *lane*
for that type (:attr:`Chain.on_lane`): the relay then forwards those frames
as they came, without an :class:`Event`, calling the watchers on the way --
the audio appends and deltas that are nearly all of a conversation's frames.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Union

import orjson

from ..events import Event, error_event

log = logging.getLogger("openopen8.relay")

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
    #: of those events, the ones that took a lane (known when the session ends)
    lane_in: int = 0
    lane_out: int = 0
    last_client_activity: float = field(default_factory=time.monotonic)
    # free-form scratch space for stages that need to share facts
    # (e.g. the client's audio rate); keyed by stage name
    facts: dict[str, Any] = field(default_factory=dict)
    # actions requested by stages, drained by the relay
    to_client: list[Event] = field(default_factory=list)
    to_upstream: list[Event] = field(default_factory=list)
    close_request: tuple[int, str] | None = None
    #: the chain the session runs through (set by ``Chain.open``)
    chain: Any = None
    closed_by: str | None = None
    close_code: int | None = None    # the code the client got, known at on_close

    def reply(self, ev: Event) -> None:
        self.to_client.append(ev)

    def inject(self, ev: Event) -> None:
        self.to_upstream.append(ev)

    def close(self, code: int, reason: str = "") -> None:
        if self.close_request is None:
            self.close_request = (code, reason)

    def rechain(self) -> None:
        """A stage's ``sees_client``/``sees_server`` answers changed."""
        if self.chain is not None:
            self.chain.invalidate()


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
    """``ev`` through ``hooks`` -- ``(hook, position)`` pairs of the stages
    that want to see its type; the single-event fast path builds no list.
    An event a stage replaced with one of another type, or with several,
    goes on through every later stage (they choose by its own type)."""
    cur = ev
    for hook, pos in hooks:
        out = hook(cur, s)
        if out is not cur:
            if out is None:
                return []
            if not isinstance(out, Event):
                return [e for item in out for e in _run(item, stages[pos + 1:], attr, s)]
            if out.type != cur.type:
                rest = _run(out, stages[pos + 1:], attr, s)
                return rest[0] if len(rest) == 1 else rest
            cur = out
    return cur


def _event_id(ev: Event) -> str | None:
    """The client's ``event_id`` of an event, if it has a readable one."""
    try:
        eid = ev.data.get("event_id") if ev.invalid is None else None
    except Exception:  # noqa: BLE001 - not JSON, not a dict...
        return None
    return eid if isinstance(eid, str) else None


def _sees(stage: Any, attr: str, t: str | None, s: Session) -> bool:
    fn = getattr(stage, attr, None)
    return True if fn is None else bool(fn(t, s))


def _watchers(stages: list[Any], hooks: tuple, attr: str, t: str,
              s: Session) -> tuple[Callable[[bytes], None], ...] | None:
    """The watch functions of the stages in ``hooks``, or None unless every
    one of them only watches ``t``."""
    out = []
    for _, pos in hooks:
        watch = getattr(stages[pos], attr, None)
        fn = watch(t, s) if watch is not None else None
        if fn is None:
            return None
        out.append(fn)
    return tuple(out)


class Chain:
    """An ordered list of stages, applied client->upstream in order and
    upstream->client in reverse.

    The relay calls :meth:`pass_client` / :meth:`pass_server`, which return
    the one event that comes out (the common case: no list is built) or a
    list when a stage dropped the event or made several.

    Most events concern few stages (an audio append: metering only), so a
    stage may say which event types it must see -- ``sees_client(type, s)``
    / ``sees_server(type, s)``; without them it sees everything -- and the
    chain keeps, per event type, the tuple of hooks to call.  A stage whose
    answer changes (a format switch, a quota stop) calls ``s.rechain()``.
    :meth:`client` / :meth:`server` always return a list (for tests and
    tools).

    Lanes: when the relay sets :attr:`on_lane` (``fn(up, type, watchers)``)
    and :attr:`on_lanes_reset`, the chain tells it, as it first meets a
    type, that every stage seeing that type only watches it (``watchers``
    may be empty: nobody sees it); :meth:`invalidate` revokes every lane
    offered so far."""

    def __init__(self, stages: list[Any]) -> None:
        self.stages = list(stages)
        self.reverse = list(reversed(self.stages))
        self.tickers = [st for st in self.stages if hasattr(st, "on_tick")]
        self.waiters = [st for st in self.stages if hasattr(st, "awaiting_upstream")]
        self._up: dict[str | None, tuple] = {}
        self._down: dict[str | None, tuple] = {}
        self._s: Session | None = None     # the session the hook tuples were made for
        self.on_lane: Callable[[bool, str, tuple], None] | None = None
        self.on_lanes_reset: Callable[[], None] | None = None

    def invalidate(self) -> None:
        self._up.clear()
        self._down.clear()
        if self.on_lanes_reset is not None:
            self.on_lanes_reset()

    def _bind(self, s: Session) -> None:
        self.invalidate()
        self._s = s
        s.chain = self

    def _hooks(self, t: str | None, s: Session, up: bool) -> tuple:
        stages, attr, sees = ((self.stages, "on_client", "sees_client") if up
                              else (self.reverse, "on_server", "sees_server"))
        hooks = tuple((getattr(st, attr), i) for i, st in enumerate(stages)
                      if _sees(st, sees, t, s))
        (self._up if up else self._down)[t] = hooks
        if self.on_lane is not None and t is not None:
            watchers = _watchers(stages, hooks, "watch_client" if up else "watch_server", t, s)
            if watchers is not None:
                self.on_lane(up, t, watchers)
        return hooks

    def client(self, ev: Event, s: Session) -> list[Event]:
        out = self.pass_client(ev, s)
        return out if out.__class__ is list else [out]  # type: ignore[return-value]

    def server(self, ev: Event, s: Session) -> list[Event]:
        out = self.pass_server(ev, s)
        return out if out.__class__ is list else [out]  # type: ignore[return-value]

    def pass_client(self, ev: Event, s: Session) -> Event | list[Event]:
        """``ev`` through the ``on_client`` of every stage that sees its type.

        A client event never ends the session by making a stage fail: text
        that is not JSON (found when a stage parses it) is answered with
        ``invalid_json``, as OpenAI answers it; any other exception is a
        gateway bug -- logged with its traceback -- and the client is told
        the event was not processed.  Either way the event is dropped and
        the session goes on."""
        if s is not self._s:
            self._bind(s)
        try:
            hooks = self._up.get(ev.type)
            if hooks is None:
                hooks = self._hooks(ev.type, s, True)
            return _pass(ev, s, hooks, self.stages, "on_client") if hooks else ev
        except orjson.JSONDecodeError as exc:
            s.reply(error_event(f"The event is not valid JSON ({exc}).", code="invalid_json"))
        except Exception:  # noqa: BLE001 - a stage's bug must not end the session
            log.exception("session %s: a stage failed on a client %s event", s.id, ev.type)
            s.reply(error_event(
                f"The gateway could not process this {ev.type!s} event (an internal error, "
                "logged); it was not forwarded. The session continues.",
                type="server_error", code="event_not_processed", event_id=_event_id(ev)))
        return []

    def pass_server(self, ev: Event, s: Session) -> Event | list[Event]:
        """``ev`` through ``on_server`` of the stages that see it, nearest the upstream first."""
        if s is not self._s:
            self._bind(s)
        hooks = self._down.get(ev.type)
        if hooks is None:
            hooks = self._hooks(ev.type, s, False)
        return _pass(ev, s, hooks, self.reverse, "on_server") if hooks else ev

    def open(self, s: Session) -> None:
        """``on_open`` of every stage; then the session's *preamble*
        (``s.facts["preamble"]``: GA client events the gateway sends first --
        a client secret's session) goes through every stage past the client's
        edge (stages with ``edge == "client"`` judge what the client sent)
        into ``s.to_upstream``, ahead of anything the client sends."""
        self._bind(s)
        for st in self.stages:
            hook = getattr(st, "on_open", None)
            if hook:
                hook(s)
        preamble = s.facts.pop("preamble", None)
        if preamble:
            inner = [st for st in self.stages if getattr(st, "edge", None) != "client"]
            for ev in preamble:
                s.to_upstream.extend(_run(ev, inner, "on_client", s))

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

    def settle_fallback(self, ev: Event, s: Session) -> None:
        """While settling, an upstream event the chain failed on still goes to
        the stages that wait for the upstream (metering, which knows both
        dialects' names), each on its own: a bug elsewhere must not cost a
        response's usage."""
        for st in self.waiters:
            try:
                st.on_server(ev, s)
            except Exception:  # noqa: BLE001
                log.exception("session %s: %s failed on an upstream %s event", s.id,
                              getattr(st, "name", st), ev.type)

    def close(self, s: Session) -> None:
        for st in self.stages:
            hook = getattr(st, "on_close", None)
            if hook:
                hook(s)
