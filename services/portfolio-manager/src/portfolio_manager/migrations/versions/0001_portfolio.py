"""Accounts, positions, applied fills and the cash ledger.

Revision ID: 0001_portfolio
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_portfolio"
down_revision = None
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TS = sa.DateTime(timezone=True)
NUM = sa.Numeric()


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("initial_cash", NUM, nullable=False),
        sa.Column("cash", NUM, nullable=False),
        sa.Column("realized_pnl", NUM, nullable=False),
        sa.Column("fees", NUM, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "account", name="pk_accounts"),
    )
    op.create_table(
        "positions",
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("quantity", NUM, nullable=False),
        sa.Column("average_price", NUM, nullable=False),
        sa.Column("realized_pnl", NUM, nullable=False),
        sa.Column("fees", NUM, nullable=False),
        sa.Column("last_fill_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "account", "symbol", name="pk_positions"),
    )
    op.create_table(
        "fills",
        sa.Column("id", UUID, nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", UUID, nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("order_id", UUID, nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("quantity", NUM, nullable=False),
        sa.Column("price", NUM, nullable=False),
        sa.Column("fee", NUM, nullable=False),
        sa.Column("liquidity", sa.Text(), nullable=False),
        sa.Column("time", TS, nullable=False),
        sa.Column("strategy_id", UUID, nullable=True),
        sa.Column("applied_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fills"),
    )
    op.create_index("ix_fills_position", "fills", ["owner_id", "account", "symbol", "time", "seq"])
    op.create_table(
        "cash_ledger",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("amount", NUM, nullable=False),
        sa.Column("balance", NUM, nullable=False),
        sa.Column("fill_id", UUID, nullable=True),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("time", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cash_ledger"),
    )
    op.create_index("ix_cash_ledger_owner_id", "cash_ledger", ["owner_id", "account", "id"])


def downgrade() -> None:
    op.drop_index("ix_cash_ledger_owner_id", table_name="cash_ledger")
    op.drop_table("cash_ledger")
    op.drop_index("ix_fills_position", table_name="fills")
    op.drop_table("fills")
    op.drop_table("positions")
    op.drop_table("accounts")
