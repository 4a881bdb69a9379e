"""The relay: one pump per direction between two endpoints.

It knows nothing about event types.  Each pump reads an event, runs it
through the stage chain and writes what comes out; anything the stages asked
for (replies, injected events, a close) is carried out right after.  The
first side to finish ends the session, and close codes are mapped once, here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ..events import Event, error_event
from .endpoint import Endpoint
from .stage import Chain, Session

log = logging.getLogger("openopen8.relay")

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


class _Stop(Exception):
    def __init__(self, who: str) -> None:
        self.who = who


class Relay:
    def __init__(self, client: Endpoint, upstream: Endpoint, chain: Chain, session: Session,
                 tick_seconds: float = 1.0, settle_seconds: float = 2.0) -> None:
        self.client = client
        self.upstream = upstream
        self.chain = chain
        self.s = session
        self.tick_seconds = tick_seconds
        self.settle_seconds = settle_seconds

    async def _flush(self) -> None:
        s = self.s
        if s.to_upstream:
            out, s.to_upstream = s.to_upstream, []
            for e in out:
                await self._send_up(e)
        if s.to_client:
            out, s.to_client = s.to_client, []
            for e in out:
                await self._send_client(e)
        if s.close_request is not None:
            raise _Stop("gateway")

    async def _send_up(self, e: Event) -> None:
        try:
            await self.upstream.send(e)
        except ConnectionError:
            raise _Stop("upstream") from None

    async def _send_client(self, e: Event) -> None:
        try:
            await self.client.send(e)
        except ConnectionError:
            raise _Stop("client") from None

    async def _client_pump(self) -> str:
        # the hot loop: names bound once, one event through the chain without
        # a list, sent without another coroutine layer
        s, recv, send = self.s, self.client.recv, self.upstream.send
        through = self.chain.pass_client
        mono = time.monotonic
        while True:
            ev = await recv()
            if ev is None:
                return "client"
            s.events_in += 1
            raw = ev.raw
            if raw is not None:
                s.bytes_in += len(raw)
            s.last_client_activity = mono()
            out = through(ev, s)
            try:
                if out.__class__ is list:
                    for e in out:  # type: ignore[union-attr]
                        await send(e)
                else:
                    await send(out)
            except ConnectionError:
                return "upstream"
            if s.to_client or s.to_upstream or s.close_request:
                try:
                    await self._flush()
                except _Stop as stop:
                    return stop.who

    async def _server_pump(self) -> str:
        s, recv, send = self.s, self.upstream.recv, self.client.send
        through = self.chain.pass_server
        while True:
            ev = await recv()
            if ev is None:
                return "upstream"
            s.events_out += 1
            # an in-process upstream hands over dicts: its text is made
            # here once and reused when the event is sent on
            raw = ev.raw
            s.bytes_out += len(raw if raw is not None else ev.text)
            out = through(ev, s)
            try:
                if out.__class__ is list:
                    for e in out:  # type: ignore[union-attr]
                        await send(e)
                else:
                    await send(out)
            except ConnectionError:
                return "client"
            if s.to_client or s.to_upstream or s.close_request:
                try:
                    await self._flush()
                except _Stop as stop:
                    return stop.who

    async def _ticker(self) -> str:
        s, tick = self.s, self.tick_seconds
        loop = asyncio.get_running_loop()
        try:
            while True:
                # on the loop clock's multiples of the tick: every session's
                # tick falls in one loop iteration, so N sessions cost one
                # wake-up a tick instead of N (~150 us each on a quiet core)
                await asyncio.sleep(tick - loop.time() % tick)
                self.chain.tick(time.monotonic(), s)
                if s.to_client or s.to_upstream or s.close_request:
                    await self._flush()
        except _Stop as stop:
            return stop.who

    async def run(self) -> Outcome:
        s = self.s
        self.chain.open(s)
        tasks = [asyncio.ensure_future(self._client_pump()),
                 asyncio.ensure_future(self._server_pump())]
        if self.chain.tickers:
            tasks.append(asyncio.ensure_future(self._ticker()))
        try:
            try:
                if s.to_client or s.to_upstream or s.close_request:
                    await self._flush()
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                who = next(iter(done)).result()
            except _Stop as stop:
                who = stop.who
            except asyncio.CancelledError:
                who = "shutdown"
            except Exception:  # noqa: BLE001 - a bug in a stage must not leak the sockets
                log.exception("relay %s failed", s.id)
                who = "error"
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        outcome = await self._finish(who)
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
                await self._try_send(error_event(
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
                await self._try_send_up(e)
            for e in s.to_client:
                await self._try_send(e)
            s.to_upstream.clear()
            s.to_client.clear()
            await client.close(code, reason)
            await self._settle()
            await upstream.close(NORMAL)
            return Outcome("gateway", code, reason)
        if who == "shutdown":
            await self._try_send(error_event(
                "The gateway is restarting; reconnect to start a new session.",
                type="server_error", code="server_shutting_down"))
            await client.close(RESTART, "gateway shutting down")
            await self._settle()
            await upstream.close(NORMAL)
            return Outcome("shutdown", RESTART, "gateway shutting down")
        await self._try_send(error_event("Internal gateway error.", type="server_error",
                                         code="internal_error"))
        await upstream.close(NORMAL)
        await client.close(INTERNAL, "internal error")
        return Outcome("error", INTERNAL, "internal error")

    async def _settle(self) -> None:
        """The client is gone (or was sent away): let stages see the upstream
        through what they still wait for -- a response in flight, whose usage
        the upstream bills -- for at most ``settle_seconds``.  Events read
        here reach no client."""
        s, chain, upstream = self.s, self.chain, self.upstream
        try:
            chain.client_gone(s)
            s.to_client.clear()
            if not (s.to_upstream or chain.awaiting(s)):
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settle_seconds
            while True:
                out, s.to_upstream = s.to_upstream, []
                for e in out:
                    await asyncio.wait_for(upstream.send(e), max(0.0, deadline - loop.time()))
                if not chain.awaiting(s):
                    return
                ev = await asyncio.wait_for(upstream.recv(), max(0.0, deadline - loop.time()))
                if ev is None:
                    return
                chain.server(ev, s)
                s.to_client.clear()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:  # noqa: BLE001 - a stage bug must not keep the upstream open
            log.exception("settling session %s failed", s.id)

    async def _try_send(self, ev: Event) -> None:
        try:
            await asyncio.wait_for(self.client.send(ev), 2)
        except Exception:  # noqa: BLE001
            pass

    async def _try_send_up(self, ev: Event) -> None:
        try:
            await asyncio.wait_for(self.upstream.send(ev), 2)
        except Exception:  # noqa: BLE001
            pass
