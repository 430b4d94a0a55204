"""User pattern rules.

Revision ID: 0001_rules
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_rules"
down_revision = None
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("id", UUID, nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rules"),
        # One name per owner; the owner's list and lookups go through this index too.
        sa.UniqueConstraint("owner_id", "name", name="uq_rules_owner_id_name"),
        sa.CheckConstraint("direction IN ('bullish', 'bearish', 'neutral')", name="ck_rules_direction"),
    )


def downgrade() -> None:
    op.drop_table("rules")
