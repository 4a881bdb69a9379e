"""Operator actions.  The CLI and the admin API both call these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import Any

from .auth import display_prefix, hash_secret, new_secret
from .crypto import SecretBox
from .store.base import ChannelRecord, StoreError, TokenLimits, TokenRecord

CHANNEL_TYPES = ("openai", "azure", "local")


def split_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else value.split(",")
    return [v.strip() for v in items if v and v.strip()]


def parse_expiry(value: str | None) -> datetime | None:
    """``YYYY-MM-DD`` (valid through the end of that day, UTC) or an ISO timestamp."""
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time.max, tzinfo=timezone.utc)
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise StoreError(f"not a date: {value!r} (use YYYY-MM-DD)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass
class NewToken:
    record: TokenRecord
    secret: str


async def create_token(store: Any, name: str, models: list[str] | None = None,
                       expires: str | None = None, limits: TokenLimits | None = None) -> NewToken:
    secret = new_secret()
    rec = await store.create_token(name, hash_secret(secret), display_prefix(secret),
                                   models or [], parse_expiry(expires), limits)
    return NewToken(rec, secret)


def token_view(t: TokenRecord) -> dict[str, Any]:
    """What may be shown of a token: never the secret or its hash."""
    return {"name": t.name, "prefix": t.prefix + "…", "models": t.models,
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "revoked": t.revoked_at is not None,
            "created_at": t.created_at.isoformat() if t.created_at else None}


def parse_deployments(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        model, sep, dep = item.partition("=")
        if not sep or not model.strip() or not dep.strip():
            raise StoreError(f"--deployment wants MODEL=DEPLOYMENT, got {item!r}")
        out[model.strip()] = dep.strip()
    return out


async def add_channel(store: Any, box: SecretBox, name: str, type: str, *, key: str | None,
                      models: list[str], base_url: str | None = None,
                      endpoint: str | None = None, deployments: dict[str, str] | None = None,
                      api_version: str | None = None, priority: int = 0,
                      weight: int = 1) -> ChannelRecord:
    if type not in CHANNEL_TYPES:
        raise StoreError(f"unknown channel type {type!r} (one of {', '.join(CHANNEL_TYPES)})")
    if not models:
        raise StoreError("a channel needs --models")
    if weight < 1:
        raise StoreError("--weight must be at least 1")
    if type == "openai":
        from .providers.openai import DEFAULT_BASE_URL
        url = base_url or DEFAULT_BASE_URL
    elif type == "azure":
        if not endpoint:
            raise StoreError("an azure channel needs --endpoint https://RESOURCE.openai.azure.com")
        url = endpoint
    else:
        url = ""
    if type != "local" and not key:
        raise StoreError("a channel needs --key")
    if not url.startswith(("http://", "https://", "ws://", "wss://")) and type != "local":
        raise StoreError(f"not an http(s) URL: {url!r}")
    rec = ChannelRecord(id=0, name=name, type=type, base_url=url,
                        key_encrypted=box.seal(key or ""), models=models,
                        deployments=deployments or {}, api_version=api_version,
                        priority=priority, weight=weight)
    return await store.add_channel(rec)


def channel_view(c: ChannelRecord) -> dict[str, Any]:
    """What may be shown of a channel: never its key."""
    return {"name": c.name, "type": c.type, "url": c.base_url, "models": c.models,
            "deployments": c.deployments, "api_version": c.api_version,
            "priority": c.priority, "weight": c.weight, "enabled": c.enabled}
