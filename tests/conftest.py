"""Shared fixtures: databases (SQLite and the local PostgreSQL) and a gateway
served on loopback."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import asyncpg
import pytest

from openopen8 import ops
from openopen8.app import Server
from openopen8.settings import load_settings

PG_ADMIN = os.environ.get("OPENOPEN8_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _pg_exec(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _fresh_log_throttle(monkeypatch):
    """Client-caused log lines are throttled per process (openopen8.peerlog):
    each test starts with a fresh throttle, so one test's flood cannot hide
    the lines another asserts on."""
    from openopen8 import peerlog
    monkeypatch.setattr(peerlog, "THROTTLE", peerlog.Throttle())


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = "oo8_test_" + secrets.token_hex(6)
    await _pg_exec(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        await _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request, tmp_path: Path) -> AsyncIterator[str]:
    """Each storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'oo8.db'}"
    else:
        name = "oo8_test_" + secrets.token_hex(6)
        await _pg_exec(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
        finally:
            await _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class RunningGateway:
    url: str          # ws://127.0.0.1:PORT/v1/realtime
    http: str         # http://127.0.0.1:PORT
    base_url: str     # http://127.0.0.1:PORT/v1  (the openai SDK's base_url)
    server: Server

    @property
    def gw(self) -> Any:
        return self.server.gw

    async def token(self, name: str | None = None, models: list[str] | None = None,
                    expires: str | None = None) -> str:
        new = await ops.create_token(self.gw.store, name or "t-" + secrets.token_hex(4),
                                     models, expires)
        return new.secret

    async def channel(self, name: str, url: str, models: list[str], key: str = "sk-good",
                      type: str = "openai", **kw: Any) -> Any:
        if type == "azure":
            kw.setdefault("endpoint", url)
        else:
            kw.setdefault("base_url", url)
        ch = await ops.add_channel(self.gw.store, self.gw.box, name, type, key=key,
                                   models=models, **kw)
        self.gw.router.invalidate()
        return ch

    async def stop(self) -> None:
        await self.server.stop()


async def start_gateway(tmp_path: Path, **settings: Any) -> RunningGateway:
    settings.setdefault("data_dir", tmp_path / "data")
    settings.setdefault("local_engine", False)
    settings.setdefault("refresh_seconds", 0.2)
    s = load_settings(**settings)
    server = await Server.start(s, "127.0.0.1", 0)
    tls = s.tls_cert
    port = server.port
    http = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    ws = "wss" if tls else "ws"
    return RunningGateway(url=f"{ws}://127.0.0.1:{port}/v1/realtime", http=http,
                          base_url=f"{http}/v1", server=server)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    g = await start_gateway(tmp_path)
    try:
        yield g
    finally:
        await g.stop()
