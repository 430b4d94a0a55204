"""Feeds: their definitions, desired state, last known status and counters; the first-boot marker.

Revision ID: 0001_feeds
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_feeds"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feeds",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("symbols", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("synthetic", sa.Boolean(), nullable=False),
        sa.Column("desired", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("counters", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feeds"),
        sa.CheckConstraint("desired IN ('running', 'stopped')", name="ck_feeds_desired"),
        sa.CheckConstraint("status IN ('starting', 'running', 'finished', 'failed', 'stopped')",
                           name="ck_feeds_status"),
    )
    op.create_table(
        "bootstrap",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("done_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_bootstrap"),
    )


def downgrade() -> None:
    op.drop_table("bootstrap")
    op.drop_table("feeds")
