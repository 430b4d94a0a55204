"""Feature sets: named lists of indicators per user, optionally streamed on every closed bar.

Revision ID: 0001_feature_sets
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_feature_sets"
down_revision = None
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feature_sets",
        sa.Column("id", UUID, nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("indicators", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feature_sets"),
        sa.UniqueConstraint("owner_id", "name", name="uq_feature_sets_owner_id_name"),
    )
    op.create_index("ix_feature_sets_streamed", "feature_sets", ["stream"],
                    postgresql_where=sa.text("stream"))


def downgrade() -> None:
    op.drop_index("ix_feature_sets_streamed", table_name="feature_sets")
    op.drop_table("feature_sets")
