"""Operator actions.  The CLI and the admin API both call these."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from .auth import display_prefix, hash_secret, new_secret
from .billing import nanos_of, usd_text
from .crypto import SecretBox
from .store.base import ChannelRecord, StoreError, TokenLimits, TokenRecord
from .store.ledger_sql import REPORT_GROUPS

CHANNEL_TYPES = ("openai", "azure", "local")


def split_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else value.split(",")
    return [v.strip() for v in items if v and v.strip()]


_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def parse_expiry(value: str | None) -> datetime | None:
    """``YYYY-MM-DD`` (valid through the end of that day, UTC) or an ISO
    timestamp, not in the past: a token that expired before it was made is
    a typo, not a wish (``tokens revoke`` ends a token now)."""
    if not value:
        return None
    m = _DAY.fullmatch(value.strip())
    if m:
        year, month, day = map(int, m.groups())
        try:
            dt = datetime.combine(date(year, month, day), time.max, tzinfo=timezone.utc)
        except ValueError:
            if not 1 <= month <= 12:
                why = f"there is no month {month}"
            elif year >= 1:
                why = (f"{calendar.month_name[month]} {year} has "
                       f"{calendar.monthrange(year, month)[1]} days")
            else:
                why = "there is no year 0"
            raise StoreError(f"--expires {value}: that date does not exist ({why})") from None
    else:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise StoreError(f"--expires {value!r} is not a date: use YYYY-MM-DD") from None
        dt = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    if dt <= datetime.now(timezone.utc):
        raise StoreError(f"--expires {value} is in the past: the token could never be used. "
                         "Give a later day (valid through that day, UTC) or leave --expires "
                         "out; `openopen8 tokens revoke NAME` ends a token now.")
    return dt


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


#: limit options as the CLI and admin API take them -> (TokenLimits field, kind)
LIMIT_OPTIONS = {
    "quota_usd": ("quota_nanos", "usd"),
    "max_sessions": ("max_sessions", "count"),
    "max_duration": ("max_duration", "seconds"),
    "idle_timeout": ("idle_timeout", "seconds"),
    "sessions_per_minute": ("sessions_per_minute", "count"),
}
_WANTS = {"usd": "a USD amount", "count": "a whole number", "seconds": "seconds"}
_NO_LIMIT = ("none", "off", "unlimited")


def parse_limits(**given: Any) -> dict[str, Any]:
    """``quota_usd=…, max_sessions=…`` (None: leave as is; ``"none"``: no
    limit) as :class:`TokenLimits` field changes."""
    out: dict[str, Any] = {}
    for opt, value in given.items():
        field, kind = LIMIT_OPTIONS[opt]
        if value is None:
            continue
        if isinstance(value, str) and value.strip().lower() in _NO_LIMIT:
            out[field] = None
            continue
        flag = "--" + opt.replace("_", "-")
        try:
            num = Decimal(str(value).strip())
        except InvalidOperation:
            raise StoreError(f"{flag} wants {_WANTS[kind]} or 'none', got {value!r}") from None
        if not num.is_finite() or num < 0:
            raise StoreError(f"{flag} must not be negative")
        if kind == "usd":
            out[field] = nanos_of(num)
        elif kind == "count":
            if num != num.to_integral_value():
                raise StoreError(f"{flag} wants {_WANTS[kind]}, got {value!r}")
            out[field] = int(num)
        else:
            if num == 0:
                raise StoreError(f"{flag} must be more than 0 seconds")
            out[field] = float(num)
    return out


async def update_token(store: Any, name: str, models: list[str] | None = None,
                       expires: str | None = None, **limits: Any) -> TokenRecord:
    changes = parse_limits(**limits)
    if models is not None:
        changes["models"] = models
    if expires is not None:
        changes["expires_at"] = None if expires.lower() in _NO_LIMIT else parse_expiry(expires)
    return await store.update_token(name, changes)


def _usd_text(nanos: int | None) -> str | None:
    return None if nanos is None else usd_text(nanos)


def token_view(t: TokenRecord) -> dict[str, Any]:
    """What may be shown of a token: never the secret or its hash."""
    lim = t.limits
    return {"name": t.name, "prefix": t.prefix + "…", "models": t.models,
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "revoked": t.revoked_at is not None,
            "created_at": t.created_at.isoformat() if t.created_at else None,
            "quota_usd": _usd_text(lim.quota_nanos), "spent_usd": _usd_text(t.spent_nanos),
            "max_sessions": lim.max_sessions, "max_duration": lim.max_duration,
            "idle_timeout": lim.idle_timeout, "sessions_per_minute": lim.sessions_per_minute}


def parse_when(value: str | None, *, end: bool = False) -> datetime | None:
    """A report bound: ``YYYY-MM-DD`` (``end``: the day is included, so the
    bound is the next midnight) or an ISO timestamp (UTC unless it says)."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = datetime.combine(date.fromisoformat(value), time.min, tzinfo=timezone.utc)
            return day + timedelta(days=1) if end else day
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise StoreError(f"not a date: {value!r} (use YYYY-MM-DD or an ISO timestamp)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


#: token classes in reports, as the ledger stores them (input_* include cached_*)
REPORT_TOKENS = ("input_text", "input_audio", "input_image", "cached_text", "cached_audio",
                 "cached_image", "output_text", "output_audio")


async def usage_report(store: Any, by: str = "model", token: str | None = None,
                       model: str | None = None, since: str | None = None,
                       until: str | None = None, by_name: str = "by") -> dict[str, Any]:
    """Ledger totals per day, model, token or channel, with a grand total.
    ``since`` is inclusive; ``until`` includes its day (or is exclusive as a
    timestamp).  Costs are exact USD strings from the integer nano-dollars.
    ``by_name`` is what the caller's user typed ``by`` as (the CLI's
    ``--by``, the admin API's query parameter), for the error message."""
    if by not in REPORT_GROUPS:
        raise StoreError(f"{by_name} must be one of {', '.join(REPORT_GROUPS)} (got {by!r})")
    rows = await store.usage_report(by, token=token, model=model, since=parse_when(since),
                                    until=parse_when(until, end=True))
    total: dict[str, Any] = {"key": "total"}
    for r in rows:
        for k, v in r.items():
            if k != "key":
                total[k] = total.get(k, 0) + v
    views = []
    for r in [*rows, total]:
        v = {"key": r["key"], "responses": r.get("responses", 0),
             "transcriptions": r.get("transcriptions", 0)}
        v.update({k: r.get(k, 0) for k in REPORT_TOKENS})
        v["transcription_seconds"] = round(r.get("seconds", 0.0), 3)
        v["cost_usd"] = _usd_text(r.get("cost_nanos", 0))
        v["cost_nanos"] = r.get("cost_nanos", 0)
        v["priced_by_fallback"] = r.get("fallback", 0)
        views.append(v)
    return {"by": by, "token": token, "model": model, "since": since, "until": until,
            "rows": views[:-1], "total": views[-1]}


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


async def end_session(store: Any, session_id: str, reason: str = "session_ended") -> None:
    """End a running session on whichever gateway instance runs it: the
    instance notices within ``balance_refresh_seconds`` (plus a tick), tells
    the client (``error`` with code ``reason``, ``session_ended`` by default)
    and closes it with 1008, its usage settled.  StoreError when no such
    session is open."""
    if not await store.request_session_end(session_id, reason):
        raise StoreError(f"no open session {session_id!r}")
