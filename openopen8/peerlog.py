"""What peers cause is logged in one line, and not without end.

A malformed request or WebSocket frame is the client's doing, not the
gateway's: it is worth one INFO line (an operator may be debugging that
client), never an ERROR with a traceback -- a 52-byte bad request used to
write a 600-byte traceback (aiohttp's ``Error handling request``), and a bad
frame an ERROR from picows.  And whatever a client can trigger at will, it
can trigger a million times: each *kind* of line passes at most
:data:`LINES` times per :data:`INTERVAL` seconds, then the rest are counted
and reported as one ``suppressed K similar`` line.  Tracebacks stay for the
gateway's own bugs (a 500, an exception in a listener), which are not
throttled.

Three ways in, because the lines come from three places:

* :func:`note` -- the gateway's own lines about clients (refusals);
* :class:`_AiohttpBadRequests` -- a filter on ``aiohttp.server`` that turns
  its traceback for a request it could not parse (a 4xx
  ``HttpProcessingError``) into one line;
* :func:`ws_logger` -- the logger handed to picows: its protocol errors
  ("WS parser error", a frame the listener refused) become one line at
  INFO for a client, at WARNING for an upstream (the operator's business).

A line never echoes request bytes: aiohttp and picows quote the offending
input (``b'Authorization: Bearer …'`` for a header line that is too long),
so only the message up to such a quote is kept.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Callable, Hashable

from aiohttp.http_exceptions import HttpProcessingError, InvalidURLError

#: at most this many lines of one kind per INTERVAL seconds
LINES = 10
INTERVAL = 10.0
#: kinds remembered at most (kinds are few: codes, exception classes)
_MAX_KINDS = 1024

#: where lines about what clients did go (and upstreams, below)
log = logging.getLogger("openopen8.client")
_UPSTREAM_LOG = logging.getLogger("openopen8.upstream")


class Throttle:
    """At most ``lines`` records per ``interval`` seconds per kind; the rest
    are counted, and reported in one line when the interval is over (at
    once when an event loop runs, else before the kind's next line)."""

    def __init__(self, lines: int = LINES, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lines = lines
        self.interval = interval
        self._clock = clock
        #: kind -> [window start, lines passed, lines suppressed, logger, level]
        self._kinds: dict[Hashable, list[Any]] = {}

    def log(self, logger: logging.Logger, level: int, kind: Hashable, msg: str,
            *args: Any) -> None:
        if not logger.isEnabledFor(level):
            return
        now = self._clock()
        state = self._kinds.get(kind)
        if state is None or now - state[0] >= self.interval:
            if state is not None:
                self._report(kind, state)
            elif len(self._kinds) >= _MAX_KINDS:
                self._kinds.clear()
            state = self._kinds[kind] = [now, 0, 0, logger, level]
        if state[1] < self.lines:
            state[1] += 1
            logger.log(level, msg, *args, stacklevel=3)    # the record names note()'s caller
            return
        state[2] += 1
        if state[2] == 1:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            loop.call_later(state[0] + self.interval - now, self._due, kind, state)

    def _due(self, kind: Hashable, state: list[Any]) -> None:
        if self._kinds.get(kind) is state:
            self._report(kind, state)

    def _report(self, kind: Hashable, state: list[Any]) -> None:
        if state[2]:
            state[3].log(state[4], "suppressed %d similar line%s (%s) in %g s", state[2],
                         "s" if state[2] != 1 else "", _kind_text(kind), self.interval)
            state[2] = 0


def _kind_text(kind: Hashable) -> str:
    return " ".join(map(str, kind)) if isinstance(kind, tuple) else str(kind)


#: the one throttle of client-caused lines
THROTTLE = Throttle()


def note(logger: logging.Logger, kind: Hashable, msg: str, *args: Any,
         level: int = logging.INFO) -> None:
    """Log one line about something a client did, throttled per ``kind``."""
    THROTTLE.log(logger, level, kind, msg, *args)


# a quote of the input in aiohttp's and picows' messages: ": b'…", "bytearray(b'…", " b'…"
_QUOTE = re.compile(r":?\s*(?:bytearray\()?\bb['\"]")


def reason(message: Any, limit: int = 120) -> str:
    """A library's error message without the input it quotes: its first line,
    cut where it starts quoting bytes."""
    text = str(message).strip().split("\n", 1)[0]
    match = _QUOTE.search(text)
    if match:
        text = text[:match.start()]
    return text.rstrip(" :")[:limit] or "-"


# ---- aiohttp ---------------------------------------------------------------------

class _AiohttpBadRequests(logging.Filter):
    """On ``aiohttp.server``: its ``Error handling request`` for a request it
    could not parse (4xx) becomes one throttled INFO line; a 500 keeps its
    traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= (exc.code or 0) < 500:
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
        # a URL's message may be the URL itself, query (?token=…) and all
        text = "invalid URL" if isinstance(exc, InvalidURLError) else reason(exc.message)
        note(log, ("bad request", type(exc).__name__), "bad request from %s: %d %s (%s)",
             peer, exc.code, text, type(exc).__name__)
        return False


_installed = False


def install() -> None:
    """Put the filter on aiohttp's server logger (once)."""
    global _installed
    if not _installed:
        logging.getLogger("aiohttp.server").addFilter(_AiohttpBadRequests())
        _installed = True


# ---- picows ----------------------------------------------------------------------

#: picows' lines about a peer that broke the WebSocket protocol (ERROR in picows)
_PROTOCOL_ERRORS = ("WS parser error", "on_ws_frame raised WSProtocolError")


class _WsLog(logging.LoggerAdapter):
    """The logger picows gets for one connection.  A LoggerAdapter (not a
    Logger) also spares picows making a child Logger per connection."""

    def __init__(self, logger: logging.Logger, side: str, peer: str, level: int,
                 to: logging.Logger) -> None:
        super().__init__(logger, {})
        self._side = side
        self._peer = peer
        self._level = level
        self._to = to

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if (level >= logging.ERROR and isinstance(msg, str) and msg.startswith(_PROTOCOL_ERRORS)
                and args and isinstance(args[0], tuple)):
            code, text = (tuple(args[0]) + (None, None))[:2]
            try:
                code = int(code)
            except (TypeError, ValueError):
                code = 1002
            note(self._to, (self._side, "protocol error", code),
                 "%s %s broke the WebSocket protocol: %s; closed with %d", self._side,
                 self._peer or "-", reason(text), code, level=self._level)
            return
        super().log(level, msg, *args, **kwargs)


def ws_logger(logger: logging.Logger, peer: str, *, upstream: bool = False) -> logging.LoggerAdapter:
    """The logger for picows on one connection with ``peer``: a client's
    protocol errors are one INFO line, an upstream's one WARNING line."""
    if upstream:
        return _WsLog(logger, "upstream", peer, logging.WARNING, _UPSTREAM_LOG)
    return _WsLog(logger, "client", peer, logging.INFO, log)
