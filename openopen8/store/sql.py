"""The SQL store: SQLite (embedded default) or PostgreSQL, one schema,
Alembic migrations applied on open."""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from alembic import command
from alembic.config import Config
from sqlalchemy import delete, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..datadir import create_private
from . import schema
from .base import ChannelRecord, StoreError, TokenLimits, TokenRecord, as_utc, utcnow
from .ledger_sql import LedgerOps
from .console_sql import ConsoleOps
from .secrets_sql import ClientSecretOps

MIGRATIONS = Path(__file__).parent / "migrations"

#: token columns besides limits, models and expiry
TOKEN_SETTINGS = ("policy", "origins", "log_transcripts")


def async_url(url: str) -> str:
    """Map the URLs users write to the async drivers we ship."""
    for plain, driver in (("postgresql://", "postgresql+asyncpg://"),
                          ("postgres://", "postgresql+asyncpg://"),
                          ("sqlite:///", "sqlite+aiosqlite:///")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


def _private_file(path: Path) -> None:
    """Create a new SQLite database file readable by its owner only (0600,
    like ``secret.key``: it holds token hashes and encrypted upstream keys);
    SQLite gives its -wal and -shm files the same mode.  A new data
    directory is made 0700.  Existing files keep the mode they have."""
    fd = create_private(path)
    if fd is not None:
        os.close(fd)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the CLI write while a server reads; wait instead of failing on a lock
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
    # we emit BEGIN ourselves (see _sqlite_begin), as SQLAlchemy recommends for pysqlite
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Any) -> None:
    """``BEGIN`` for every transaction, ``BEGIN IMMEDIATE`` for the ones that
    read and then write (:meth:`SqlStore.writing`): they take SQLite's write
    lock up front instead of failing when another writer got in between."""
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


def _token(row: Any) -> TokenRecord:
    limits = TokenLimits(**{f: getattr(row, f) for f in TokenLimits.FIELDS})
    return TokenRecord(id=row.id, name=row.name, prefix=row.prefix, models=list(row.models or []),
                       expires_at=as_utc(row.expires_at), revoked_at=as_utc(row.revoked_at),
                       created_at=as_utc(row.created_at), limits=limits,
                       spent_nanos=row.spent_nanos or 0, policy=dict(row.policy or {}),
                       origins=list(row.origins or []), log_transcripts=row.log_transcripts)


def _channel(row: Any) -> ChannelRecord:
    return ChannelRecord(id=row.id, name=row.name, type=row.type, base_url=row.base_url,
                         key_encrypted=bytes(row.key_encrypted), models=list(row.models or []),
                         deployments=dict(row.deployments or {}), api_version=row.api_version,
                         priority=row.priority, weight=row.weight, enabled=bool(row.enabled),
                         extra=dict(row.extra or {}), created_at=as_utc(row.created_at))


class SqlStore(LedgerOps, ClientSecretOps, ConsoleOps):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer at a time: queue this process's read-then-write
        # transactions here rather than in SQLite's busy handler
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that reads and then writes: ``BEGIN IMMEDIATE`` on
        SQLite (serialised in-process too); on PostgreSQL a plain transaction
        whose callers lock the rows they read (``FOR UPDATE``)."""
        if not self.sqlite:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            async with self.engine.connect() as conn:
                await conn.execution_options(sqlite_begin="IMMEDIATE")
                async with conn.begin():
                    yield conn

    @classmethod
    async def open(cls, url: str, migrate: bool = True) -> "SqlStore":
        aurl = async_url(url)
        kwargs: dict[str, Any] = {}
        if aurl.startswith("sqlite"):
            path = aurl.split(":///", 1)[1]
            if path and path != ":memory:":
                _private_file(Path(path))
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        engine = create_async_engine(aurl, **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "begin", _sqlite_begin)
        store = cls(engine)
        if migrate:
            await store.migrate()
        return store

    async def migrate(self) -> None:
        """Bring the schema to head.  On PostgreSQL an advisory lock keeps two
        gateway instances starting together from racing."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))

        def run(sync_conn: Any) -> None:
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(80808080)"))
            await conn.run_sync(run)

    async def close(self) -> None:
        await self.engine.dispose()

    # ---- tokens -------------------------------------------------------------

    async def create_token(self, name, secret_hash, prefix, models, expires_at, limits=None,
                           **settings):
        """``settings``: :data:`TOKEN_SETTINGS` (policy, origins, log_transcripts)."""
        bad = set(settings) - set(TOKEN_SETTINGS)
        if bad:
            raise StoreError(f"cannot set {sorted(bad)}")
        lim = {f: getattr(limits, f) for f in TokenLimits.FIELDS} if limits else {}
        lim.update({k: v for k, v in settings.items() if v is not None})
        try:
            async with self.engine.begin() as conn:
                res = await conn.execute(insert(schema.tokens).values(
                    name=name, secret_hash=secret_hash, prefix=prefix, models=list(models),
                    expires_at=expires_at, created_at=utcnow(), spent_nanos=0, **lim))
                row = (await conn.execute(select(schema.tokens).where(
                    schema.tokens.c.id == res.inserted_primary_key[0]))).one()
        except IntegrityError:
            raise StoreError(f"a token named {name!r} already exists") from None
        return _token(row)

    async def token_by_hash(self, secret_hash):
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(schema.tokens).where(
                schema.tokens.c.secret_hash == secret_hash))).first()
        return _token(row) if row else None

    async def token_by_name(self, name):
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(schema.tokens).where(
                schema.tokens.c.name == name))).first()
        return _token(row) if row else None

    async def update_token(self, name, changes):
        """Change a token's limits, models, expiry or settings (keys of
        ``changes``: :attr:`TokenLimits.FIELDS`, ``models``, ``expires_at``,
        :data:`TOKEN_SETTINGS`)."""
        allowed = set(TokenLimits.FIELDS) | {"models", "expires_at"} | set(TOKEN_SETTINGS)
        bad = set(changes) - allowed
        if bad:
            raise StoreError(f"cannot change {sorted(bad)}")
        async with self.engine.begin() as conn:
            if changes:
                await conn.execute(update(schema.tokens).where(
                    schema.tokens.c.name == name).values(**changes))
            row = (await conn.execute(select(schema.tokens).where(
                schema.tokens.c.name == name))).first()
        if row is None:
            raise StoreError(f"no token named {name!r}")
        return _token(row)

    async def list_tokens(self):
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(schema.tokens).order_by(schema.tokens.c.id))).all()
        return [_token(r) for r in rows]

    async def revoke_token(self, name):
        async with self.engine.begin() as conn:
            res = await conn.execute(update(schema.tokens).where(
                schema.tokens.c.name == name, schema.tokens.c.revoked_at.is_(None)
            ).values(revoked_at=utcnow()))
            row = (await conn.execute(select(schema.tokens).where(
                schema.tokens.c.name == name))).first()
        if row is None:
            raise StoreError(f"no token named {name!r}")
        del res
        return _token(row)

    # ---- channels -----------------------------------------------------------

    async def add_channel(self, ch):
        try:
            async with self.engine.begin() as conn:
                res = await conn.execute(insert(schema.channels).values(
                    name=ch.name, type=ch.type, base_url=ch.base_url,
                    key_encrypted=ch.key_encrypted, models=list(ch.models),
                    deployments=dict(ch.deployments), api_version=ch.api_version,
                    priority=ch.priority, weight=ch.weight, enabled=ch.enabled,
                    extra=dict(ch.extra), created_at=utcnow()))
                row = (await conn.execute(select(schema.channels).where(
                    schema.channels.c.id == res.inserted_primary_key[0]))).one()
        except IntegrityError:
            raise StoreError(f"a channel named {ch.name!r} already exists") from None
        return _channel(row)

    async def list_channels(self):
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(schema.channels).order_by(
                schema.channels.c.priority.desc(), schema.channels.c.id))).all()
        return [_channel(r) for r in rows]

    async def set_channel_enabled(self, name, enabled):
        async with self.engine.begin() as conn:
            await conn.execute(update(schema.channels).where(
                schema.channels.c.name == name).values(enabled=enabled))
            row = (await conn.execute(select(schema.channels).where(
                schema.channels.c.name == name))).first()
        if row is None:
            raise StoreError(f"no channel named {name!r}")
        return _channel(row)

    async def remove_channel(self, name):
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(schema.channels).where(schema.channels.c.name == name))
        if res.rowcount == 0:
            raise StoreError(f"no channel named {name!r}")


async def open_store(url: str, migrate: bool = True) -> SqlStore:
    return await SqlStore.open(url, migrate=migrate)


def run_sync(coro):  # pragma: no cover - small CLI helper
    return asyncio.run(coro)
