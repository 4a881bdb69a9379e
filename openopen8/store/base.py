"""The storage interface: a few named operations, one transaction each.

Records are plain dataclasses; nothing of SQLAlchemy crosses this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=timezone.utc)


@dataclass
class TokenRecord:
    id: int
    name: str
    prefix: str                      # first characters of the secret, for display
    models: list[str] = field(default_factory=list)   # empty: every model
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime | None = None

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at


@dataclass
class ChannelRecord:
    id: int
    name: str
    type: str                        # openai | azure | local
    base_url: str                    # openai base URL, or the azure endpoint
    key_encrypted: bytes = b""
    models: list[str] = field(default_factory=list)
    deployments: dict[str, str] = field(default_factory=dict)
    api_version: str | None = None
    priority: int = 0
    weight: int = 1
    enabled: bool = True
    created_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StoreError(Exception):
    """A named operation failed for a reason the caller can act on
    (duplicate name, unknown name)."""


class Store(Protocol):
    async def close(self) -> None: ...

    # tokens
    async def create_token(self, name: str, secret_hash: str, prefix: str, models: list[str],
                           expires_at: datetime | None) -> TokenRecord: ...
    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None: ...
    async def list_tokens(self) -> list[TokenRecord]: ...
    async def revoke_token(self, name: str) -> TokenRecord: ...

    # channels
    async def add_channel(self, ch: ChannelRecord) -> ChannelRecord: ...
    async def list_channels(self) -> list[ChannelRecord]: ...
    async def set_channel_enabled(self, name: str, enabled: bool) -> ChannelRecord: ...
    async def remove_channel(self, name: str) -> None: ...
