"""The SQL side of metering: session rows with leases, the usage ledger and
the tokens' running spend.  Mixed into :class:`~openopen8.store.sql.SqlStore`.

Every operation is one transaction.  The ones that read and then write take
the write lock first (``SqlStore.writing``: ``BEGIN IMMEDIATE`` on SQLite,
``SELECT … FOR UPDATE`` of the token row on PostgreSQL), so limits hold when
several sessions -- and several gateway instances -- admit at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from . import schema
from .base import (Balance, LimitReached, SessionEnd, StoreError, TokenLimits, UsageRow,
                   utcnow)

REPORT_GROUPS = ("day", "model", "token", "channel")

_T, _S, _L = schema.tokens, schema.sessions, schema.ledger

#: ledger columns summed by reports, in report order
_SUMS = ("input_text", "input_audio", "input_image", "cached_text", "cached_audio",
         "cached_image", "output_text", "output_audio")


def _fit(value: str | None, column: Any) -> str | None:
    """``value`` cut to ``column``'s length.  Names in usage rows can come from
    clients and upstreams (a transcription model, a response id); one too long
    for PostgreSQL's VARCHAR must not make every row of its batch fail."""
    n = column.type.length
    return value[:n] if isinstance(value, str) and n and len(value) > n else value


class LedgerOps:
    engine: Any
    sqlite: bool

    def writing(self) -> Any:  # provided by SqlStore
        raise NotImplementedError

    # ---- sessions ------------------------------------------------------------

    async def open_session(self, session_id: str, token_id: int, model: str, instance: str,
                           lease_until: datetime, pending_nanos: int = 0,
                           details: dict[str, Any] | None = None
                           ) -> tuple[TokenLimits, int]:
        """Check the token's quota (its spend plus ``pending_nanos`` this
        instance has not written yet), live sessions and sessions in the last
        minute, then record the session -- atomically.  Returns the token's
        current limits and spend; raises :class:`LimitReached`.

        ``details``: the row's ``client``, ``via`` and ``secret_id``; with a
        ``secret_id`` one use of that client secret is taken in the same
        transaction (``LimitReached("secret_uses")`` when none is left)."""
        now = utcnow()
        async with self.writing() as conn:
            row = (await conn.execute(select(_T).where(_T.c.id == token_id)
                                      .with_for_update())).first()
            if row is None:
                raise StoreError("no such token")
            limits = TokenLimits(**{f: getattr(row, f) for f in TokenLimits.FIELDS})
            spent = row.spent_nanos or 0
            if limits.quota_nanos is not None and spent + pending_nanos >= limits.quota_nanos:
                raise LimitReached("quota_nanos", limits.quota_nanos)
            if limits.max_sessions is not None:
                live = await conn.scalar(select(func.count()).select_from(_S).where(
                    _S.c.token_id == token_id, _S.c.closed_at.is_(None), _S.c.lease_until > now))
                if live >= limits.max_sessions:
                    raise LimitReached("max_sessions", limits.max_sessions)
            if limits.sessions_per_minute is not None:
                recent = await conn.scalar(select(func.count()).select_from(_S).where(
                    _S.c.token_id == token_id, _S.c.opened_at > now - timedelta(minutes=1)))
                if recent >= limits.sessions_per_minute:
                    raise LimitReached("sessions_per_minute", limits.sessions_per_minute)
            extra = dict(details or {})
            if extra.get("secret_id") is not None:
                _C = schema.client_secrets
                taken = await conn.execute(update(_C).where(
                    _C.c.id == extra["secret_id"],
                    _C.c.max_uses.is_(None) | (_C.c.uses < _C.c.max_uses),
                ).values(uses=_C.c.uses + 1))
                if taken.rowcount != 1:
                    raise LimitReached("secret_uses", None)
            if "client" in extra:
                extra["client"] = _fit(extra["client"], _S.c.client)
            await conn.execute(_S.insert().values(
                id=session_id, token_id=token_id, model=_fit(model, _S.c.model),
                instance=instance, opened_at=now,
                lease_until=lease_until, **extra))
        return limits, spent

    async def drop_session(self, session_id: str) -> None:
        """Forget a session that never started (its upstream could not be opened)."""
        async with self.writing() as conn:
            await conn.execute(_S.delete().where(_S.c.id == session_id))

    async def close_orphans(self, *, expired_before: datetime | None = None,
                            instances_like: str | None = None,
                            keep_instance: str | None = None) -> int:
        """Close the session rows a dead gateway process left open
        (``closed_by = 'crash'``): those whose lease ran out before
        ``expired_before``, or those of the instances ``LIKE instances_like``
        but ``keep_instance`` (an earlier process of this gateway, at start-up).
        ``closed_at`` is the earlier of now and the lease's end.  Returns how
        many were closed."""
        now = utcnow()
        if expired_before is not None:
            which = _S.c.lease_until < expired_before
        elif instances_like is not None:
            which = _S.c.instance.like(instances_like) & (_S.c.instance != keep_instance)
        else:
            raise ValueError("expired_before or instances_like")
        async with self.writing() as conn:
            res = await conn.execute(update(_S).where(_S.c.closed_at.is_(None), which).values(
                closed_at=case((_S.c.lease_until < now, _S.c.lease_until), else_=now),
                closed_by="crash"))
        return res.rowcount or 0

    async def renew_leases(self, session_ids: list[str], lease_until: datetime) -> None:
        """Extend the leases of the sessions an instance is running."""
        ids = sorted(session_ids)
        async with self.writing() as conn:
            for i in range(0, len(ids), 500):
                await conn.execute(update(_S).where(_S.c.id.in_(ids[i:i + 500]),
                                                    _S.c.closed_at.is_(None))
                                   .values(lease_until=lease_until))

    async def request_session_end(self, session_id: str, reason: str) -> bool:
        """Ask whichever instance runs a session to end it (``end_requested =
        reason``; it does within ``balance_refresh_seconds`` plus a tick).
        False when no such session is open."""
        async with self.writing() as conn:
            res = await conn.execute(update(_S).where(_S.c.id == session_id,
                                                      _S.c.closed_at.is_(None))
                                     .values(end_requested=_fit(reason, _S.c.end_requested)))
        return (res.rowcount or 0) == 1

    async def sessions_to_end(self, instance: str) -> dict[str, str]:
        """The open sessions of ``instance`` that must end, with why: an end
        was requested (its reason), or their token was revoked
        (``token_revoked``) or has expired (``token_expired``)."""
        now = utcnow()
        q = (select(_S.c.id, _S.c.end_requested, _T.c.revoked_at, _T.c.expires_at)
             .select_from(_S.join(_T, _T.c.id == _S.c.token_id))
             .where(_S.c.closed_at.is_(None), _S.c.instance == instance,
                    _S.c.end_requested.isnot(None) | _T.c.revoked_at.isnot(None)
                    | (_T.c.expires_at <= now)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return {r.id: r.end_requested or ("token_revoked" if r.revoked_at is not None
                                          else "token_expired") for r in rows}

    # ---- the ledger ----------------------------------------------------------

    def _insert_ignoring_duplicates(self) -> Any:
        """``INSERT … ON CONFLICT (session_id, kind, ref) DO NOTHING`` -- the
        same SQL on SQLite and PostgreSQL."""
        dialect = sqlite if self.sqlite else postgresql
        return dialect.insert(_L).on_conflict_do_nothing(
            index_elements=["session_id", "kind", "ref"])

    async def write_ledger(self, rows: list[UsageRow], ends: list[SessionEnd],
                           channels: dict[str, str] | None = None) -> list[Balance]:
        """Insert ``rows`` (one already recorded is skipped and not charged
        again), add the new ones' cost to their tokens' spend, set session
        channels and close ``ends`` -- one transaction.  Returns the spend of
        every token the rows belong to, as committed."""
        stmt = self._insert_ignoring_duplicates()
        added: dict[int, int] = {}
        async with self.writing() as conn:
            for r in rows:
                t = r.tokens
                res = await conn.execute(stmt.values(
                    created_at=r.created_at, session_id=r.session_id, kind=r.kind,
                    ref=_fit(r.ref, _L.c.ref), token_id=r.token_id,
                    channel=_fit(r.channel, _L.c.channel), model=_fit(r.model, _L.c.model),
                    status=_fit(r.status, _L.c.status),
                    input_text=t.input_text, input_audio=t.input_audio, input_image=t.input_image,
                    cached_text=t.cached_text, cached_audio=t.cached_audio,
                    cached_image=t.cached_image, output_text=t.output_text,
                    output_audio=t.output_audio, seconds=t.seconds, cost_nanos=r.cost_nanos,
                    fallback=r.fallback))
                if res.rowcount == 1:
                    added[r.token_id] = added.get(r.token_id, 0) + r.cost_nanos
            # tokens in id order: two instances writing at once never wait on each other in a cycle
            for token_id in sorted(added):
                if added[token_id]:
                    await conn.execute(update(_T).where(_T.c.id == token_id).values(
                        spent_nanos=_T.c.spent_nanos + added[token_id]))
            for sid, channel in sorted((channels or {}).items()):
                await conn.execute(update(_S).where(_S.c.id == sid).values(channel=channel))
            for e in sorted(ends, key=lambda e: e.id):
                values: dict[str, Any] = dict(
                    closed_at=e.closed_at, closed_by=e.closed_by, close_code=e.close_code,
                    events_in=e.events_in, events_out=e.events_out, bytes_in=e.bytes_in,
                    bytes_out=e.bytes_out, audio_in_seconds=e.audio_in_seconds,
                    audio_out_seconds=e.audio_out_seconds)
                if e.channel:
                    values["channel"] = e.channel
                await conn.execute(update(_S).where(_S.c.id == e.id).values(**values))
            ids = sorted({r.token_id for r in rows})
            return await self._balances(conn, ids) if ids else []

    async def balances(self, token_ids: list[int]) -> list[Balance]:
        if not token_ids:
            return []
        async with self.engine.connect() as conn:
            return await self._balances(conn, token_ids)

    @staticmethod
    async def _balances(conn: Any, token_ids: list[int]) -> list[Balance]:
        res = await conn.execute(select(_T.c.id, _T.c.spent_nanos, _T.c.quota_nanos)
                                 .where(_T.c.id.in_(token_ids)))
        return [Balance(r.id, r.spent_nanos or 0, r.quota_nanos) for r in res]

    # ---- reports ---------------------------------------------------------------

    def _day(self) -> Any:
        if self.sqlite:   # stored as UTC text
            return func.date(_L.c.created_at)
        return func.to_char(func.timezone("UTC", _L.c.created_at), "YYYY-MM-DD")

    async def usage_report(self, by: str = "model", token: str | None = None,
                           model: str | None = None, since: datetime | None = None,
                           until: datetime | None = None) -> list[dict[str, Any]]:
        """Ledger totals grouped by ``by`` (day | model | token | channel),
        filtered by token name, model and ``since <= created_at < until``."""
        if by not in REPORT_GROUPS:
            raise StoreError(f"by must be one of {', '.join(REPORT_GROUPS)}")
        key = {"day": self._day(), "model": _L.c.model, "token": _T.c.name,
               "channel": func.coalesce(_L.c.channel, "")}[by].label("key")
        cols = [key,
                func.sum(case((_L.c.kind == "response", 1), else_=0)).label("responses"),
                func.sum(case((_L.c.kind == "transcription", 1), else_=0)).label("transcriptions"),
                *(func.sum(_L.c[c]).label(c) for c in _SUMS),
                func.sum(_L.c.seconds).label("seconds"),
                func.sum(_L.c.cost_nanos).label("cost_nanos"),
                func.sum(case((_L.c.fallback, 1), else_=0)).label("fallback")]
        q = select(*cols).select_from(_L.outerjoin(_T, _T.c.id == _L.c.token_id))
        if token is not None:
            q = q.where(_T.c.name == token)
        if model is not None:
            q = q.where(_L.c.model == model)
        if since is not None:
            q = q.where(_L.c.created_at >= since)
        if until is not None:
            q = q.where(_L.c.created_at < until)
        q = q.group_by(key).order_by(key)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        out = []
        for r in rows:
            d = {"key": r.key, "responses": int(r.responses or 0),
                 "transcriptions": int(r.transcriptions or 0)}
            for c in _SUMS:
                d[c] = int(getattr(r, c) or 0)
            d["seconds"] = float(r.seconds or 0.0)
            d["cost_nanos"] = int(r.cost_nanos or 0)
            d["fallback"] = int(r.fallback or 0)
            out.append(d)
        return out
