"""The HTTP/WebSocket application and its lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl

from aiohttp import web

from .gateway import Gateway
from .metrics import metrics_handler
from .settings import Settings
from .web import admin, calls, dashboard, models, secrets
from .web.admin import GATEWAY
from .web.front import FrontDoor
from .web.listen import create_server, raise_descriptor_limit
from .web.realtime import realtime

log = logging.getLogger("openopen8")


def local_engine_state(gw: Gateway) -> str:
    """The built-in engine as /healthz reports it: ``ready``, ``loading``,
    ``unavailable`` (not installed, or its models failed to load) or
    ``disabled`` (``local_engine = false``)."""
    if not gw.settings.local_engine:
        return "disabled"
    return gw.router.local_state()


async def healthz(request: web.Request) -> web.Response:
    """200 while the process serves; ``status`` is ``starting`` while the
    local models load -- a client connecting then may be told to retry.
    503 ``draining`` once a signal asked it to stop (see :func:`serve`)."""
    gw = request.app[GATEWAY]
    if gw.draining:   # a load balancer's health check takes the instance out
        return web.json_response({"status": "draining", "sessions": len(gw.sessions)},
                                 status=503)
    local = local_engine_state(gw)
    return web.json_response({"status": "starting" if local == "loading" else "ok",
                              "local_engine": local, "sessions": len(gw.sessions)})


@web.middleware
async def _one_request(request: web.Request, handler) -> web.StreamResponse:
    """One request per connection on the aiohttp side: a client that keeps
    the connection alive would otherwise send its next request -- perhaps a
    Realtime upgrade -- past the front door, to aiohttp."""
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        exc.force_close()
        raise
    resp.force_close()
    return resp


def create_app(gw: Gateway) -> web.Application:
    """The plain HTTP side (health, metrics, admin API, the model list),
    served by aiohttp behind the front door."""
    app = web.Application(client_max_size=1024 * 1024, middlewares=[_one_request])
    app[GATEWAY] = gw
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    admin.add_routes(app)
    models.add_routes(app)
    secrets.add_routes(app)
    calls.add_routes(app)       # WebRTC: /v1/realtime/calls (+ CORS)
    dashboard.add_routes(app)   # the operator's console: /dashboard (a client of ops)
    return app


class Server:
    """The gateway on one listening socket: the front door answers Realtime
    requests (picows after the upgrade) and passes the rest to aiohttp."""

    def __init__(self, gw: Gateway, runner: web.AppRunner, server: asyncio.Server,
                 doors: set[asyncio.Task]) -> None:
        self.gw = gw
        self.runner = runner
        self.server = server
        self._doors = doors

    @classmethod
    async def start(cls, settings: Settings, host: str | None = None,
                    port: int | None = None) -> "Server":
        gw = await Gateway.start(settings)
        try:
            runner = web.AppRunner(create_app(gw), access_log=None, handle_signals=False,
                                   shutdown_timeout=5)
            await runner.setup()
            http_protocol = runner.server
            doors: set[asyncio.Task] = set()
            heartbeat = settings.heartbeat or None

            async def on_realtime(door: FrontDoor, head) -> None:
                await realtime(gw, door, head)

            loop = asyncio.get_running_loop()
            # aiofastnet: picows' own transports (what ws_connect uses upstream);
            # a frame costs less CPU on them than on uvloop's streams.  Its
            # accept spins when out of descriptors: web/listen.py backs off.
            server = await create_server(
                loop, lambda: FrontDoor(on_realtime, http_protocol, doors, heartbeat),
                settings.host if host is None else host,
                settings.port if port is None else port,
                ssl=ssl_context(settings), backlog=1024, reuse_address=True)
        except BaseException:
            await gw.close()
            raise
        return cls(gw, runner, server, doors)

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, close running sessions with 1012, write the ledger
        out, and close the rest."""
        self.server.close()
        await self.gw.shutdown()
        for t in list(self._doors):
            t.cancel()
        if self._doors:
            await asyncio.wait(list(self._doors), timeout=5)
        await self.runner.cleanup()
        await self.gw.close()


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key) if settings.tls_key else None)
    return ctx


async def _warm(local) -> None:
    """Load the local engine's models in the background so the first session
    does not wait for them; a missing install is a warning, not a crash."""
    warmup = getattr(local, "warmup", None)
    if warmup is None:
        return
    try:
        await warmup()
        log.info("local engine ready (model 'openopen8-local')")
    except Exception as exc:  # noqa: BLE001
        log.warning("local engine unavailable: %s", exc)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (it is, on Linux and macOS), else asyncio's.

    The relay's cost per frame is mostly the event loop and the socket layer
    under aiohttp: on uvloop a round trip costs ~15% less CPU (bench/relay.py,
    same run), the same loop LiteLLM's proxy runs on by default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(settings: Settings) -> None:
    """``serve`` on the fastest event loop available (blocking)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(settings))


def keep_log_streams() -> None:
    """Give the log handlers on stdout/stderr descriptors of their own.

    llama-cpp-python silences llama.cpp while it loads a model by pointing
    descriptors 1 and 2 at /dev/null -- for the whole process, so every line
    any thread logged meanwhile was lost: a client told the models are still
    loading, a refusal, the next model's progress (seen in ``serve``'s log).
    A handler that writes to a duplicate of the descriptor keeps writing where
    the operator reads."""
    for handler in logging.getLogger().handlers:
        if type(handler) is not logging.StreamHandler:
            continue
        stream = handler.stream
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):   # not a descriptor (io.StringIO …)
            continue
        if fd not in (1, 2):
            continue
        handler.setStream(open(os.dup(fd), "w", buffering=1, closefd=True,
                               encoding=getattr(stream, "encoding", None) or "utf-8",
                               errors=getattr(stream, "errors", None) or "backslashreplace"))


def raise_mmap_threshold() -> None:
    """Keep asyncio's read buffers off mmap.

    The selector transport reads with ``sock.recv(256 KiB)``.  Under glibc's
    malloc a block that size is mmap'ed -- and here mremap'ed and munmap'ed
    again, three system calls on every read -- until freeing a large block
    raises the dynamic mmap threshold.  Whether startup happened to do that
    should not decide the relay's cost (the benchmark measured ~1.5x CPU per
    frame without it), so free one 1 MiB block on purpose.  Harmless elsewhere.
    """
    block = bytearray(1 << 20)
    del block


async def drain(srv: Server, signals: asyncio.Queue) -> None:
    """The first signal: refuse new sessions (503 + Retry-After, /healthz 503
    ``draining``) and let running ones go on for up to ``drain_seconds``.
    Returns when none is left (nor any request being admitted), the time is
    up, or a second signal comes; the caller then closes the rest with 1012
    (usage settled)."""
    gw = srv.gw
    gw.draining = True
    seconds = gw.settings.drain_seconds
    log.info("draining: new sessions are refused; %d running session%s may go on for up to "
             "%g s (a second signal ends them at once)", len(gw.sessions),
             "" if len(gw.sessions) == 1 else "s", seconds)
    second = asyncio.ensure_future(signals.get())
    try:
        async with asyncio.timeout(seconds):
            while (busy := gw.sessions | srv._doors) and not second.done():
                await asyncio.wait([second, *busy], return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        pass
    finally:
        second.cancel()
    if gw.sessions:
        log.info("drain over: closing %d running session%s with 1012", len(gw.sessions),
                 "" if len(gw.sessions) == 1 else "s")


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM, then drain (:func:`drain`) and close what
    still runs with 1012."""
    raise_mmap_threshold()
    raise_descriptor_limit()   # each session holds two descriptors
    keep_log_streams()
    # signals are taken from the start: one that comes while the server starts
    # (a health check may already pass) is a stop asked for, handled once it runs
    signals: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, signals.put_nowait, sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover
            pass
    srv = await Server.start(settings)
    gw = srv.gw
    scheme = "wss" if settings.tls_cert else "ws"
    channels = await gw.store.list_channels()
    log.info("openopen8 listening on %s://%s:%d/v1/realtime (database: %s)", scheme, settings.host,
             settings.port, gw.store.engine.dialect.name)
    local = gw.router.local_provider()
    warming = asyncio.ensure_future(_warm(local)) if local is not None else None
    if not channels:
        if local is not None:
            log.info("no channels configured: serving the built-in local engine as model "
                     "'openopen8-local'")
        else:
            log.warning("no channels configured and the local engine is not installed: add one "
                        "with `openopen8 channels add`")
    # Everything made at startup (SQLAlchemy, pydantic, typer, migrations: ~10^5
    # objects) lives as long as the process.  Freezing it keeps it out of the
    # collector's full passes, which otherwise stop every session for tens of
    # milliseconds whenever enough session objects pile up (measured under load:
    # 60 ms a full pass before, 5 ms after).
    gc.freeze()
    if ready is not None:
        ready.set()
    try:
        await signals.get()
        await drain(srv, signals)
    finally:
        log.info("shutting down")
        if warming is not None:
            warming.cancel()
        await srv.stop()
