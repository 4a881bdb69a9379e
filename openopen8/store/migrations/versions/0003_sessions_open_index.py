"""an index for the sessions still open, by lease

The ledger closes the rows of gateway processes that died (their lease ran
out) every lease_seconds/3; without this index that is a scan of every
session ever recorded.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sessions_open_lease", "sessions", ["closed_at", "lease_until"])


def downgrade() -> None:
    op.drop_index("ix_sessions_open_lease", table_name="sessions")
