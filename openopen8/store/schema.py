"""Table definitions (SQLAlchemy Core).  Alembic migrations create them;
keep the two in step (``tests/store`` checks the migrated schema matches)."""

from __future__ import annotations

from sqlalchemy import (JSON, Boolean, Column, DateTime, Integer, LargeBinary, MetaData,
                        String, Table)

metadata = MetaData()

tokens = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("models", JSON, nullable=False, default=list),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

channels = Table(
    "channels", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("type", String(20), nullable=False),
    Column("base_url", String(500), nullable=False),
    Column("key_encrypted", LargeBinary, nullable=False),
    Column("models", JSON, nullable=False, default=list),
    Column("deployments", JSON, nullable=False, default=dict),
    Column("api_version", String(40)),
    Column("priority", Integer, nullable=False, default=0),
    Column("weight", Integer, nullable=False, default=1),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("extra", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
