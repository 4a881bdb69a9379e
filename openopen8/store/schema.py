"""Table definitions (SQLAlchemy Core).  Alembic migrations create them;
keep the two in step (``tests/store`` checks the migrated schema matches)."""

from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Float, Index, Integer,
                        LargeBinary, MetaData, String, Table, Text, UniqueConstraint)

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
    # limits (NULL: none) and the running spend, in nano-dollars (see billing.py)
    Column("quota_nanos", BigInteger),
    Column("spent_nanos", BigInteger, nullable=False, default=0, server_default="0"),
    Column("max_sessions", Integer),
    Column("max_duration", Float),            # seconds
    Column("idle_timeout", Float),            # seconds
    Column("sessions_per_minute", Integer),
    # what the operator pins for the token's sessions (openopen8/policy.py), the browser
    # origins it may be used from (empty: any), and transcript logging (NULL: the setting)
    Column("policy", JSON, nullable=False, default=dict, server_default="{}"),
    Column("origins", JSON, nullable=False, default=list, server_default="[]"),
    Column("log_transcripts", Boolean),
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

#: one row per session; ``closed_at`` NULL while it runs, and ``lease_until``
#: renewed by the instance running it, so a crashed instance's sessions stop
#: counting against concurrency limits once their lease runs out
sessions = Table(
    "sessions", metadata,
    Column("id", String(64), primary_key=True),
    Column("token_id", Integer, nullable=False),
    Column("model", String(200), nullable=False),
    Column("channel", String(200)),
    Column("instance", String(64), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True)),
    Column("close_code", Integer),
    Column("closed_by", String(20)),
    Column("events_in", BigInteger, nullable=False, default=0, server_default="0"),
    Column("events_out", BigInteger, nullable=False, default=0, server_default="0"),
    Column("bytes_in", BigInteger, nullable=False, default=0, server_default="0"),
    Column("bytes_out", BigInteger, nullable=False, default=0, server_default="0"),
    Column("audio_in_seconds", Float, nullable=False, default=0.0, server_default="0"),
    Column("audio_out_seconds", Float, nullable=False, default=0.0, server_default="0"),
    #: a reason (session_ended, token_revoked …): the instance running it ends it
    Column("end_requested", String(40)),
    Column("client", String(64)),             # the client's address
    Column("via", String(20)),                # websocket | webrtc | sideband
    Column("secret_id", Integer),             # the client secret it came in with
    Index("ix_sessions_token_open", "token_id", "closed_at"),
    Index("ix_sessions_token_opened", "token_id", "opened_at"),
    Index("ix_sessions_open_lease", "closed_at", "lease_until"),
)

#: the usage ledger: one row per response.done with usage (kind "response",
#: ref = response id) or per input transcription (kind "transcription",
#: ref = item id/content index); a (session, kind, ref) is recorded once
ledger = Table(
    "ledger", metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("session_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("ref", String(200), nullable=False),
    Column("token_id", Integer, nullable=False),
    Column("channel", String(200)),
    Column("model", String(200), nullable=False),
    Column("status", String(20)),
    Column("input_text", Integer, nullable=False),
    Column("input_audio", Integer, nullable=False),
    Column("input_image", Integer, nullable=False),
    Column("cached_text", Integer, nullable=False),
    Column("cached_audio", Integer, nullable=False),
    Column("cached_image", Integer, nullable=False),
    Column("output_text", Integer, nullable=False),
    Column("output_audio", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("fallback", Boolean, nullable=False),
    UniqueConstraint("session_id", "kind", "ref", name="uq_ledger_session_kind_ref"),
    Index("ix_ledger_created", "created_at"),
    Index("ix_ledger_token", "token_id", "created_at"),
)

#: short-lived client secrets (``ek_…``) minted with a gateway token: only the
#: hash is kept; everything a secret does is billed to and limited by its token
client_secrets = Table(
    "client_secrets", metadata,
    Column("id", Integer, primary_key=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("token_id", Integer, nullable=False),
    Column("session", JSON, nullable=False),    # the GA session it starts with
    Column("model", String(200)),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("max_uses", Integer),                # NULL: until it expires
    Column("uses", Integer, nullable=False, default=0, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_client_secrets_expires", "expires_at"),
    Index("ix_client_secrets_token", "token_id"),
)

#: the session log (``log_transcripts``): one row per turn -- ``kind`` user (input
#: transcription), assistant (transcript or text), tool_call (``name``, arguments
#: in ``text``), tool_result -- with the response's usage and cost when known;
#: never audio.  Rows older than ``log_retention_days`` are deleted.
session_turns = Table(
    "session_turns", metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("ref", String(200)),                 # item, response or call id
    Column("name", String(200)),                # a tool call's function name
    Column("text", Text, nullable=False),
    Column("usage", JSON),                      # the response's usage, when known
    Column("cost_nanos", BigInteger),
    Index("ix_session_turns_session", "session_id", "seq"),
    Index("ix_session_turns_created", "created_at"),
)
