"""Trading: risk accounts (state, limits, live switch), orders, fills, positions, deployed strategies.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TS = sa.DateTime(timezone=True)
NUM = sa.Numeric()
OPEN = "status IN ('accepted', 'partially_filled', 'pending_cancel', 'submitted')"


def upgrade() -> None:
    op.create_table(
        "risk_accounts",
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("state", sa.Text(), nullable=False, server_default="active"),
        sa.Column("reason", sa.Text()),
        sa.Column("live_enabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("limits", postgresql.JSONB()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("owner_id", name="pk_risk_accounts"),
    )
    op.create_table(
        "orders",
        sa.Column("id", UUID, nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("venue", sa.Text(), nullable=False),
        sa.Column("client_order_id", sa.Text()),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("time_in_force", sa.Text(), nullable=False),
        sa.Column("quantity", NUM, nullable=False),
        sa.Column("price", NUM),
        sa.Column("stop_price", NUM),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("filled_quantity", NUM, nullable=False),
        sa.Column("average_price", NUM),
        sa.Column("fees", NUM, nullable=False),
        sa.Column("triggered", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("venue_order_id", sa.Text()),
        sa.Column("strategy_id", UUID),
        sa.Column("claimed_until", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("owner_id", "client_order_id", name="uq_orders_owner_id_client_order_id"),
    )
    op.create_index("ix_orders_owner_id_created_at", "orders", ["owner_id", "created_at"])
    op.create_index("ix_orders_open", "orders", ["owner_id", "account"], postgresql_where=sa.text(OPEN))
    op.create_index("ix_orders_open_by_venue", "orders", ["venue"], postgresql_where=sa.text(OPEN))
    op.create_table(
        "fills",
        sa.Column("id", UUID, nullable=False),
        sa.Column("order_id", UUID, nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("quantity", NUM, nullable=False),
        sa.Column("price", NUM, nullable=False),
        sa.Column("fee", NUM, nullable=False),
        sa.Column("liquidity", sa.Text(), nullable=False),
        sa.Column("time", TS, nullable=False),
        sa.Column("strategy_id", UUID),
        sa.Column("realized_pnl", NUM, nullable=False),
        sa.Column("venue_trade_id", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_fills"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name="fk_fills_order_id_orders", ondelete="CASCADE"),
        sa.UniqueConstraint("order_id", "venue_trade_id", name="uq_fills_order_id_venue_trade_id"),
    )
    op.create_index("ix_fills_owner_id_time", "fills", ["owner_id", "time"])
    op.create_index("ix_fills_order_id", "fills", ["order_id"])
    op.create_table(
        "positions",
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("quantity", NUM, nullable=False),
        sa.Column("average_price", NUM, nullable=False),
        sa.Column("realized_pnl", NUM, nullable=False),
        sa.Column("fees", NUM, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "account", "symbol", name="pk_positions"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", UUID, nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("strategy", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("timeframe", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("position", NUM, nullable=False),
        sa.Column("last_bar_time", TS),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
    )
    op.create_index("ix_deployments_owner_id_created_at", "deployments", ["owner_id", "created_at"])
    op.create_index("ix_deployments_series", "deployments", ["symbol", "timeframe"],
                    postgresql_where=sa.text("enabled"))


def downgrade() -> None:
    op.drop_index("ix_deployments_series", table_name="deployments")
    op.drop_index("ix_deployments_owner_id_created_at", table_name="deployments")
    op.drop_table("deployments")
    op.drop_table("positions")
    op.drop_index("ix_fills_order_id", table_name="fills")
    op.drop_index("ix_fills_owner_id_time", table_name="fills")
    op.drop_table("fills")
    op.drop_index("ix_orders_open_by_venue", table_name="orders")
    op.drop_index("ix_orders_open", table_name="orders")
    op.drop_index("ix_orders_owner_id_created_at", table_name="orders")
    op.drop_table("orders")
    op.drop_table("risk_accounts")
