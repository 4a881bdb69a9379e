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
from .errors import AuthError, GatewayError
from .instance import Instance
from .ledger import Ledger
from .principal import CLIENT_SECRET_PREFIX, Principal
from .providers.routing import Router
from .settings import Settings
from .store.base import TokenRecord
from .store.sql import SqlStore, open_store
from .turnlog import TurnLog
from .web.brake import Brake, Proxies

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
    #: the sessions running on this instance, by id (web/admission.py run; the console reads it)
    live: dict[str, Any] = field(default_factory=dict)
    #: this instance's WebRTC calls by id (web/calls.py: a call lives where its media is)
    calls: dict[str, Any] = field(default_factory=dict)
    admission: list[Admission] = field(default_factory=list)
    #: stage factories, in chain order; see openopen8.pipeline
    extras: dict[str, Any] = field(default_factory=dict)
    instance: Instance | None = None
    #: whose X-Forwarded-For is believed (settings.trusted_proxies)
    proxies: Proxies = field(init=False)
    #: failed authentications per client address: gateway tokens, and the admin API's
    brake: Brake = field(init=False)
    admin_brake: Brake = field(init=False)
    #: set by the first SIGTERM/SIGINT (app.serve): new sessions are refused with 503
    draining: bool = False
    #: the session log's writer and retention cleanup (turnlog.py)
    turns: TurnLog = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.proxies = Proxies(s.trusted_proxies)
        self.brake = Brake(s.auth_failure_limit, s.auth_failure_window_seconds)
        self.admin_brake = Brake(s.auth_failure_limit, s.auth_failure_window_seconds)
        self.turns = TurnLog(self.store, retention_days=s.log_retention_days)

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
        gw = cls(settings=settings, store=store, box=box, router=router,
                 ledger=ledger, instance=instance)
        gw.turns.start()
        return gw

    def client_address(self, headers, peer: str | None) -> str:
        """The address a request is the client's: the socket's ``peer`` (host),
        or X-Forwarded-For's when ``peer`` is a trusted proxy (web/brake.py)."""
        return self.proxies.client(headers, peer)

    async def authenticate(self, headers, query, client: str) -> Principal:
        """The token -- or client secret -- a request carries, or
        :class:`AuthError` (401).  Every authentication comes here, so the
        brake on guessing holds on every route: a ``client`` address
        (:meth:`client_address`) with too many recent failures gets 429 before
        any lookup.  A secret is refused with its minting token (revoked,
        expired) as well as on its own expiry."""
        secret = find_token(headers, query)
        if not secret:
            raise AuthError("You didn't provide an API key. Send your gateway token as "
                            "'Authorization: Bearer TOKEN', '?token=TOKEN' or the "
                            "'openai-insecure-api-key.TOKEN' subprotocol.", code="missing_api_key")
        self.brake.check(client)
        try:
            digest = hash_secret(secret)
        except UnicodeEncodeError:   # bytes no token has (aiohttp keeps them as surrogates)
            digest = None
        client_secret = None
        if digest is None:
            token = None
        elif secret.startswith(CLIENT_SECRET_PREFIX):
            found = await self.store.client_secret_by_hash(digest)
            client_secret, token = found if found is not None else (None, None)
        else:
            token = await self.store.token_by_hash(digest)
        if token is None:
            problem = AuthError("Incorrect API key provided.")
        elif client_secret is not None and client_secret.expired():
            problem = AuthError("This client secret has expired. Ask your backend for a new one.",
                                code="client_secret_expired")
        elif token.revoked_at is not None:
            problem = AuthError("This gateway token has been revoked.", code="token_revoked")
        elif token.expired():
            problem = AuthError("This gateway token has expired.", code="token_expired")
        else:
            return Principal(token, client_secret)
        self.brake.failed(client)
        raise problem

    def refuse_if_draining(self) -> None:
        """While draining, a new session is refused with 503 and Retry-After: a
        proxy in front (``proxy_next_upstream http_503``) tries another instance."""
        if self.draining:
            raise GatewayError("This gateway instance is shutting down; retry (another "
                               "instance will take the session).", code="server_draining",
                               status=503, type="server_error", headers={"Retry-After": "1"})

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
        await self.turns.stop()
        await self.store.close()
        if self.instance is not None:
            self.instance.release()
