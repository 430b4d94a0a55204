"""Portfolio accounting: the invariants proven on random fill sequences, against an independent reference.

The reference below keeps each position as (quantity, cost basis) in exact fractions: realized P&L is
the proceeds of what is closed minus its share of the cost basis (average cost, not FIFO, like the core).
The core keeps an average price in Decimal, so the comparison allows a relative 1e-12 for its rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrading.trading.accounting import Portfolio, Position, replay
from aitrading.trading.orders import Fill, Side

D = Decimal
NOW = datetime(2024, 1, 2, tzinfo=UTC)
SYMBOLS = ("AAPL", "BTC/USDT", "EUR/USD")
INITIAL = D(100_000)


def close_to(actual: Decimal, expected: Decimal | Fraction, scale: Decimal = D(1)) -> bool:
    """Equal up to Decimal rounding: a relative 1e-12 of the larger of the values and `scale`."""
    wanted = Fraction(expected)
    size = max(abs(Fraction(actual)), abs(wanted), Fraction(scale), Fraction(1))
    return abs(Fraction(actual) - wanted) <= size * Fraction(1, 10**12)


@dataclass
class Reference:
    """An independent average-cost book in exact fractions."""

    quantity: Fraction = Fraction(0)
    basis: Fraction = Fraction(0)        # signed: what the open quantity cost (negative for a short)
    realized: Fraction = Fraction(0)

    def apply(self, signed: Fraction, price: Fraction) -> None:
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            self.quantity += signed
            self.basis += signed * price
            return
        closing = min(abs(signed), abs(self.quantity)) * (1 if signed > 0 else -1)  # signed like `signed`
        share = self.basis * (-closing) / self.quantity                             # basis of what closes
        # Closing a long sells `-closing` at `price`; closing a short buys `closing` back.
        self.realized += -closing * price - share
        self.basis -= share
        self.quantity += closing
        rest = signed - closing
        if rest:
            self.quantity += rest
            self.basis += rest * price


fills_strategy = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS),
        st.sampled_from(Side),
        st.decimals(min_value=D("0.001"), max_value=D(50), places=3),
        st.decimals(min_value=D("0.01"), max_value=D(5000), places=2),
        st.decimals(min_value=D(0), max_value=D(3), places=4),
    ),
    min_size=1, max_size=40,
)
marks_strategy = st.fixed_dictionaries({s: st.decimals(min_value=D("0.01"), max_value=D(6000), places=2)
                                        for s in SYMBOLS})


def as_fills(rows: list[tuple[str, Side, Decimal, Decimal, Decimal]]) -> list[Fill]:
    owner = uuid4()
    return [Fill(order_id=uuid4(), owner=owner, symbol=symbol, side=side, quantity=quantity, price=price,
                 fee=fee, time=NOW + timedelta(minutes=n))
            for n, (symbol, side, quantity, price, fee) in enumerate(rows)]


@settings(max_examples=400, deadline=None)
@given(rows=fills_strategy, marks=marks_strategy)
def test_random_fills_keep_every_accounting_invariant(rows: list[tuple[str, Side, Decimal, Decimal, Decimal]],
                                                      marks: dict[str, Decimal]) -> None:
    fills = as_fills(rows)
    portfolio = Portfolio.starting_with(INITIAL)
    reference = {s: Reference() for s in SYMBOLS}
    cash, fees, realized_each = INITIAL, D(0), D(0)
    for fill in fills:
        realized_each += portfolio.apply_fill(fill)
        reference[fill.symbol].apply(Fraction(fill.signed_quantity), Fraction(fill.price))
        cash -= fill.signed_quantity * fill.price + fill.fee
        fees += fill.fee
    notional = max((f.notional for f in fills), default=D(1))

    # The cash ledger: every trade's notional and every fee, exactly.
    assert portfolio.cash == cash and portfolio.fees == fees
    assert sum((p.fees for p in portfolio.positions.values()), D(0)) == fees
    # Positions: quantities exactly; realized P&L as the independent average-cost book says.
    for symbol, ref in reference.items():
        assert portfolio.quantity(symbol) == ref.quantity
        position = portfolio.positions.get(symbol)
        if position is None:
            continue
        assert close_to(position.realized_pnl, ref.realized, notional)
        if ref.quantity:
            assert close_to(position.average_price, ref.basis / ref.quantity)
        else:
            assert position.average_price == 0 and position.is_flat
    assert portfolio.realized_pnl == realized_each
    # The same sum in another order: equal up to rounding.
    assert close_to(portfolio.realized_pnl, sum((p.realized_pnl for p in portfolio.positions.values()), D(0)),
                    notional)
    expected_realized = sum((r.realized for r in reference.values()), Fraction(0))
    assert close_to(portfolio.realized_pnl, expected_realized, notional)

    # equity = cash + Σ q·p = initial + realized - fees + unrealized.
    held = {s: q for s in SYMBOLS if (q := portfolio.quantity(s))}
    equity = portfolio.equity(marks)
    assert equity == cash + sum((q * marks[s] for s, q in held.items()), D(0))
    assert portfolio.positions_value(marks) == sum((q * marks[s] for s, q in held.items()), D(0))
    assert portfolio.gross_exposure(marks) == sum((abs(q) * marks[s] for s, q in held.items()), D(0))
    assert {p.symbol for p in portfolio.open_positions()} == set(held)
    unrealized = portfolio.unrealized_pnl(marks)
    expected_unrealized = sum((r.quantity * Fraction(marks[s]) - r.basis for s, r in reference.items()),
                              Fraction(0))
    assert close_to(unrealized, expected_unrealized, notional)
    assert close_to(equity, Fraction(INITIAL) + Fraction(portfolio.realized_pnl) - Fraction(fees)
                    + Fraction(unrealized), INITIAL)

    # Replaying the same fills gives the same book.
    again = replay(fills, INITIAL)
    assert (again.cash, again.realized_pnl, again.fees) == (portfolio.cash, portfolio.realized_pnl,
                                                            portfolio.fees)
    assert {s: (p.quantity, p.average_price) for s, p in again.positions.items()} == {
        s: (p.quantity, p.average_price) for s, p in portfolio.positions.items()}


@settings(max_examples=300, deadline=None)
@given(legs=st.lists(st.tuples(st.decimals(min_value=D("0.001"), max_value=D(20), places=3),
                               st.decimals(min_value=D("0.01"), max_value=D(1000), places=2)),
                     min_size=1, max_size=10),
       exits=st.lists(st.decimals(min_value=D("0.01"), max_value=D(1000), places=2), min_size=1, max_size=5),
       short=st.booleans())
def test_a_round_trip_realizes_what_came_in_minus_what_went_out(
        legs: list[tuple[Decimal, Decimal]], exits: list[Decimal], short: bool) -> None:
    """Open in several fills, close in several: flat again, average 0, realized = Σ sells - Σ buys."""
    opening, closing = (Side.SELL, Side.BUY) if short else (Side.BUY, Side.SELL)
    position = Position("AAPL")
    for quantity, price in legs:
        position.apply(opening, quantity, price)
    total = sum((q for q, _ in legs), D(0))
    # Close in pieces at each exit price (whole thousandths, so they add up exactly); the last takes the rest.
    pieces = [(total / len(exits)).quantize(D("0.001"), ROUND_DOWN)] * (len(exits) - 1)
    pieces.append(total - sum(pieces, D(0)))
    for quantity, price in zip(pieces, exits, strict=True):
        if quantity > 0:
            position.apply(closing, quantity, price)
    assert position.is_flat and position.average_price == 0
    bought = [(q, p) for q, p in legs] if not short else list(zip(pieces, exits, strict=True))
    sold = list(zip(pieces, exits, strict=True)) if not short else [(q, p) for q, p in legs]
    expected = sum((q * p for q, p in sold), D(0)) - sum((q * p for q, p in bought), D(0))
    assert close_to(position.realized_pnl, expected, sum((q * p for q, p in legs), D(0)))


def test_a_partial_close_realizes_on_the_closed_part_and_keeps_the_average() -> None:
    portfolio = Portfolio.starting_with(D(10_000))
    portfolio.apply("AAPL", Side.BUY, D(10), D(100), fee=D(1))
    portfolio.apply("AAPL", Side.BUY, D(10), D(110), fee=D(1))
    assert portfolio.position("AAPL").average_price == D(105)
    assert portfolio.apply("AAPL", Side.SELL, D(5), D(120), fee=D("0.5")) == D(75)
    position = portfolio.position("AAPL")
    assert (position.quantity, position.average_price, position.realized_pnl, position.fees) == (
        D(15), D(105), D(75), D("2.5"))
    assert portfolio.cash == D(10_000) - 1000 - 1100 + 600 - D("2.5")
    prices = {"AAPL": D(100)}
    assert position.unrealized_pnl(D(100)) == D(-75)
    assert portfolio.equity(prices) == portfolio.cash + 1500 == D(10_000) + 75 - D("2.5") - 75


def test_a_short_gains_when_the_price_falls() -> None:
    position = Position("BTC/USDT")
    position.apply(Side.SELL, D(2), D(30_000))
    assert (position.quantity, position.average_price) == (D(-2), D(30_000))
    assert position.unrealized_pnl(D(29_000)) == D(2000) and position.market_value(D(29_000)) == D(-58_000)
    assert position.apply(Side.BUY, D("0.5"), D(28_000)) == D(1000)
    assert (position.quantity, position.average_price) == (D("-1.5"), D(30_000))


def test_a_fill_through_zero_closes_the_old_side_and_opens_the_new_one_at_its_price() -> None:
    position = Position("EUR/USD")
    position.apply(Side.BUY, D(3), D("1.10"))
    assert position.apply(Side.SELL, D(5), D("1.20")) == D("0.30")
    assert (position.quantity, position.average_price) == (D(-2), D("1.20"))
    assert position.apply(Side.BUY, D(4), D("1.00")) == D("0.40")
    assert (position.quantity, position.average_price, position.realized_pnl) == (D(2), D("1.00"), D("0.70"))


def test_deposits_and_unpriced_positions() -> None:
    portfolio = Portfolio.starting_with(D(1000))
    portfolio.deposit(D(500))
    assert (portfolio.cash, portfolio.deposits, portfolio.initial_cash) == (D(1500), D(500), D(1000))
    portfolio.apply("XYZ", Side.BUY, D(2), D(50))
    # Without a market price a position is valued at its own average price: no invented P&L.
    assert portfolio.equity({}) == D(1500) and portfolio.unrealized_pnl({}) == 0
    assert portfolio.gross_exposure({"XYZ": D(60)}) == D(120)
    portfolio.apply("XYZ", Side.SELL, D(2), D(50))
    assert portfolio.open_positions() == []
    assert portfolio.quantity("XYZ") == 0 and portfolio.quantity("NONE") == 0


@pytest.mark.parametrize("quantity", [D(0), D(-1)])
def test_an_execution_without_a_positive_quantity_is_refused(quantity: Decimal) -> None:
    position = Position("AAPL")
    with pytest.raises(ValueError, match="positive quantity"):
        position.apply(Side.BUY, quantity, D(100))
    assert position == Position("AAPL")
