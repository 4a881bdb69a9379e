"""The relay: events pushed from one endpoint, through the stage chain, to the other.

It knows nothing about event types.  Each endpoint calls back with what it
read; the event runs through the chain and what comes out is sent at once;
anything the stages asked for (replies, injected events, a close) is carried
out right after.  The first side to finish ends the session, and close codes
are mapped once, here.

Between two WebSockets, an event type that every stage seeing it only
watches (the chain says so, see ``relay/stage.py``) gets a lane: its frames
go from one socket to the other as the bytes they arrived as, past the
watchers, without an :class:`Event` or a call into the relay -- a few
operations per audio frame instead of a walk through the chain.  Lanes close
whenever the chain changes and when the session ends; the full path is
always the fallback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ..events import Event, error_event
from .endpoint import Endpoint, Lanes, WsEndpoint, as_endpoint
from .stage import Chain, Session

log = logging.getLogger("openopen8.relay")
_mono = time.monotonic

# Close codes with meaning (RFC 6455 + OpenAI's own)
NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
INTERNAL = 1011
RESTART = 1012
TRY_AGAIN = 1013
BAD_GATEWAY = 1014

#: upstream close codes passed to the client as they are: normal end,
#: OpenAI's 60-minute cap (1001), its auth (3000) and request (4000) errors
_PASS_THROUGH = {NORMAL, GOING_AWAY}


def _upstream_code_for_client(code: int | None) -> int | None:
    """The client close code for an upstream close, or None when the close
    was not meaningful (abnormal/internal): the client then gets an ``error``
    event and 1014."""
    if code is None:
        return None
    if code in _PASS_THROUGH or 3000 <= code <= 4999:
        return code
    return None


@dataclass
class Outcome:
    closed_by: str          # client | upstream | gateway | shutdown | error
    client_code: int
    reason: str


class Relay:
    """One session between two endpoints.

    Events are pushed by the endpoints' read callbacks and leave through the
    other endpoint's ``send`` in the same call: the hot path is one function
    per direction, synchronous, with nothing queued on the way.  A full
    write buffer on one side pauses reading on the other (back-pressure
    reaches the peer through TCP).  The first side to end decides the
    outcome; :meth:`run` then closes both with codes that mean something to
    each."""

    def __init__(self, client: Endpoint, upstream: Endpoint, chain: Chain, session: Session,
                 tick_seconds: float = 1.0, settle_seconds: float = 2.0) -> None:
        self.client = as_endpoint(client)
        self.upstream = as_endpoint(upstream)
        self.chain = chain
        self.s = session
        self.tick_seconds = tick_seconds
        self.settle_seconds = settle_seconds
        self._end: asyncio.Future[str] | None = None
        self._ending = False
        self._client_gone = False
        self._upstream_gone = False
        self._settled: asyncio.Future[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        #: per direction; the endpoints read them, the relay alone writes them
        self._lanes_up = Lanes()
        self._lanes_down = Lanes()
        #: client events counted at the last tick (activity is noticed there)
        self._ticked_in = 0

    # ----------------------------------------------------------- hot path

    def _from_client(self, ev: Event) -> None:
        if self._ending:
            return
        s = self.s
        s.events_in += 1
        raw = ev.raw
        if raw is not None:
            s.bytes_in += len(raw)
        try:
            out = self._pass_client(ev, s)
            if out.__class__ is list:
                for e in out:  # type: ignore[union-attr]
                    self._send_up(e)
            else:
                self._send_up(out)
            if s.to_client or s.to_upstream or s.close_request:
                self._act()
        except Exception:  # noqa: BLE001 - a bug in a stage must not leak the sockets
            log.exception("relay %s failed on a client event", s.id)
            self._stop("error")

    def _from_upstream(self, ev: Event) -> None:
        s = self.s
        if self._ending:
            self._after_end(ev)
            return
        s.events_out += 1
        # an in-process upstream hands over dicts: its text is made here
        # once and reused when the event is sent on
        raw = ev.raw
        s.bytes_out += len(raw if raw is not None else ev.text)
        try:
            out = self._pass_server(ev, s)
            if out.__class__ is list:
                for e in out:  # type: ignore[union-attr]
                    self._send_client(e)
            else:
                self._send_client(out)
            if s.to_client or s.to_upstream or s.close_request:
                self._act()
        except Exception:  # noqa: BLE001
            log.exception("relay %s failed on an upstream event", s.id)
            self._stop("error")

    # ------------------------------------------------------------- lanes

    def _on_lane(self, up: bool, t: str, watchers: tuple) -> None:
        """The chain says every stage that sees ``t`` (one way) only watches it."""
        if self._ending:
            return
        if up:
            self._lanes_up.open(t, watchers, self.upstream)
        else:
            self._lanes_down.open(t, watchers, self.client)

    def _lane_failed(self) -> None:
        log.exception("relay %s failed watching an event", self.s.id)
        self._stop("error")

    def _count_lanes(self) -> None:
        """Add what went through lanes to the session's counters."""
        s, c, u = self.s, self.client, self.upstream
        if isinstance(c, WsEndpoint):
            s.lane_in += c.lane_events
            s.events_in += c.lane_events
            s.bytes_in += c.lane_bytes
            c.lane_events = c.lane_bytes = 0
        if isinstance(u, WsEndpoint):
            s.lane_out += u.lane_events
            s.events_out += u.lane_events
            s.bytes_out += u.lane_bytes
            u.lane_events = u.lane_bytes = 0

    def _close_lanes(self) -> None:
        self._lanes_up.clear()
        self._lanes_down.clear()

    def _act(self) -> None:
        """Carry out what the stages asked for."""
        s = self.s
        if s.to_upstream:
            out, s.to_upstream = s.to_upstream, []
            for e in out:
                self._send_up(e)
        if s.to_client:
            out, s.to_client = s.to_client, []
            for e in out:
                self._send_client(e)
        if s.close_request is not None:
            self._stop("gateway")

    def _after_end(self, ev: Event) -> None:
        """An upstream event after the session ended for the client: the
        stages still see it (a response in flight is still billed); its
        output goes nowhere."""
        s = self.s
        try:
            self.chain.server(ev, s)
        except Exception:  # noqa: BLE001 - whatever broke, the usage must still be seen
            log.exception("session %s: a stage failed on an upstream %s event while settling",
                          s.id, ev.type)
            self.chain.settle_fallback(ev, s)
        try:
            if s.to_upstream:
                out, s.to_upstream = s.to_upstream, []
                for e in out:
                    self._send_up(e)
        except Exception:  # noqa: BLE001
            log.exception("settling session %s failed", s.id)
            self._upstream_gone = True
        if self._client_gone:
            s.to_client.clear()
        self._maybe_settled()

    # ------------------------------------------------ endpoint callbacks

    def _client_closed(self) -> None:
        self._stop("client")

    def _upstream_closed(self) -> None:
        self._upstream_gone = True
        if self._ending:
            self._maybe_settled()
        else:
            self._stop("upstream")

    def _client_writable(self, ok: bool) -> None:
        if self._ending:
            return
        if ok:
            self.upstream.resume_reading()
        else:
            self.upstream.pause_reading()

    def _upstream_writable(self, ok: bool) -> None:
        if ok:
            self.client.resume_reading()
        else:
            self.client.pause_reading()

    def _stop(self, who: str) -> None:
        if not self._ending:
            self._ending = True
            self._close_lanes()
            self.upstream.resume_reading()
            end = self._end
            if end is not None and not end.done():
                end.set_result(who)

    def _maybe_settled(self) -> None:
        f = self._settled
        if f is not None and not f.done() and (self._upstream_gone or not self.chain.awaiting(self.s)):
            f.set_result(None)

    def _tick(self) -> None:
        if self._ending:
            return
        s = self.s
        now = _mono()
        seen = s.events_in + getattr(self.client, "lane_events", 0)
        if seen != self._ticked_in:   # the client was active since the last tick
            self._ticked_in = seen
            s.last_client_activity = now
        try:
            self.chain.tick(now, s)
            if s.to_client or s.to_upstream or s.close_request:
                self._act()
        except Exception:  # noqa: BLE001
            log.exception("relay %s failed on a tick", s.id)
            self._stop("error")
            return
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        # on the loop clock's multiples of the tick: every session's tick falls
        # in one loop iteration, so N sessions cost one wake-up a tick, not N
        loop, tick = asyncio.get_running_loop(), self.tick_seconds
        now = loop.time()
        self._tick_handle = loop.call_at(now - now % tick + tick, self._tick)

    # --------------------------------------------------------- lifecycle

    async def run(self) -> Outcome:
        s = self.s
        self._end = end = asyncio.get_running_loop().create_future()
        self._send_up = self.upstream.send
        self._send_client = self.client.send
        self._pass_client = self.chain.pass_client
        self._pass_server = self.chain.pass_server
        lanes = isinstance(self.client, WsEndpoint) and isinstance(self.upstream, WsEndpoint)
        if lanes:
            self.chain.on_lane = self._on_lane
            self.chain.on_lanes_reset = self._close_lanes
        try:
            self.chain.open(s)
            self._act()
            if lanes:
                self.upstream.attach(self._from_upstream, self._upstream_closed,  # type: ignore[call-arg]
                                     self._upstream_writable, self._lanes_down,
                                     self._lane_failed)
                self.client.attach(self._from_client, self._client_closed,  # type: ignore[call-arg]
                                   self._client_writable, self._lanes_up, self._lane_failed)
            else:
                self.upstream.attach(self._from_upstream, self._upstream_closed,
                                     self._upstream_writable)
                self.client.attach(self._from_client, self._client_closed,
                                   self._client_writable)
            if self.chain.tickers and not self._ending:
                self._schedule_tick()
        except Exception:  # noqa: BLE001
            log.exception("relay %s failed to start", s.id)
            self._stop("error")
        try:
            who = await end
        except asyncio.CancelledError:
            self._stop("shutdown")
            who = "shutdown"
        finally:
            if self._tick_handle is not None:
                self._tick_handle.cancel()
        # if closing fails (or the task is cancelled again), the session still
        # ends in the ledger with its usage so far
        outcome = Outcome("error", INTERNAL, "internal error")
        try:
            outcome = await self._finish(who)
        finally:
            self._count_lanes()
            s.closed_by = outcome.closed_by
            s.close_code = outcome.client_code
            try:
                self.chain.close(s)
            except Exception:  # noqa: BLE001
                log.exception("stage close hook failed for %s", s.id)
        return outcome

    async def _finish(self, who: str) -> Outcome:
        """Close both sides with codes that mean something to each."""
        client, upstream, s = self.client, self.upstream, self.s
        if who == "client":
            code = client.close_code or NORMAL
            await self._settle()
            await upstream.close(NORMAL)
            return Outcome("client", code, client.close_reason)
        if who == "upstream":
            up_code = upstream.close_code
            mapped = _upstream_code_for_client(up_code)
            if mapped is None:
                reason = f"upstream closed the connection unexpectedly (code {up_code})"
                self.client.send(error_event(
                    "The upstream channel closed the connection unexpectedly "
                    f"(code {up_code}).", type="server_error", code="upstream_closed"))
                await client.close(BAD_GATEWAY, "upstream failure")
                return Outcome("upstream", BAD_GATEWAY, reason)
            await client.close(mapped, upstream.close_reason)
            return Outcome("upstream", mapped, upstream.close_reason)
        if who == "gateway":
            code, reason = s.close_request or (POLICY, "")
            # anything the stage queued before asking to close still goes out
            for e in s.to_upstream:
                self.upstream.send(e)
            for e in s.to_client:
                self.client.send(e)
            s.to_upstream.clear()
            s.to_client.clear()
            await client.close(code, reason)
            await self._settle()
            await upstream.close(NORMAL)
            return Outcome("gateway", code, reason)
        if who == "shutdown":
            self.client.send(error_event(
                "The gateway is restarting; reconnect to start a new session.",
                type="server_error", code="server_shutting_down"))
            await client.close(RESTART, "gateway shutting down")
            await self._settle()
            await upstream.close(NORMAL)
            return Outcome("shutdown", RESTART, "gateway shutting down")
        # a gateway bug: the client learns it at once; responses in flight are
        # still cancelled and their usage settled before the upstream goes
        self.client.send(error_event("Internal gateway error.", type="server_error",
                                     code="internal_error"))
        await client.close(INTERNAL, "internal error")
        await self._settle()
        await upstream.close(NORMAL)
        return Outcome("error", INTERNAL, "internal error")

    async def _settle(self) -> None:
        """The client is gone (or was sent away): let stages see the upstream
        through what they still wait for -- a response in flight, whose usage
        the upstream bills -- for at most ``settle_seconds``.  Events read
        here reach no client."""
        s, chain = self.s, self.chain
        try:
            chain.client_gone(s)
            self._client_gone = True
            s.to_client.clear()
            if s.to_upstream:
                out, s.to_upstream = s.to_upstream, []
                for e in out:
                    self.upstream.send(e)
            if self._upstream_gone or not chain.awaiting(s):
                return
            self._settled = asyncio.get_running_loop().create_future()
            self.upstream.resume_reading()
            await asyncio.wait_for(self._settled, self.settle_seconds)
        except TimeoutError:
            pass
        except Exception:  # noqa: BLE001 - a stage bug must not keep the upstream open
            log.exception("settling session %s failed", s.id)
