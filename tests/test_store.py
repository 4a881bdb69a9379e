"""The store's named operations, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect

from openopen8 import ops
from openopen8.auth import hash_secret
from openopen8.crypto import SecretBox
from openopen8.store.base import StoreError
from openopen8.store.schema import metadata
from openopen8.store.sql import open_store


async def test_tokens_round_trip(db_url):
    store = await open_store(db_url)
    try:
        new = await ops.create_token(store, "alice", ["gpt-realtime"], "2031-02-03")
        assert new.secret.startswith("oo8_") and len(new.secret) > 40
        found = await store.token_by_hash(hash_secret(new.secret))
        assert found is not None and found.name == "alice" and found.models == ["gpt-realtime"]
        assert found.expires_at == datetime(2031, 2, 3, 23, 59, 59, 999999, tzinfo=timezone.utc)
        assert not found.expired() and found.expired(found.expires_at + timedelta(seconds=1))
        assert await store.token_by_hash(hash_secret(new.secret + "x")) is None
        with pytest.raises(StoreError):
            await ops.create_token(store, "alice")
        revoked = await store.revoke_token("alice")
        assert revoked.revoked_at is not None
        with pytest.raises(StoreError):
            await store.revoke_token("nobody")
        assert [t.name for t in await store.list_tokens()] == ["alice"]
    finally:
        await store.close()


async def test_only_the_hash_is_stored(db_url):
    store = await open_store(db_url)
    try:
        new = await ops.create_token(store, "bob")
        async with store.engine.connect() as conn:
            rows = (await conn.exec_driver_sql("SELECT * FROM tokens")).all()
        assert new.secret not in repr(rows)
        assert hash_secret(new.secret) in repr(rows)
    finally:
        await store.close()


async def test_channels_round_trip_with_encrypted_keys(db_url):
    store = await open_store(db_url)
    box = SecretBox("server-secret")
    try:
        ch = await ops.add_channel(store, box, "az", "azure", key="azure-key-123", models=["gpt-realtime"],
                                   endpoint="https://res.openai.azure.com",
                                   deployments={"gpt-realtime": "dep1"}, api_version=None,
                                   priority=5, weight=3)
        assert b"azure-key-123" not in ch.key_encrypted
        assert box.open(ch.key_encrypted) == "azure-key-123"
        with pytest.raises(ValueError):
            SecretBox("another-secret").open(ch.key_encrypted)
        await ops.add_channel(store, box, "oa", "openai", key="sk-1", models=["gpt-realtime", "m2"])
        listed = await store.list_channels()
        assert [c.name for c in listed] == ["az", "oa"]          # priority first
        assert listed[0].deployments == {"gpt-realtime": "dep1"} and listed[0].weight == 3
        assert not (await store.set_channel_enabled("oa", False)).enabled
        await store.remove_channel("az")
        assert [c.name for c in await store.list_channels()] == ["oa"]
        with pytest.raises(StoreError):
            await store.remove_channel("az")
        with pytest.raises(StoreError):
            await ops.add_channel(store, box, "oa", "openai", key="k", models=["m"])
    finally:
        await store.close()


async def test_migrations_build_the_declared_schema_and_are_idempotent(db_url):
    store = await open_store(db_url)
    await store.migrate()  # a second run is a no-op
    try:
        async with store.engine.connect() as conn:
            def describe(sync_conn):
                insp = inspect(sync_conn)
                return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}
            tables = await conn.run_sync(describe)
        for table in metadata.sorted_tables:
            assert table.name in tables
            assert {c.name for c in table.columns} == tables[table.name]
    finally:
        await store.close()
