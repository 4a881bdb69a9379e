"""the session log: a session's turns (transcripts, text, tool calls)

* ``session_turns``: one row per turn of a session whose transcripts are
  logged (``log_transcripts``, off by default): the user's input
  transcription, the assistant's transcript or text, a tool call with its
  arguments, a tool result; with the response's usage and cost when known.
  Audio is never stored.  Rows older than ``log_retention_days`` are deleted.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_turns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("ref", sa.String(200)),
        sa.Column("name", sa.String(200)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("usage", sa.JSON),
        sa.Column("cost_nanos", sa.BigInteger),
    )
    op.create_index("ix_session_turns_session", "session_turns", ["session_id", "seq"])
    op.create_index("ix_session_turns_created", "session_turns", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_session_turns_created", table_name="session_turns")
    op.drop_index("ix_session_turns_session", table_name="session_turns")
    op.drop_table("session_turns")
