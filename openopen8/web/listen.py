"""The listening socket: aiofastnet's server, whose accept backs off when the
process runs out of file descriptors.

Why this module exists: app.py listens with ``aiofastnet.create_server`` so
that accepted sockets get picows' own transports (less CPU per frame than
uvloop's streams, bench/relay.py).  But aiofastnet 1.2.0 mishandles
``accept()`` failing with EMFILE: its back-off raises AttributeError, the
listening socket stays registered, and the loop spins (56-98% of a core
measured) writing two ERROR tracebacks per turn, megabytes a second (the
defect report below has the details).

Why this shape: the smallest change that keeps everything else aiofastnet's
-- binding, ``close()``, and the transports accepted sockets get (so the cost
per frame is unchanged) -- is to replace the one callback that accepts.  The
server aiofastnet builds is re-classed as :class:`BackoffServer` before it
starts serving; the Proactor fallback (Windows) is asyncio's own server and is
left alone.

What the gateway does when out of descriptors (EMFILE, ENFILE, ENOBUFS,
ENOMEM on ``accept()``): it stops accepting for :data:`PAUSE` seconds, then
tries once more, over and over, until an accept succeeds.  Connections it
already has keep being served; clients that connect meanwhile wait in the
kernel's backlog and are accepted once descriptors free up.  One WARNING at
most every :data:`LOG_EVERY` seconds says how many accepts failed and what
to do; one INFO line says when accepting works again.

Why it also closes connections then: pausing alone left every descriptor
with whoever took it first.  Idle sockets and slowloris heads hold theirs
until the front door's 15 s head timeout, so /healthz and new clients waited
15 s in the backlog (and 15 s more for each further limit's worth of idle
connections queued before them).  A real client sends its request head as
soon as it connects; a connection that has held a descriptor for
:data:`SHED_AFTER` seconds without one is the cheapest to lose.  So when
accept() fails for want of descriptors (EMFILE, ENFILE), the server closes
the oldest such connections -- at most :data:`SHED_AT_LEAST` or a tenth of
them per back-off -- and tries again after :data:`SHED_PAUSE`.  Only
connections still waiting for their head are candidates (:class:`Waiting`):
a running session, a request being answered, a Realtime request in
admission are never closed.  Each closed connection lived at least
:data:`SHED_AFTER` seconds, so this cannot spin.  The count goes in the
same once-per-interval WARNING.

Why :func:`raise_descriptor_limit` (called by ``serve``): the usual soft
limit is 1024 while the hard limit is far higher, and every session holds
two descriptors (its client's and its upstream's).  Raising the soft limit
to the hard one at start-up is what Go's runtime, nginx
(worker_rlimit_nofile) and others do; start-up logs the limit, and warns
when it stays low.

Upstream defect report (aiofastnet 1.2.0; we cannot reach GitHub from here,
so it is written down for whoever files it):

    Title: Server._accept_connection spins on EMFILE: ``socket`` has no
    ``remove_reader``

    Where: aiofastnet/api_utils.py, ``Server._accept_connection``, the
    ``except OSError`` branch for EMFILE/ENFILE/ENOBUFS/ENOMEM.

    What fails: the branch calls
    ``listening_sock.remove_reader(listening_sock.fileno())``; a
    ``socket.socket`` has no ``remove_reader``, so AttributeError escapes
    after ``call_exception_handler`` has logged the OSError.  The reader is
    never removed and the retry is never scheduled.  Readiness is level-
    triggered and the backlog still holds the connection, so the loop calls
    ``_accept_connection`` again at once, on every turn: the loop busy-spins
    and each turn logs two ERROR tracebacks (one for the OSError, one for
    the AttributeError).  Measured with uvloop under RLIMIT_NOFILE 256
    and 300 idle clients: 98% of a core and 82 MB of log in 9 s.

    Two more faults in the same branch show once the first is fixed:
    (1) it does not ``return`` after scheduling the retry, so the
    ``for _ in range(self._backlog + 1)`` loop calls ``accept()`` again,
    fails again, and schedules up to backlog+1 retries per readiness event
    (CPython's asyncio had the same, gh-151615, fixed by returning);
    (2) the retry, ``_start_serving_one_listener``, runs even if the server
    was closed meanwhile: ``add_reader(-1)`` raises ValueError('Invalid file
    descriptor: -1'), once per scheduled retry.

    Minimal reproduction (plain asyncio, no uvloop needed; prints tens of
    thousands of errors in 0.5 s, where 1 is expected):

        import asyncio, os, resource, socket
        import aiofastnet

        async def main():
            loop = asyncio.get_running_loop()
            errors = []
            loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
            server = await aiofastnet.create_server(loop, asyncio.Protocol,
                                                    "127.0.0.1", 0)
            client = socket.create_connection(server.sockets[0].getsockname())
            held = []
            while True:  # use up every descriptor: the accept gets EMFILE
                try:
                    held.append(os.dup(client.fileno()))
                except OSError:
                    break
            await asyncio.sleep(0.5)
            for fd in held:
                os.close(fd)
            print(len(errors), "errors in 0.5 s:",
                  sorted({type(c["exception"]).__name__ for c in errors}))

        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        asyncio.run(main())

    Proposed fix (api_utils.py, the EMFILE branch), then a test that
    exhausts descriptors as above and counts the exception handler's calls:

        self._loop.call_exception_handler({...})        # as today
        self._loop.remove_reader(listening_sock.fileno())  # the loop's, not the socket's
        self._loop.call_later(constants.ACCEPT_RETRY_DELAY,
                              self._resume_listener, listening_sock)
        return                                          # one retry per pause

    def _resume_listener(self, listening_sock):
        if self._sockets is not None:                   # not closed while paused
            self._start_serving_one_listener(listening_sock)

    Optionally, log the back-off without a traceback and at most once per
    interval (running out of descriptors is an operating condition, not a
    bug), as :class:`BackoffServer` does here.

When aiofastnet ships the fix, :class:`BackoffServer` still has to see the
failed accept to make room, so its ``_accept_connection`` stays; only
``_pause``'s back-off could become aiofastnet's (tests/test_fd_exhaustion.py
checks the behaviour either way).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import math
import time
from typing import Any, Callable

import aiofastnet
from aiofastnet.api_utils import Server as _AiofastnetServer

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger("openopen8.listen")

#: seconds accepting pauses after accept() failed for want of resources
#: (asyncio pauses 1 s; shorter lets waiting clients in sooner once
#: descriptors free up, for one accept() call per pause)
PAUSE = 0.5
#: at most one warning per this many seconds while accepting keeps failing
LOG_EVERY = 10.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: failures that closing idle connections can cure
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
#: seconds a connection may hold a descriptor without a complete request head
#: before it may be closed to make room (a real client sends its head at once)
SHED_AFTER = 1.0
#: connections closed per back-off: this many, or a tenth of those waiting
#: if that is more
SHED_AT_LEAST = 16
#: seconds accepting pauses after closing some (their descriptors are free
#: on the loop's next turn): at most 1/SHED_PAUSE rounds a second
SHED_PAUSE = 0.05
#: a soft RLIMIT_NOFILE below this after start-up gets a warning
LOW_NOFILE = 4096
#: what ran out, and what an operator can do about it
_WHY = {
    errno.EMFILE: ("out of file descriptors",
                   "Raise the limit (`ulimit -n`, systemd LimitNOFILE=) or lower the load"),
    errno.ENFILE: ("the system is out of file descriptors",
                   "Raise the system-wide limit (sysctl fs.file-max) or lower the load"),
    errno.ENOMEM: ("out of memory for sockets", "Lower the load or add memory"),
}


class Waiting:
    """Connections that hold a descriptor while they wait for their client to
    say what it wants (a front door until its request head is complete), in
    the order they came: what an accept out of descriptors closes to make room.

    A protocol takes part by having a ``waiting`` attribute (None):
    :func:`create_server` sets it to its server's registry before the
    connection is made.  The protocol calls :meth:`add` in
    ``connection_made`` and :meth:`discard` once its head is complete or its
    connection is lost, and has a ``shed()`` that closes it.  A dict keeps
    the order: one insert and one delete a connection, nothing after that.
    """

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since: dict[Any, float] = {}

    def __len__(self) -> int:
        return len(self._since)

    def add(self, conn: Any) -> None:
        self._since[conn] = time.monotonic()

    def discard(self, conn: Any) -> None:
        self._since.pop(conn, None)

    def shed(self, waited: float, most: int) -> int:
        """Close up to ``most`` connections that have waited ``waited``
        seconds or longer, oldest first; how many were closed."""
        cutoff = time.monotonic() - waited
        oldest = itertools.takewhile(lambda item: item[1] <= cutoff, self._since.items())
        conns = [conn for conn, _ in itertools.islice(oldest, most)]
        for conn in conns:
            del self._since[conn]
            conn.shed()
        return len(conns)


class BackoffServer(_AiofastnetServer):
    """aiofastnet's server with an accept callback that pauses accepting,
    instead of spinning, when accept() fails for want of resources, and
    closes connections that are waiting for nothing to make room."""

    # class defaults: the instance is re-classed, not constructed, here
    _waiting: Waiting | None = None  # set by create_server
    _shed = 0                      # connections closed since the last warning
    _failed = 0                    # accepts failed since the last warning
    _warned_at = -math.inf         # monotonic time of the last warning
    _paused_since: float | None = None  # first failure since the last accept
    _told = False                  # a warning went out since the last "again"

    def _accept_connection(self, listening_sock: Any) -> None:
        # aiofastnet's loop (itself asyncio's), except the resource branch
        for _ in range(self._backlog + 1):
            try:
                conn, _addr = listening_sock.accept()
            except ConnectionAbortedError:
                continue
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise  # the event loop logs it and keeps going
                self._pause(listening_sock, exc)
                return
            if self._paused_since is not None:
                self._accepting_again()
            conn.setblocking(False)
            asyncio.create_task(self._accept_connection2(conn))

    def _pause(self, listening_sock: Any, exc: OSError) -> None:
        loop = self._loop
        loop.remove_reader(listening_sock.fileno())
        shed = 0
        try:
            if exc.errno in _OUT_OF_DESCRIPTORS and self._waiting:
                most = max(SHED_AT_LEAST, len(self._waiting) // 10)
                shed = self._waiting.shed(SHED_AFTER, most)
                self._shed += shed
        finally:   # accepting resumes whatever happened above
            loop.call_later(SHED_PAUSE if shed else PAUSE, self._resume, listening_sock)
        now = time.monotonic()
        if self._paused_since is None:
            self._paused_since = now
        self._failed += 1
        if now - self._warned_at < LOG_EVERY:
            return
        what, advice = _WHY.get(exc.errno, _WHY[errno.ENOMEM])
        detail = exc.strerror
        if exc.errno == errno.EMFILE and resource is not None:
            detail += f"; limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
        since = f" in the last {now - self._warned_at:.0f} s" if self._warned_at > -math.inf else ""
        room = ""
        if exc.errno in _OUT_OF_DESCRIPTORS and self._waiting is not None:
            room = (f"; {self._shed} connection(s) that sent no request within {SHED_AFTER:g} s "
                    f"closed to make room" if self._shed else
                    f"; connections that send no request within {SHED_AFTER:g} s are closed "
                    f"to make room")
        log.warning("%s (%s): %d accept(s) failed%s; accepting pauses %.1f s at a time until "
                    "that changes, running sessions are still served%s. %s",
                    what, detail, self._failed, since, PAUSE, room, advice)
        self._failed = 0
        self._shed = 0
        self._warned_at = now
        self._told = True

    def _resume(self, listening_sock: Any) -> None:
        if self._sockets is not None:  # not closed while paused
            self._start_serving_one_listener(listening_sock)

    def _accepting_again(self) -> None:
        if self._told:
            shed = (f" ({self._shed} idle connection(s) closed to make room)"
                    if self._shed else "")
            log.info("accepting connections again after %.1f s paused%s",
                     time.monotonic() - self._paused_since, shed)
            self._told = False
            self._shed = 0
        self._paused_since = None


async def create_server(loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], Any],
                        host: str | None, port: int | None,
                        **kwargs: Any) -> asyncio.AbstractServer:
    """``aiofastnet.create_server`` (same arguments), serving with
    :class:`BackoffServer`'s accept.  Protocols with a ``waiting`` attribute
    get the server's :class:`Waiting` registry in it."""
    waiting = Waiting()

    def protocol() -> Any:
        proto = protocol_factory()
        if hasattr(proto, "waiting"):
            proto.waiting = waiting
        return proto

    server = await aiofastnet.create_server(loop, protocol, host, port,
                                            start_serving=False, **kwargs)
    if type(server) is _AiofastnetServer:  # not asyncio's (the Proactor fallback)
        server.__class__ = BackoffServer
        server._waiting = waiting
    await server.start_serving()
    return server


def raise_descriptor_limit() -> int | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit and log the
    limit (a WARNING when it stays below :data:`LOW_NOFILE`); the soft limit
    now, or None where there is none (Windows).  Called once by ``serve``."""
    if resource is None:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    was = soft
    inf = resource.RLIM_INFINITY
    # an unlimited hard limit is not a soft limit the kernel takes: Linux's
    # default fs.nr_open, else macOS's OPEN_MAX (what Go's runtime uses there)
    for want in ((hard,) if hard != inf else (1 << 20, 10240)):
        if soft == inf or soft >= want:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            continue
        soft = want
        break
    if soft == inf:
        log.info("file descriptor limit: unlimited")
        return soft
    how = f"raised from {was}" if soft != was else "not raised"
    log.info("file descriptor limit: %d (%s; hard limit %s)", soft, how,
             "unlimited" if hard == inf else hard)
    if soft < LOW_NOFILE:
        log.warning("file descriptor limit %d is low: each session needs two (its client's "
                    "connection and its upstream's), so fewer than %d sessions can run at once. "
                    "Raise the hard limit (`ulimit -Hn`, systemd LimitNOFILE=) to %d or more",
                    soft, soft // 2, LOW_NOFILE)
    return soft
