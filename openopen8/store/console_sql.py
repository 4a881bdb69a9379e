"""The SQL side of the operator's console: what the admin API and the
dashboard read and change beyond the CLI's basics -- deleting tokens,
updating channels, past sessions with their spend, a session's ledger and
its logged turns (the session log), and the overview's daily figures.
Mixed into :class:`~openopen8.store.sql.SqlStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, insert, select, update

from . import schema
from .base import StoreError, as_utc, utcnow

_T, _S, _L, _C = schema.tokens, schema.sessions, schema.ledger, schema.channels
_TURNS, _SECRETS = schema.session_turns, schema.client_secrets

#: channel columns an update may change
CHANNEL_CHANGES = ("base_url", "key_encrypted", "models", "deployments", "api_version",
                   "priority", "weight", "enabled")

@dataclass
class Turn:
    """One turn of a session's log (never audio)."""

    session_id: str
    seq: int
    kind: str                       # user | assistant | tool_call | tool_result
    text: str
    ref: str | None = None          # item, response or call id
    name: str | None = None         # a tool call's function name
    usage: dict[str, Any] | None = None
    cost_nanos: int | None = None
    created_at: datetime = field(default_factory=utcnow)


def _cut(value: str | None, n: int) -> str | None:
    return value[:n] if isinstance(value, str) and len(value) > n else value


def _session(r: Any) -> dict[str, Any]:
    return {"id": r.id, "token": r.token_name, "token_id": r.token_id, "model": r.model,
            "channel": r.channel, "instance": r.instance, "client": r.client, "via": r.via,
            "opened_at": as_utc(r.opened_at), "closed_at": as_utc(r.closed_at),
            "close_code": r.close_code, "closed_by": r.closed_by,
            "end_requested": r.end_requested,
            "events_in": r.events_in or 0, "events_out": r.events_out or 0,
            "bytes_in": r.bytes_in or 0, "bytes_out": r.bytes_out or 0,
            "audio_in_seconds": float(r.audio_in_seconds or 0),
            "audio_out_seconds": float(r.audio_out_seconds or 0),
            "cost_nanos": int(r.cost_nanos or 0), "responses": int(r.responses or 0)}


class ConsoleOps:
    engine: Any
    sqlite: bool

    def writing(self) -> Any:  # provided by SqlStore
        raise NotImplementedError

    def _day(self) -> Any:  # provided by LedgerOps
        raise NotImplementedError

    # ---- tokens and channels ---------------------------------------------------

    async def delete_token(self, name: str) -> None:
        """Delete a token and its client secrets.  Its ledger rows and
        sessions stay (reports show them without a name).  A token with an
        open session cannot be deleted: revoke it first (that ends them)."""
        async with self.writing() as conn:
            row = (await conn.execute(select(_T.c.id).where(_T.c.name == name))).first()
            if row is None:
                raise StoreError(f"no token named {name!r}")
            live = await conn.scalar(select(func.count()).select_from(_S).where(
                _S.c.token_id == row.id, _S.c.closed_at.is_(None),
                _S.c.lease_until > utcnow()))
            if live:
                raise StoreError(f"token {name!r} has {live} open session(s): revoke it "
                                 "first (that ends them), then delete it")
            await conn.execute(delete(_SECRETS).where(_SECRETS.c.token_id == row.id))
            await conn.execute(delete(_T).where(_T.c.id == row.id))

    async def update_channel(self, name: str, changes: dict[str, Any]) -> Any:
        from .sql import _channel
        bad = set(changes) - set(CHANNEL_CHANGES)
        if bad:
            raise StoreError(f"cannot change {sorted(bad)}")
        async with self.engine.begin() as conn:
            if changes:
                await conn.execute(update(_C).where(_C.c.name == name).values(**changes))
            row = (await conn.execute(select(_C).where(_C.c.name == name))).first()
        if row is None:
            raise StoreError(f"no channel named {name!r}")
        return _channel(row)

    # ---- sessions --------------------------------------------------------------

    def _sessions_query(self) -> Any:
        costs = (select(_L.c.session_id, func.sum(_L.c.cost_nanos).label("cost_nanos"),
                        func.sum(case((_L.c.kind == "response", 1), else_=0))
                        .label("responses"))
                 .group_by(_L.c.session_id).subquery())
        return (select(_S, _T.c.name.label("token_name"), costs.c.cost_nanos, costs.c.responses)
                .select_from(_S.outerjoin(_T, _T.c.id == _S.c.token_id)
                             .outerjoin(costs, costs.c.session_id == _S.c.id)))

    async def list_sessions(self, *, token: str | None = None, model: str | None = None,
                            channel: str | None = None, close_code: int | None = None,
                            since: datetime | None = None, until: datetime | None = None,
                            state: str | None = None, limit: int = 50,
                            offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Sessions, newest first, with their spend from the ledger, filtered
        (``since <= opened_at < until``; ``state`` open | closed); and how
        many match in all."""
        where = []
        if token is not None:
            where.append(_T.c.name == token)
        if model is not None:
            where.append(_S.c.model == model)
        if channel is not None:
            where.append(_S.c.channel == channel)
        if close_code is not None:
            where.append(_S.c.close_code == close_code)
        if since is not None:
            where.append(_S.c.opened_at >= since)
        if until is not None:
            where.append(_S.c.opened_at < until)
        if state == "open":
            where.append(_S.c.closed_at.is_(None))
        elif state == "closed":
            where.append(_S.c.closed_at.isnot(None))
        q = self._sessions_query().where(*where).order_by(_S.c.opened_at.desc(), _S.c.id)
        count = (select(func.count()).select_from(_S.outerjoin(_T, _T.c.id == _S.c.token_id))
                 .where(*where))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.limit(limit).offset(offset))).all()
            total = await conn.scalar(count)
        return [_session(r) for r in rows], int(total or 0)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        """One session with its ledger rows and its logged turns."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(self._sessions_query().where(
                _S.c.id == session_id))).first()
            if row is None:
                return None
            ledger = (await conn.execute(select(_L).where(_L.c.session_id == session_id)
                                         .order_by(_L.c.created_at, _L.c.id))).all()
            turns = (await conn.execute(select(_TURNS).where(_TURNS.c.session_id == session_id)
                                        .order_by(_TURNS.c.seq, _TURNS.c.id))).all()
        out = _session(row)
        out["ledger"] = [{"kind": r.kind, "ref": r.ref, "model": r.model, "status": r.status,
                          "created_at": as_utc(r.created_at), "cost_nanos": r.cost_nanos,
                          "tokens": {c: getattr(r, c) for c in (
                              "input_text", "input_audio", "input_image", "cached_text",
                              "cached_audio", "cached_image", "output_text", "output_audio")},
                          "seconds": r.seconds} for r in ledger]
        out["turns"] = [{"seq": t.seq, "kind": t.kind, "ref": t.ref, "name": t.name,
                         "text": t.text, "usage": t.usage, "cost_nanos": t.cost_nanos,
                         "created_at": as_utc(t.created_at)} for t in turns]
        return out

    async def session_costs(self, session_ids: list[str]) -> dict[str, int]:
        """What the ledger has recorded so far for these sessions."""
        if not session_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(_L.c.session_id, func.sum(_L.c.cost_nanos))
                                       .where(_L.c.session_id.in_(session_ids))
                                       .group_by(_L.c.session_id))).all()
        return {r[0]: int(r[1] or 0) for r in rows}

    def _sessions_day(self) -> Any:
        if self.sqlite:
            return func.date(_S.c.opened_at)
        return func.to_char(func.timezone("UTC", _S.c.opened_at), "YYYY-MM-DD")

    async def daily(self, since: datetime) -> dict[str, dict[str, int]]:
        """Per UTC day since ``since``: sessions opened and ledger cost."""
        sday = self._sessions_day().label("day")
        lday = self._day().label("day")
        async with self.engine.connect() as conn:
            srows = (await conn.execute(select(sday, func.count()).where(
                _S.c.opened_at >= since).group_by(sday))).all()
            lrows = (await conn.execute(select(lday, func.sum(_L.c.cost_nanos)).where(
                _L.c.created_at >= since).group_by(lday))).all()
        out: dict[str, dict[str, int]] = {}
        for day, n in srows:
            out.setdefault(str(day), {"sessions": 0, "cost_nanos": 0})["sessions"] = int(n)
        for day, c in lrows:
            out.setdefault(str(day), {"sessions": 0, "cost_nanos": 0})["cost_nanos"] = int(c or 0)
        return out

    # ---- the session log -------------------------------------------------------

    async def write_turns(self, turns: list[Turn]) -> None:
        if not turns:
            return
        async with self.engine.begin() as conn:
            await conn.execute(insert(_TURNS), [
                {"session_id": t.session_id, "seq": t.seq, "created_at": t.created_at,
                 "kind": t.kind, "ref": _cut(t.ref, 200), "name": _cut(t.name, 200),
                 "text": t.text, "usage": t.usage, "cost_nanos": t.cost_nanos}
                for t in turns])

    async def delete_turns_before(self, before: datetime) -> int:
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(_TURNS).where(_TURNS.c.created_at < before))
        return res.rowcount or 0

    async def tokens_last_used(self) -> dict[int, datetime]:
        """When each token last opened a session."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(_S.c.token_id, func.max(_S.c.opened_at))
                                       .group_by(_S.c.token_id))).all()
        return {r[0]: as_utc(r[1]) for r in rows}
