"""The gateway's shared state: one object, made in the app's lifespan, owning
the store, the router and the set of running sessions."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .auth import find_token, hash_secret
from .billing import PriceTable
from .crypto import SecretBox, server_secret
from .errors import AuthError
from .instance import Instance
from .ledger import Ledger
from .providers.routing import Router
from .settings import Settings
from .store.base import TokenRecord
from .store.sql import SqlStore, open_store

log = logging.getLogger("openopen8")

#: admission checks run before the upgrade: (gateway, token, model) -> None or raise GatewayError
Admission = Callable[["Gateway", TokenRecord, str], Awaitable[None]]


def local_factory(settings: Settings) -> Callable[[], Any] | None:
    """The built-in local engine, when enabled and installed."""
    if not settings.local_engine:
        return None
    try:
        from .providers.local import LocalProvider
    except ImportError:
        return None
    return lambda: LocalProvider(settings.local)


@dataclass
class Gateway:
    settings: Settings
    store: SqlStore
    box: SecretBox
    router: Router
    ledger: Ledger
    sessions: set[asyncio.Task] = field(default_factory=set)
    admission: list[Admission] = field(default_factory=list)
    #: stage factories, in chain order; see openopen8.pipeline
    extras: dict[str, Any] = field(default_factory=dict)
    instance: Instance | None = None

    @classmethod
    async def start(cls, settings: Settings) -> "Gateway":
        prices = PriceTable(settings.prices, settings.fallback_price)  # bad prices fail here
        store = await open_store(settings.db_url)
        box = SecretBox(server_secret(settings.secret_key, settings.data_dir))
        router = Router(store, box, timeout=settings.connect_timeout,
                        refresh_seconds=settings.refresh_seconds,
                        local_factory=local_factory(settings))
        instance = Instance.of(settings.data_dir)
        ledger = Ledger(store, prices, flush_seconds=settings.ledger_flush_seconds,
                        commit_seconds=settings.ledger_commit_seconds,
                        lease_seconds=settings.lease_seconds,
                        refresh_seconds=settings.balance_refresh_seconds,
                        instance=instance.name)
        if instance.sole:   # no earlier process of this gateway runs: what it left open, it left
            closed = await store.close_orphans(instances_like=instance.gateway_id + ":%",
                                               keep_instance=instance.name)
            if closed:
                log.warning("closed %d session row%s left open by an earlier gateway process "
                            "that stopped without closing them (closed_by=crash)", closed,
                            "s" if closed != 1 else "")
        ledger.start()
        return cls(settings=settings, store=store, box=box, router=router,
                   ledger=ledger, instance=instance)

    async def authenticate(self, headers, query) -> TokenRecord:
        secret = find_token(headers, query)
        if not secret:
            raise AuthError("You didn't provide an API key. Send your gateway token as "
                            "'Authorization: Bearer TOKEN', '?token=TOKEN' or the "
                            "'openai-insecure-api-key.TOKEN' subprotocol.", code="missing_api_key")
        token = await self.store.token_by_hash(hash_secret(secret))
        if token is None:
            raise AuthError("Incorrect API key provided.")
        if token.revoked_at is not None:
            raise AuthError("This gateway token has been revoked.", code="token_revoked")
        if token.expired():
            raise AuthError("This gateway token has expired.", code="token_expired")
        return token

    async def admit(self, token: TokenRecord, model: str) -> None:
        for check in self.admission:
            await check(self, token, model)

    async def shutdown(self) -> None:
        """Close every running session with 1012, then write the ledger out."""
        tasks = list(self.sessions)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self.ledger.stop()

    async def close(self) -> None:
        await self.ledger.stop()
        await self.store.close()
        if self.instance is not None:
            self.instance.release()
