"""Venue accounts: a user's named CCXT exchange and MT5 terminal accounts, credentials encrypted.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "venue_accounts",
        sa.Column("id", UUID, nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("exchange", sa.Text()),
        sa.Column("sandbox", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("options", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        # A Fernet token (trading_engine.credentials), never the credentials in clear.
        sa.Column("credentials", sa.Text(), nullable=False),
        sa.Column("key_hint", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_venue_accounts"),
        sa.UniqueConstraint("owner_id", "name", name="uq_venue_accounts_owner_id_name"),
        sa.CheckConstraint("kind IN ('ccxt', 'mt5')", name="ck_venue_accounts_kind"),
    )


def downgrade() -> None:
    op.drop_table("venue_accounts")
