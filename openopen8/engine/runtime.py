"""Loaded models, once per process, shared by every session.

:func:`get_engine` returns the :class:`LocalEngine` for a configuration
(the same object for the same backends), and :meth:`LocalEngine.ensure_loaded`
loads the four models the first time it is awaited -- off the event loop, in
parallel, with one progress line each -- and afterwards returns at once.
:attr:`LocalEngine.state` says where that stands (``/healthz`` shows it, and
a client that connects while the models load is told why it waits).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from typing import Any

from .backends import build_backends
from .backends.base import Backends
from .config import EngineConfig
from .conversation import new_id
from .endpoint import LocalEndpoint

log = logging.getLogger("openopen8.engine")

_engines_lock = threading.Lock()


def progress(msg: str) -> None:
    """A progress line: logged, and printed to stderr when logging is not
    set up (so a plain ``openopen8 serve`` shows the first model load)."""
    log.info(msg)
    if not logging.getLogger().handlers and not log.handlers:
        print(f"openopen8: {msg}", file=sys.stderr, flush=True)


class LocalEngine:
    def __init__(self, cfg: EngineConfig, backends: Backends | None = None) -> None:
        self.cfg = cfg
        self.backends = backends or build_backends(cfg)
        self._loaded = all(getattr(p, "loaded", True) for p in self.backends.parts())
        self._loading: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self.load_seconds: dict[str, float] = {}
        #: why the last load failed (None when it did not)
        self.failure: str | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def state(self) -> str:
        """``ready``, ``loading``, ``failed`` (the last load raised), or
        ``idle`` (no load asked for yet)."""
        if self._loaded:
            return "ready"
        if self._loading is not None and not self._loading.done():
            return "loading"
        return "failed" if self.failure is not None else "idle"

    def _load_one(self, kind: str, part: Any) -> None:
        t0 = time.perf_counter()
        part.load()
        dt = time.perf_counter() - t0
        self.load_seconds[kind] = dt
        progress(f"local engine: {kind} '{part.name}' ready in {dt:.1f} s")

    def load_sync(self) -> None:
        """Load every model now, in this thread (for scripts and benches)."""
        with self._lock:
            if self._loaded:
                return
            progress("local engine: loading models (first use in this process)")
            for kind, part in zip(("vad", "stt", "llm", "tts"), self.backends.parts()):
                self._load_one(kind, part)
            self._loaded = True

    async def ensure_loaded(self) -> None:
        if self._loaded:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load_all())
        try:
            await asyncio.shield(self._loading)
        except BaseException:
            if self._loading.done():
                self._loading = None      # let a later call try again
            raise

    async def _load_all(self) -> None:
        progress("local engine: loading models (first use in this process)")
        loop = asyncio.get_running_loop()
        kinds = ("vad", "stt", "llm", "tts")
        try:
            await asyncio.gather(*(loop.run_in_executor(None, self._load_one, k, p)
                                   for k, p in zip(kinds, self.backends.parts())))
        except Exception as exc:
            self.failure = str(exc) or type(exc).__name__
            raise
        self.failure = None
        self._loaded = True

    async def open_session(self, session_id: str, model: str) -> LocalEndpoint:
        await self.ensure_loaded()
        return LocalEndpoint(self.backends, self.cfg, session_id or new_id("sess"), model)


_shared: dict[tuple, Backends] = {}


def get_engine(cfg: EngineConfig) -> LocalEngine:
    """An engine for ``cfg`` whose models are shared with every other engine
    of the same backends in this process (loading is idempotent)."""
    key = cfg.backend_key()
    with _engines_lock:
        backends = _shared.get(key)
        if backends is None:
            backends = build_backends(cfg)
            _shared[key] = backends
    return LocalEngine(cfg, backends)
