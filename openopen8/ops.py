"""Operator actions.  The CLI and the admin API both call these."""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from . import policy as policy_rules
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
                       expires: str | None = None, limits: TokenLimits | None = None,
                       policy: dict[str, Any] | None = None, origins: list[str] | None = None,
                       log_transcripts: bool | None = None) -> NewToken:
    """A new token; ``policy`` as :func:`openopen8.policy.normalize` takes it,
    ``origins`` the browser origins it may be used from (empty: any)."""
    settings = {"policy": checked_policy(policy), "origins": checked_origins(origins),
                "log_transcripts": log_transcripts}
    secret = new_secret()
    rec = await store.create_token(name, hash_secret(secret), display_prefix(secret),
                                   models or [], parse_expiry(expires), limits, **settings)
    return NewToken(rec, secret)


async def find_token(store: Any, name: str) -> TokenRecord:
    """The token named ``name``, or :class:`StoreError`."""
    found = await store.token_by_name(name)
    if found is None:
        raise StoreError(f"no token named {name!r}")
    return found


class FieldError(StoreError):
    """A value an operator gave is unusable; ``field`` names it (``policy.voices``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def checked_policy(raw: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return policy_rules.normalize(raw)
    except policy_rules.PolicyError as exc:
        raise FieldError(f"policy.{exc.field}", f"policy.{exc.field}: {exc}") from None


_ORIGIN = re.compile(r"(https?)://[^/\s?#]+")


def checked_origins(origins: list[str] | None) -> list[str]:
    """Browser origins as a page's ``Origin`` header spells them
    (``https://app.example.com``, ``http://127.0.0.1:3000``)."""
    out = []
    for o in origins or []:
        o = o.strip().rstrip("/")
        if not _ORIGIN.fullmatch(o):
            raise FieldError("origins", f"origins: {o!r} is not an origin (scheme://host[:port], "
                             "no path), e.g. https://app.example.com")
        out.append(o)
    return list(dict.fromkeys(out))


def policy_from_options(*, instructions: str | None = None, instructions_file: str | None = None,
                        instructions_mode: str | None = None, voices: str | None = None,
                        max_output_tokens: int | None = None, tools: str | None = None,
                        modalities: str | None = None,
                        transcription_model: str | None = None) -> dict[str, Any]:
    """The CLI's policy options as policy fields (unset options left out);
    ``tools`` is ``none``, ``any`` or a JSON file of function tools (a list,
    or ``{"tools": [...]}``)."""
    out: dict[str, Any] = {}
    if instructions is not None and instructions_file is not None:
        raise FieldError("policy.instructions", "give --instructions or --instructions-file, "
                         "not both")
    if instructions_file is not None:
        try:
            with open(instructions_file, encoding="utf-8") as f:
                instructions = f.read().strip()
        except OSError as exc:
            raise FieldError("policy.instructions", f"--instructions-file: {exc.strerror}: "
                             f"{instructions_file}") from None
    for key, value in (("instructions", instructions), ("instructions_mode", instructions_mode),
                       ("max_output_tokens", max_output_tokens),
                       ("transcription_model", transcription_model)):
        if value is not None:
            out[key] = value
    if voices is not None:
        out["voices"] = split_list(voices)
    if modalities is not None:
        out["modalities"] = split_list(modalities)
    if tools is not None:
        if tools.strip().lower() in ("none", "any"):
            out["tools"] = tools.strip().lower()
        else:
            try:
                with open(tools, encoding="utf-8") as f:
                    loaded = json.load(f)
            except OSError as exc:
                raise FieldError("policy.tools", f"--tools: {exc.strerror}: {tools} (give none, "
                                 "any, or a JSON file of function tools)") from None
            except ValueError as exc:
                raise FieldError("policy.tools", f"--tools {tools}: not JSON ({exc})") from None
            out["tools"] = loaded.get("tools") if isinstance(loaded, dict) else loaded
    return out


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
                       expires: str | None = None, *, policy: dict[str, Any] | None = None,
                       clear_policy: bool = False, origins: list[str] | None = None,
                       log_transcripts: bool | None = None, **limits: Any) -> TokenRecord:
    """Change a token.  ``policy``: fields merged into its policy (``None`` as
    a value drops that field; ``clear_policy`` starts from none);
    ``origins``: the new list (``[]``: any origin)."""
    changes = parse_limits(**limits)
    if models is not None:
        changes["models"] = models
    if expires is not None:
        changes["expires_at"] = None if expires.lower() in _NO_LIMIT else parse_expiry(expires)
    if policy is not None or clear_policy:
        current: dict[str, Any] = {}
        if not clear_policy:
            current = dict((await find_token(store, name)).policy)
        for key, value in (policy or {}).items():
            if value is None:
                current.pop(key, None)
                if key == "instructions":
                    current.pop("instructions_mode", None)
            else:
                current[key] = value
        changes["policy"] = checked_policy(current)
    if origins is not None:
        changes["origins"] = checked_origins(origins)
    if log_transcripts is not None:
        changes["log_transcripts"] = log_transcripts
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
            "idle_timeout": lim.idle_timeout, "sessions_per_minute": lim.sessions_per_minute,
            "policy": t.policy, "origins": t.origins, "log_transcripts": t.log_transcripts}


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


# ---- the operator's console (admin API and dashboard) --------------------------

async def delete_token(store: Any, name: str) -> None:
    """Delete a token (and its client secrets); its usage stays in the ledger."""
    await store.delete_token(name)


async def update_channel(store: Any, box: SecretBox, name: str, *, priority: int | None = None,
                         weight: int | None = None, models: list[str] | None = None,
                         key: str | None = None, base_url: str | None = None,
                         deployments: dict[str, str] | None = None,
                         api_version: str | None = None,
                         enabled: bool | None = None) -> ChannelRecord:
    """Change a channel: priority, weight, models, a new key (rotation), its
    URL, Azure deployments and api-version, enabled.  None: leave as is."""
    changes: dict[str, Any] = {}
    if priority is not None:
        changes["priority"] = priority
    if weight is not None:
        if weight < 1:
            raise StoreError("--weight must be at least 1")
        changes["weight"] = weight
    if models is not None:
        if not models:
            raise StoreError("a channel needs --models")
        changes["models"] = models
    if key is not None:
        if not key:
            raise StoreError("--key must not be empty")
        changes["key_encrypted"] = box.seal(key)
    if base_url is not None:
        if not base_url.startswith(("http://", "https://", "ws://", "wss://")):
            raise StoreError(f"not an http(s) URL: {base_url!r}")
        changes["base_url"] = base_url
    if deployments is not None:
        changes["deployments"] = deployments
    if api_version is not None:
        changes["api_version"] = api_version or None
    if enabled is not None:
        changes["enabled"] = enabled
    return await store.update_channel(name, changes)


async def test_channel(router: Any, ch: ChannelRecord, model: str | None = None) -> dict[str, Any]:
    """A real handshake with a channel's upstream: ``ok`` with the first
    event (``session.created``), or the failure class (unreachable, timeout,
    auth, rejected, unavailable, protocol) and what was said; ``seconds``
    it took.  A local channel reports the engine's state instead."""
    import secrets as _secrets
    import time as _time

    from .providers.base import ConnectRequest, UpstreamError

    model = model or (ch.models[0] if ch.models else "")
    if ch.type == "local":
        state = router.local_state()
        return {"channel": ch.name, "model": model, "ok": state == "ready",
                "event": None, "kind": None if state == "ready" else state,
                "detail": f"local engine {state}", "seconds": 0.0}
    started = _time.monotonic()
    result: dict[str, Any] = {"channel": ch.name, "model": model, "ok": False, "event": None,
                              "kind": None, "detail": ""}
    try:
        ep = await router.provider(ch).connect(ConnectRequest(
            model=model, session_id="test_" + _secrets.token_hex(8)))
    except UpstreamError as exc:
        result.update(kind=exc.kind, detail=exc.detail)
    except ValueError:   # a key this server cannot decrypt
        result.update(kind="auth", detail="the channel's key cannot be decrypted here")
    else:
        try:
            first = await ep.wait_early(1)
            result["event"] = first.type if first is not None else None
            if first is not None and first.type == "session.created":
                result.update(ok=True, detail="session.created")
            else:
                result.update(kind="protocol",
                              detail=f"first event {result['event']!r}, not session.created")
        finally:
            await ep.close(1000)
    result["seconds"] = round(_time.monotonic() - started, 3)
    return result


def _iso(dt: Any) -> str | None:
    return dt.isoformat() if dt is not None else None


def session_view(r: dict[str, Any]) -> dict[str, Any]:
    """A sessions row for JSON: times ISO, cost as exact USD."""
    out = dict(r)
    for k in ("opened_at", "closed_at"):
        out[k] = _iso(out.get(k))
    out["cost_usd"] = _usd_text(out.get("cost_nanos", 0))
    out["state"] = "open" if out.get("closed_at") is None else "closed"
    for row in out.get("ledger", ()):
        row["created_at"] = _iso(row["created_at"])
        row["cost_usd"] = _usd_text(row["cost_nanos"])
    for t in out.get("turns", ()):
        t["created_at"] = _iso(t["created_at"])
        t["cost_usd"] = _usd_text(t["cost_nanos"])
    return out


def _parse_int(value: Any, name: str, low: int = 0, high: int | None = None) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(str(value))
    except ValueError:
        raise StoreError(f"{name} wants a whole number, got {value!r}") from None
    if n < low or (high is not None and n > high):
        raise StoreError(f"{name} must be between {low} and {high}" if high is not None
                         else f"{name} must be at least {low}")
    return n


SESSION_STATES = ("all", "open", "closed")


async def list_sessions(store: Any, *, token: str | None = None, model: str | None = None,
                        channel: str | None = None, close_code: Any = None,
                        since: str | None = None, until: str | None = None,
                        state: str | None = None, limit: Any = 50,
                        offset: Any = 0) -> dict[str, Any]:
    """Past (and open) sessions from the store, newest first, with their
    spend; filtered and paginated."""
    state = state or "all"
    if state not in SESSION_STATES:
        raise StoreError(f"state must be one of {', '.join(SESSION_STATES)} (got {state!r})")
    lim = _parse_int(limit, "limit", 1, 500) or 50
    off = _parse_int(offset, "offset", 0) or 0
    bounds = {}
    for name, value in (("since", since), ("until", until)):
        try:
            bounds[name] = parse_when(value, end=name == "until")
        except StoreError as exc:
            raise StoreError(f"{name}: {exc}") from None
    rows, total = await store.list_sessions(
        token=token or None, model=model or None, channel=channel or None,
        close_code=_parse_int(close_code, "close_code", 0, 4999),
        since=bounds["since"], until=bounds["until"],
        state=None if state == "all" else state, limit=lim, offset=off)
    return {"total": total, "limit": lim, "offset": off,
            "sessions": [session_view(r) for r in rows]}


def _meter(s: Any) -> Any:
    from .stages.metering import MeteringStage
    for st in getattr(getattr(s, "chain", None), "stages", ()):
        if isinstance(st, MeteringStage):
            return st
    return None


async def live_sessions(gw: Any) -> list[dict[str, Any]]:
    """The sessions running on this instance: token, model, channel, client
    address, started, events, audio seconds and spend so far (the ledger's
    rows plus the estimate of what is in flight)."""
    live = list(gw.live.values())
    written = await gw.store.session_costs([s.id for s in live])
    out = []
    for s in live:
        meter = _meter(s)
        row = s.facts.get("row", {})
        inflight = meter.estimate_nanos() if meter is not None else 0
        spent = written.get(s.id, 0) + max(inflight, 0)
        out.append({
            "id": s.id, "token": getattr(s.token, "name", None), "model": s.model,
            "channel": getattr(s.channel, "name", None), "client": row.get("client"),
            "via": row.get("via"),
            "opened_at": datetime.fromtimestamp(s.opened_at, timezone.utc).isoformat(),
            "events_in": s.events_in, "events_out": s.events_out,
            "audio_in_seconds": round(meter.audio_in_seconds, 3) if meter else 0.0,
            "audio_out_seconds": round(meter.audio_out_seconds, 3) if meter else 0.0,
            "cost_nanos": spent, "cost_usd": _usd_text(spent), "state": "live"})
    out.sort(key=lambda r: r["opened_at"], reverse=True)
    return out


async def session_detail(gw: Any, session_id: str) -> dict[str, Any]:
    found = await gw.store.get_session(session_id)
    if found is None:
        raise StoreError(f"no session {session_id!r}")
    view = session_view(found)
    live = {r["id"]: r for r in await live_sessions(gw)} if session_id in gw.live else {}
    if session_id in live:
        view["live"] = live[session_id]
        view["state"] = "live"
    return view


async def end_live_session(gw: Any, session_id: str, reason: str = "session_ended") -> str:
    """End a session: through the store (whichever instance runs it), and at
    once when it runs on this instance (the same close: error + 1008, usage
    settled).  Returns where it ran: ``here`` or ``elsewhere``."""
    await end_session(gw.store, session_id, reason)
    s = gw.live.get(session_id)
    grant = s.facts.get("grant") if s is not None else None
    if grant is not None and grant.end is None:
        grant.end = reason       # its limits stage ends it on the next tick
    return "here" if s is not None else "elsewhere"


async def overview(gw: Any, days: int = 7) -> dict[str, Any]:
    """The console's first page: live sessions, today, the last ``days``
    days (sessions and cost per day) and the channels' state."""
    today = datetime.now(timezone.utc).date()
    first = today - timedelta(days=days - 1)
    daily = await gw.store.daily(datetime.combine(first, time.min, tzinfo=timezone.utc))
    series = []
    for i in range(days):
        d = (first + timedelta(days=i)).isoformat()
        v = daily.get(d, {"sessions": 0, "cost_nanos": 0})
        series.append({"day": d, "sessions": v["sessions"], "cost_nanos": v["cost_nanos"],
                       "cost_usd": _usd_text(v["cost_nanos"])})
    channels = [channel_view(c) for c in await gw.store.list_channels()]
    return {"live": await live_sessions(gw), "today": series[-1], "days": series,
            "channels": channels, "local_engine": gw.router.local_state()
            if gw.settings.local_engine else "disabled"}


def usage_csv(report: dict[str, Any]) -> str:
    """A usage report as CSV: one line per row and the total."""
    import csv
    import io

    cols = ["key", "responses", "transcriptions", *REPORT_TOKENS, "transcription_seconds",
            "cost_usd", "priced_by_fallback"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([report["by"] if c == "key" else c for c in cols])
    for r in [*report["rows"], report["total"]]:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return buf.getvalue()
