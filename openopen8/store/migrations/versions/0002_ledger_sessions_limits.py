"""usage ledger, sessions, token limits and spend

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as t:
        t.add_column(sa.Column("quota_nanos", sa.BigInteger))
        t.add_column(sa.Column("spent_nanos", sa.BigInteger, nullable=False, server_default="0"))
        t.add_column(sa.Column("max_sessions", sa.Integer))
        t.add_column(sa.Column("max_duration", sa.Float))
        t.add_column(sa.Column("idle_timeout", sa.Float))
        t.add_column(sa.Column("sessions_per_minute", sa.Integer))

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_id", sa.Integer, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(200)),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("close_code", sa.Integer),
        sa.Column("closed_by", sa.String(20)),
        sa.Column("events_in", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("events_out", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("bytes_in", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("bytes_out", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("audio_in_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("audio_out_seconds", sa.Float, nullable=False, server_default="0"),
    )
    op.create_index("ix_sessions_token_open", "sessions", ["token_id", "closed_at"])
    op.create_index("ix_sessions_token_opened", "sessions", ["token_id", "opened_at"])

    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("token_id", sa.Integer, nullable=False),
        sa.Column("channel", sa.String(200)),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20)),
        sa.Column("input_text", sa.Integer, nullable=False),
        sa.Column("input_audio", sa.Integer, nullable=False),
        sa.Column("input_image", sa.Integer, nullable=False),
        sa.Column("cached_text", sa.Integer, nullable=False),
        sa.Column("cached_audio", sa.Integer, nullable=False),
        sa.Column("cached_image", sa.Integer, nullable=False),
        sa.Column("output_text", sa.Integer, nullable=False),
        sa.Column("output_audio", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("cost_nanos", sa.BigInteger, nullable=False),
        sa.Column("fallback", sa.Boolean, nullable=False),
        sa.UniqueConstraint("session_id", "kind", "ref", name="uq_ledger_session_kind_ref"),
    )
    op.create_index("ix_ledger_created", "ledger", ["created_at"])
    op.create_index("ix_ledger_token", "ledger", ["token_id", "created_at"])


def downgrade() -> None:
    op.drop_table("ledger")
    op.drop_table("sessions")
    with op.batch_alter_table("tokens") as t:
        for col in ("sessions_per_minute", "idle_timeout", "max_duration", "max_sessions",
                    "spent_nanos", "quota_nanos"):
            t.drop_column(col)
