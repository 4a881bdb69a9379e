"""Channel choice and failover.

Enabled channels serving the model, highest priority first, weighted random
within a priority; when a channel's handshake fails the next one is tried.
Channels are re-read from the store every few seconds, so the CLI's changes
reach a running server without a restart.

What is served is said in one place, :meth:`Router.models`: ``GET /v1/models``
lists it, and a request for a model nobody serves is refused with that list
and the closest name in it -- on a self-hosted gateway the user reading the
404 is usually the administrator it tells to ask.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable


from ..crypto import SecretBox
from ..metrics import UPSTREAM_FAILURES
from ..errors import NO_CHANNEL_MESSAGE, NoChannelError, UpstreamFailure
from ..relay.endpoint import Endpoint
from ..store.base import ChannelRecord
from .base import ConnectRequest, Provider, UpstreamError

log = logging.getLogger("openopen8.routing")

LOCAL_MODEL = "openopen8-local"

_KIND_TEXT = {
    "auth": "the upstream rejected the channel's credentials",
    "rejected": "the upstream refused the request",
    "unavailable": "the upstream is unavailable",
    "unreachable": "the upstream cannot be reached",
    "timeout": "the upstream did not answer in time",
    "protocol": "the upstream did not speak the Realtime protocol",
    "loading": "the local models are still loading",
}

#: at most this many model names in a refusal (the rest: GET /v1/models)
_NAMES_SHOWN = 20


@dataclass(frozen=True)
class ServedModel:
    """A model this gateway serves now, as ``GET /v1/models`` lists it."""

    id: str
    #: the channel type ("openai", "azure"), or "openopen8" for the built-in engine
    owned_by: str
    #: Unix seconds: when its first channel was added (the built-in engine: server start)
    created: int


def weighted_order(chs: list[ChannelRecord], rnd: random.Random | None = None) -> list[ChannelRecord]:
    """Priority descending; inside a priority a weighted random permutation
    (Efraimidis-Spirakis keys), so weight 3 is picked first three times as often."""
    r = rnd or random
    return sorted(chs, key=lambda c: (-c.priority, -(r.random() ** (1.0 / max(c.weight, 1)))))


class Router:
    def __init__(self, store: Any, box: SecretBox, *,
                 timeout: float = 10.0, refresh_seconds: float = 2.0,
                 local_factory: Callable[[], Provider] | None = None) -> None:
        self.store = store
        self.box = box
        self.timeout = timeout
        self.refresh_seconds = refresh_seconds
        self.local_factory = local_factory
        self._local: Provider | None = None
        self._channels: list[ChannelRecord] = []
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._providers: dict[tuple, Provider] = {}
        self._started = int(time.time())

    async def channels(self) -> list[ChannelRecord]:
        if time.monotonic() - self._loaded_at > self.refresh_seconds:
            async with self._lock:
                if time.monotonic() - self._loaded_at > self.refresh_seconds:
                    self._channels = await self.store.list_channels()
                    self._loaded_at = time.monotonic()
        return self._channels

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    async def serving(self, model: str) -> tuple[list[ChannelRecord], bool]:
        """Enabled channels for ``model`` and whether any channel (enabled or
        not) lists it at all."""
        chs = await self.channels()
        listed = [c for c in chs if model in c.models]
        enabled = [c for c in listed if c.enabled]
        if not listed and model == LOCAL_MODEL and self.local_factory is not None:
            enabled = [ChannelRecord(id=0, name="local", type="local", base_url="",
                                     models=[LOCAL_MODEL])]
            listed = enabled
        return enabled, bool(listed)

    def local_provider(self) -> Provider | None:
        """The built-in local engine's provider (made on first use), if enabled."""
        if self.local_factory is None:
            return None
        if self._local is None:
            self._local = self.local_factory()
            if getattr(self._local, "load_timeout", 0) is None:
                # a client waits for loading models no longer than for an upstream
                self._local.load_timeout = self.timeout   # type: ignore[attr-defined]
        return self._local

    def local_state(self) -> str:
        """The built-in engine: ``ready``, ``loading``, or ``unavailable``
        (not installed or disabled here, or its last load failed)."""
        if self.local_factory is None:
            return "unavailable"
        try:
            state = getattr(self.local_provider(), "state", "ready")
        except Exception:  # noqa: BLE001 - a backend that cannot even be built
            return "unavailable"
        return {"ready": "ready", "failed": "unavailable"}.get(state, "loading")

    async def models(self) -> list[ServedModel]:
        """The models served now, by name: enabled channels' models, and the
        built-in engine's when no channel lists it (as :meth:`serving` routes)
        unless it failed to load.  (Callers filter by a token's ``allows``:
        they need the whole list too, to tell "none allowed" from "none".)"""
        chs = await self.channels()
        found: dict[str, ServedModel] = {}
        for ch in sorted(chs, key=lambda c: -c.priority):
            if not ch.enabled:
                continue
            created = int(ch.created_at.timestamp()) if ch.created_at else self._started
            for m in ch.models:
                seen = found.get(m)
                if seen is None:
                    found[m] = ServedModel(m, ch.type, created)
                elif created < seen.created:
                    found[m] = ServedModel(m, seen.owned_by, created)
        listed = any(LOCAL_MODEL in c.models for c in chs)
        if not listed and self.local_factory is not None and self.local_state() != "unavailable":
            found[LOCAL_MODEL] = ServedModel(LOCAL_MODEL, "openopen8", self._started)
        return [found[m] for m in sorted(found)]

    def provider(self, ch: ChannelRecord) -> Provider:
        key = (ch.id, ch.type, ch.base_url, ch.key_encrypted, ch.api_version,
               tuple(sorted(ch.deployments.items())))
        p = self._providers.get(key)
        if p is None:
            p = self._make(ch)
            self._providers[key] = p
        return p

    def _make(self, ch: ChannelRecord) -> Provider:
        if ch.type == "local":
            local = self.local_provider()
            if local is None:
                raise UpstreamError("unavailable", "the local engine is not enabled")
            return local
        key = self.box.open(ch.key_encrypted)
        if ch.type == "openai":
            from .openai import OpenAIProvider
            return OpenAIProvider(ch.base_url, key, timeout=self.timeout)
        if ch.type == "azure":
            from .azure import AzureProvider
            return AzureProvider(ch.base_url, key, ch.deployments,
                                 ch.api_version, timeout=self.timeout)
        raise UpstreamError("protocol", f"unknown channel type {ch.type!r}")

    async def check(self, model: str,
                    allows: Callable[[str], bool] | None = None) -> list[ChannelRecord]:
        """The candidate channels in the order to try them, or NoChannelError
        naming the models served now (those ``allows`` passes) and the
        closest of them to ``model``."""
        enabled, listed = await self.serving(model)
        if not enabled:
            status = 503 if listed else 404
            served = await self.models()
            names = [m.id for m in served if allows is None or allows(m.id)]
            hint = served_hint(model, names, any_served=bool(served))
            raise NoChannelError(f"{NO_CHANNEL_MESSAGE} (model: {model}){hint}",
                                 status=status,
                                 code="model_not_available" if listed else "model_not_found")
        return weighted_order(enabled)

    async def connect(self, req: ConnectRequest,
                      candidates: list[ChannelRecord]) -> tuple[ChannelRecord, Provider, Endpoint]:
        failures: list[str] = []
        local_detail = ""
        for ch in candidates:
            try:
                prov = self.provider(ch)
                ep = await prov.connect(req)
            except UpstreamError as exc:
                log.warning("channel %s failed for %s: %s (%s)", ch.name, req.model, exc.kind, exc.detail)
                failures.append(exc.kind)
                if ch.type == "local":  # in-process: its message holds no secret, and says what to install
                    local_detail = f" {exc.detail}"
                UPSTREAM_FAILURES.labels(ch.name, exc.kind).inc()
                continue
            except ValueError as exc:  # undecryptable key
                log.error("channel %s unusable: %s", ch.name, exc)
                failures.append("auth")
                continue
            return ch, prov, ep
        kinds = list(dict.fromkeys(failures))
        if kinds == ["loading"]:        # not a failure: ready in a few seconds
            raise UpstreamFailure(local_detail.strip(), status=503, code="model_loading",
                                  headers={"Retry-After": "5"})
        text = "; ".join(_KIND_TEXT.get(k, k) for k in kinds)
        raise UpstreamFailure(
            f"Could not open an upstream Realtime session for model {req.model} "
            f"({len(failures)} channel{'s' if len(failures) != 1 else ''} tried): {text}.{local_detail}",
            code="upstream_" + (kinds[0] if len(kinds) == 1 else "failed"))


def served_hint(model: str, names: list[str], any_served: bool = True) -> str:
    """`` Did you mean 'x'? Models served here: a, b.`` for a refusal."""
    if not names:
        if any_served:
            return " No model served here is allowed for this token."
        return (" No model is served here yet: add a channel with `openopen8 channels add` "
                "(or enable the built-in local engine).")
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(model.lower(), list(by_lower), n=1)
    hint = f" Did you mean '{by_lower[close[0]]}'?" if close else ""
    shown = ", ".join(names[:_NAMES_SHOWN])
    extra = len(names) - _NAMES_SHOWN
    more = f" and {extra} more (GET /v1/models)" if extra > 0 else ""
    return f"{hint} Models served here: {shown}{more}."
