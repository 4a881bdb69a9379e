"""The storage interface: a few named operations, one transaction each.

Records are plain dataclasses; nothing of SQLAlchemy crosses this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from ..billing import Tokens


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=timezone.utc)


@dataclass
class TokenLimits:
    """What a token may spend and how it may connect (None: no limit)."""

    quota_nanos: int | None = None        # total spend allowed, nano-dollars
    max_sessions: int | None = None       # sessions at once (across instances)
    max_duration: float | None = None     # seconds per session
    idle_timeout: float | None = None     # seconds without a client event
    sessions_per_minute: int | None = None

    FIELDS = ("quota_nanos", "max_sessions", "max_duration", "idle_timeout", "sessions_per_minute")


@dataclass
class TokenRecord:
    id: int
    name: str
    prefix: str                      # first characters of the secret, for display
    models: list[str] = field(default_factory=list)   # empty: every model
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime | None = None
    limits: TokenLimits = field(default_factory=TokenLimits)
    spent_nanos: int = 0
    #: what the operator pins for this token's sessions (openopen8/policy.py)
    policy: dict[str, Any] = field(default_factory=dict)
    #: browser origins its sessions may come from (``Origin``); empty: any
    origins: list[str] = field(default_factory=list)
    log_transcripts: bool | None = None   # None: the gateway's setting

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at


@dataclass
class ClientSecretRecord:
    """A short-lived ``ek_`` secret minted with a token (only its hash is stored)."""

    id: int
    token_id: int
    prefix: str
    session: dict[str, Any]           # the GA session it starts with
    model: str | None
    expires_at: datetime
    max_uses: int | None = None       # None: any number of sessions until it expires
    uses: int = 0
    created_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at


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


@dataclass
class UsageRow:
    """One ledger row: the usage of one response or one input transcription."""

    session_id: str
    kind: str                        # response | transcription
    ref: str                         # response id, or item id/content index
    token_id: int
    model: str
    tokens: Tokens
    cost_nanos: int
    fallback: bool = False           # priced by the fallback price
    channel: str | None = None
    status: str | None = None        # completed | cancelled | failed | incomplete
    created_at: datetime = field(default_factory=utcnow)


@dataclass
class SessionEnd:
    """What the sessions row records when a session ends."""

    id: str
    closed_by: str
    close_code: int | None
    channel: str | None = None
    events_in: int = 0
    events_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    closed_at: datetime = field(default_factory=utcnow)


@dataclass
class Balance:
    """A token's spend as the database has it (after a write or a read)."""

    token_id: int
    spent_nanos: int
    quota_nanos: int | None


class LimitReached(Exception):
    """A new session would break one of the token's limits.  ``limit`` is
    ``quota_nanos``, ``max_sessions`` or ``sessions_per_minute``; ``value``
    the limit itself."""

    def __init__(self, limit: str, value: Any) -> None:
        super().__init__(limit)
        self.limit = limit
        self.value = value


class StoreError(Exception):
    """A named operation failed for a reason the caller can act on
    (duplicate name, unknown name)."""


class Store(Protocol):
    async def close(self) -> None: ...

    # tokens
    async def create_token(self, name: str, secret_hash: str, prefix: str, models: list[str],
                           expires_at: datetime | None,
                           limits: TokenLimits | None = None) -> TokenRecord: ...
    async def update_token(self, name: str, changes: dict[str, Any]) -> TokenRecord: ...
    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None: ...
    async def token_by_name(self, name: str) -> TokenRecord | None: ...
    async def list_tokens(self) -> list[TokenRecord]: ...
    async def revoke_token(self, name: str) -> TokenRecord: ...

    # client secrets (store/secrets_sql.py)
    async def create_client_secret(self, secret_hash: str, prefix: str, token_id: int,
                                   session: dict[str, Any], model: str | None,
                                   expires_at: datetime,
                                   max_uses: int | None = None) -> ClientSecretRecord: ...
    async def client_secret_by_hash(
            self, secret_hash: str) -> tuple[ClientSecretRecord, TokenRecord] | None: ...
    async def delete_expired_client_secrets(self, before: datetime) -> int: ...

    # channels
    async def add_channel(self, ch: ChannelRecord) -> ChannelRecord: ...
    async def list_channels(self) -> list[ChannelRecord]: ...
    async def set_channel_enabled(self, name: str, enabled: bool) -> ChannelRecord: ...
    async def remove_channel(self, name: str) -> None: ...

    # sessions and the ledger (store/ledger_sql.py)
    async def open_session(self, session_id: str, token_id: int, model: str, instance: str,
                           lease_until: datetime,
                           pending_nanos: int = 0) -> tuple[TokenLimits, int]:
        """Check the token's quota, concurrency and rate limits and record the
        session, atomically (raises :class:`LimitReached`); returns the
        token's limits and spend."""
    async def drop_session(self, session_id: str) -> None: ...
    async def renew_leases(self, session_ids: list[str], lease_until: datetime) -> None: ...
    async def close_orphans(self, *, expired_before: datetime | None = None,
                            instances_like: str | None = None,
                            keep_instance: str | None = None) -> int:
        """Close rows a dead gateway process left open (``closed_by='crash'``)."""
    async def write_ledger(self, rows: list[UsageRow], ends: list[SessionEnd],
                           channels: dict[str, str] | None = None) -> list[Balance]:
        """Insert rows (a row already recorded is skipped), add what was new
        to the tokens' spend and close sessions, in one transaction."""
    async def balances(self, token_ids: list[int]) -> list[Balance]: ...
    async def request_session_end(self, session_id: str, reason: str) -> bool:
        """Set ``end_requested``: the instance running the session ends it at
        its next balance refresh.  False when no such session is open."""
    async def sessions_to_end(self, instance: str) -> dict[str, str]:
        """``instance``'s open sessions to end, with why (an end requested, or
        ``token_revoked`` / ``token_expired``)."""
    async def usage_report(self, by: str, token: str | None = None, model: str | None = None,
                           since: datetime | None = None,
                           until: datetime | None = None) -> list[dict[str, Any]]: ...
