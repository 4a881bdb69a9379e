"""client secrets, token policy and origins, sessions ended from the store

* ``client_secrets``: short-lived ``ek_`` secrets minted with a token (only
  their hash is kept); they expire in the store and bill the minting token.
* ``tokens.policy`` (what the operator pins for the token's sessions),
  ``tokens.origins`` (browser origins allowed; empty: any) and
  ``tokens.log_transcripts`` (NULL: the gateway's setting).
* ``sessions.end_requested`` (a reason: an operator or a revocation ends a
  session on whichever instance runs it), ``client`` (address), ``via``
  (websocket, webrtc, sideband) and ``secret_id`` (the client secret used).

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as t:
        t.add_column(sa.Column("policy", sa.JSON, nullable=False, server_default="{}"))
        t.add_column(sa.Column("origins", sa.JSON, nullable=False, server_default="[]"))
        t.add_column(sa.Column("log_transcripts", sa.Boolean))
    with op.batch_alter_table("sessions") as t:
        t.add_column(sa.Column("end_requested", sa.String(40)))
        t.add_column(sa.Column("client", sa.String(64)))
        t.add_column(sa.Column("via", sa.String(20)))
        t.add_column(sa.Column("secret_id", sa.Integer))
    op.create_table(
        "client_secrets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("token_id", sa.Integer, nullable=False),
        sa.Column("session", sa.JSON, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_uses", sa.Integer),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_client_secrets_expires", "client_secrets", ["expires_at"])
    op.create_index("ix_client_secrets_token", "client_secrets", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_client_secrets_token", table_name="client_secrets")
    op.drop_index("ix_client_secrets_expires", table_name="client_secrets")
    op.drop_table("client_secrets")
    with op.batch_alter_table("sessions") as t:
        for c in ("secret_id", "via", "client", "end_requested"):
            t.drop_column(c)
    with op.batch_alter_table("tokens") as t:
        for c in ("log_transcripts", "origins", "policy"):
            t.drop_column(c)
