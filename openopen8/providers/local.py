"""The local channel: an offline Realtime model in this process.

``LocalProvider(config).connect(req)`` returns a
:class:`~openopen8.engine.endpoint.LocalEndpoint` that speaks the GA
dialect, so the relay, stages, ledger and quotas treat it like OpenAI.  The
models load on the first connect (or on :meth:`LocalProvider.warmup`), once
per process, and are shared by every session.

A client that connects while they load waits for them at most
``load_timeout`` seconds (the router sets its connect timeout): a wait in
silence with no end is what a client cannot tell from a hung server, so past
that it gets a refusal saying the models are still loading.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from ..engine.backends.base import MissingDependency, ModelIntegrityError
from ..engine.config import MODEL_NAME, EngineConfig
from ..engine.runtime import LocalEngine, get_engine, progress
from ..relay.endpoint import Endpoint
from .base import ConnectRequest, UpstreamError

log = logging.getLogger("openopen8.providers.local")

LOADING_MESSAGE = (f"The local models ({MODEL_NAME}) are still loading; "
                   "try again in a few seconds.")


class LocalProvider:
    dialect = "ga"

    def __init__(self, config: EngineConfig | Mapping[str, Any] | None = None,
                 engine: LocalEngine | None = None, load_timeout: float | None = None) -> None:
        self.config = EngineConfig.from_mapping(config) if not isinstance(
            config, EngineConfig) else config
        self._engine = engine
        #: model names this provider serves
        self.models = (MODEL_NAME,)
        #: how long a connect waits for models still loading (None: no bound)
        self.load_timeout = load_timeout

    @property
    def state(self) -> str:
        """The engine's models: ``ready``, ``loading``, ``failed`` or ``idle``."""
        return self.engine.state

    @property
    def engine(self) -> LocalEngine:
        if self._engine is None:
            self._engine = get_engine(self.config)
        return self._engine

    async def warmup(self) -> None:
        """Load the models now (e.g. in the app's lifespan) instead of on the
        first connect; raises :class:`UpstreamError` like ``connect``."""
        try:
            await self.engine.ensure_loaded()
        except (MissingDependency, ModelIntegrityError) as exc:
            raise UpstreamError("unavailable", str(exc)) from exc

    async def connect(self, req: ConnectRequest) -> Endpoint:
        if req.model and req.model != MODEL_NAME:
            raise UpstreamError("rejected",
                                f"The local engine serves the model '{MODEL_NAME}', "
                                f"not '{req.model}'.")
        try:
            if not self.engine.loaded:
                await self._wait_loaded(req)
            return await self.engine.open_session(req.session_id or "", req.model or MODEL_NAME)
        except UpstreamError:
            raise
        except (MissingDependency, ModelIntegrityError) as exc:
            raise UpstreamError("unavailable", str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a model that fails to load
            log.exception("local engine failed to start")
            raise UpstreamError("unavailable",
                                f"The local engine failed to start: {type(exc).__name__}") \
                from exc

    async def _wait_loaded(self, req: ConnectRequest) -> None:
        """Wait for the models (the load itself is shared and shielded: a
        waiter that gives up does not stop it), at most ``load_timeout``."""
        limit = self.load_timeout
        progress(f"local engine: models still loading; session {req.session_id or '-'} waits"
                 + (f" (up to {limit:g} s)" if limit is not None else ""))
        try:
            await asyncio.wait_for(self.engine.ensure_loaded(), limit)
        except asyncio.TimeoutError:
            progress(f"local engine: models still loading after {limit:g} s; "
                     f"session {req.session_id or '-'} refused")
            raise UpstreamError("loading", LOADING_MESSAGE) from None
