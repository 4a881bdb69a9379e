"""Client secrets in SQL: minted with a token, looked up with it, deleted
once expired (a use is taken with the session row: ``open_session``).  Mixed into :class:`~openopen8.store.sql.SqlStore`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select

from . import schema
from .base import ClientSecretRecord, as_utc, utcnow

_C, _T = schema.client_secrets, schema.tokens


def _secret(row: Any) -> ClientSecretRecord:
    return ClientSecretRecord(id=row.id, token_id=row.token_id, prefix=row.prefix,
                              session=dict(row.session or {}), model=row.model,
                              expires_at=as_utc(row.expires_at), max_uses=row.max_uses,
                              uses=row.uses, created_at=as_utc(row.created_at))


class ClientSecretOps:
    engine: Any

    async def create_client_secret(self, secret_hash, prefix, token_id, session, model,
                                   expires_at, max_uses=None):
        async with self.engine.begin() as conn:
            res = await conn.execute(insert(_C).values(
                secret_hash=secret_hash, prefix=prefix, token_id=token_id, session=session,
                model=model, expires_at=expires_at, max_uses=max_uses, uses=0,
                created_at=utcnow()))
            row = (await conn.execute(select(_C).where(
                _C.c.id == res.inserted_primary_key[0]))).one()
        return _secret(row)

    async def client_secret_by_hash(self, secret_hash):
        """The secret and the token that minted it (read together: a revoked
        or expired token is seen with its secret)."""
        from .sql import _token   # noqa: PLC0415 - one row mapper for tokens
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(_C).where(_C.c.secret_hash == secret_hash))).first()
            if row is None:
                return None
            tok = (await conn.execute(select(_T).where(_T.c.id == row.token_id))).first()
        return (_secret(row), _token(tok)) if tok is not None else None

    async def delete_expired_client_secrets(self, before):
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(_C).where(_C.c.expires_at < before))
        return res.rowcount or 0
