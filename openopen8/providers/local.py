"""The local channel: an offline Realtime model in this process.

``LocalProvider(config).connect(req)`` returns a
:class:`~openopen8.engine.endpoint.LocalEndpoint` that speaks the GA
dialect, so the relay, stages, ledger and quotas treat it like OpenAI.  The
models load on the first connect (or on :meth:`LocalProvider.warmup`), once
per process, and are shared by every session.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from ..engine.backends.base import MissingDependency, ModelIntegrityError
from ..engine.config import MODEL_NAME, EngineConfig
from ..engine.runtime import LocalEngine, get_engine
from ..relay.endpoint import Endpoint
from .base import ConnectRequest, UpstreamError

log = logging.getLogger("openopen8.providers.local")


class LocalProvider:
    dialect = "ga"

    def __init__(self, config: EngineConfig | Mapping[str, Any] | None = None,
                 engine: LocalEngine | None = None) -> None:
        self.config = EngineConfig.from_mapping(config) if not isinstance(
            config, EngineConfig) else config
        self._engine = engine
        #: model names this provider serves
        self.models = (MODEL_NAME,)

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
            return await self.engine.open_session(req.session_id or "", req.model or MODEL_NAME)
        except (MissingDependency, ModelIntegrityError) as exc:
            raise UpstreamError("unavailable", str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a model that fails to load
            log.exception("local engine failed to start")
            raise UpstreamError("unavailable",
                                f"The local engine failed to start: {type(exc).__name__}") \
                from exc
