"""Property: whatever fills arrive, in whatever order, the stored accounts equal the trading core's replay
of the same fills in time order (aitrading.trading.accounting.replay), exactly, in Decimal.

Each fill runs through the consumer's handler in its own transaction, as the durable consumer runs it
(only the NATS transport is left out; test_fills covers that path).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from portfolio_manager import store
from portfolio_manager.events import FillConsumer
from portfolio_manager.ledger import parse_fill

from aitrading.db import Database
from aitrading.events import Event
from aitrading.trading.accounting import Portfolio, replay
from aitrading.trading.orders import Fill, Side

pytestmark = pytest.mark.slow  # serves database-service (chDB) and data-bridge, consumes over NATS

INITIAL = Decimal(100_000)
T0 = datetime(2024, 1, 2, tzinfo=UTC)

trade = st.tuples(
    st.sampled_from(["AAA", "BBB"]),
    st.sampled_from(["buy", "sell"]),
    st.decimals(min_value="0.0001", max_value=50, places=4),
    st.decimals(min_value="0.01", max_value=5000, places=2),
    st.decimals(min_value=-1, max_value=5, places=4),  # negative: a maker rebate
)


def _events(owner: UUID, trades: list[tuple[str, str, Decimal, Decimal, Decimal]]) -> list[Event]:
    out = []
    for i, (symbol, side, quantity, price, fee) in enumerate(trades):
        data = {"id": str(uuid4()), "order_id": str(uuid4()), "owner_id": str(owner), "account": "paper",
                "symbol": symbol, "side": side, "quantity": str(quantity), "price": str(price),
                "fee": str(fee),
                "liquidity": "taker", "time": (T0 + timedelta(seconds=i)).isoformat(), "strategy_id": None}
        out.append(Event.new("fill", f"fills.{symbol}", data, source="trading-engine"))
    return out


async def _consume(db: Database, consumer: FillConsumer, events: list[Event]) -> None:
    for event in events:
        async with db.sessionmaker() as session, session.begin():
            await consumer.on_fill(session, event)


async def _stored(db: Database, owner: UUID) -> Portfolio:
    async with db.sessionmaker() as session:
        account = await store.account_of(session, owner, "paper")
        assert account is not None
        rows = await store.positions_of(session, owner, "paper", include_flat=True)
    portfolio = Portfolio(cash=account.cash, initial_cash=account.initial_cash,
                          realized_pnl=account.realized_pnl, fees=account.fees)
    for r in rows:
        position = portfolio.position(r.symbol)
        position.quantity, position.average_price = r.quantity, r.average_price
        position.realized_pnl, position.fees = r.realized_pnl, r.fees
    return portfolio


def _fills(events: list[Event]) -> list[Fill]:
    return [parse_fill(e.data).fill for e in events]


def _same(stored: Portfolio, expected: Portfolio, *, summed_in_another_order: bool = False) -> None:
    assert (stored.cash, stored.fees) == (expected.cash, expected.fees)
    if summed_in_another_order:
        # After a late fill the account's realized P&L is the sum over its positions, where the replay
        # keeps a running sum over fills: amounts of up to 28 digits added in another order may differ
        # in the last digit (Decimal addition rounds). Each position is replayed in time order: exact.
        assert abs(stored.realized_pnl - expected.realized_pnl) < Decimal("1e-18")
    else:
        assert stored.realized_pnl == expected.realized_pnl
    assert set(stored.positions) == set(expected.positions)
    for symbol, position in expected.positions.items():
        mine = stored.positions[symbol]
        assert (mine.quantity, mine.average_price, mine.realized_pnl, mine.fees) == \
            (position.quantity, position.average_price, position.realized_pnl, position.fees), symbol


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trades=st.lists(trade, min_size=1, max_size=25))
async def test_consumed_fills_equal_the_accounting_replay(app: FastAPI, trades: list[Any]) -> None:
    owner = uuid4()
    events = _events(owner, trades)
    await _consume(app.state.db, FillConsumer(INITIAL), events)
    _same(await _stored(app.state.db, owner), replay(_fills(events), INITIAL))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trades=st.lists(trade, min_size=2, max_size=12), data=st.data())
async def test_any_arrival_order_equals_the_replay_in_time_order(app: FastAPI, trades: list[Any],
                                                                 data: st.DataObject) -> None:
    owner = uuid4()
    events = _events(owner, trades)
    arrival = data.draw(st.permutations(events))
    # Each fill also arrives a second time under a new event id: still applied once.
    again = [Event.new("fill", e.subject, e.data, source="trading-engine") for e in arrival[:3]]
    await _consume(app.state.db, FillConsumer(INITIAL), [*arrival, *again])
    _same(await _stored(app.state.db, owner), replay(_fills(events), INITIAL), summed_in_another_order=True)


async def test_fill_side_and_numbers_are_validated() -> None:
    good = _events(uuid4(), [("AAA", "buy", Decimal(1), Decimal(10), Decimal(0))])[0].data
    assert parse_fill(good).fill.side is Side.BUY
    for field, value in (("quantity", "0"), ("price", "-1"), ("side", "hold"), ("owner_id", "x"),
                         ("fee", "NaN"), ("time", "yesterday"), ("account", "")):
        try:
            parse_fill({**good, field: value})
        except ValueError:
            continue
        raise AssertionError(f"{field}={value!r} was accepted")
