"""Portfolio accounting: positions with an average price, realized and unrealized P&L, fees and a cash
ledger, all in Decimal.

Conventions (the invariants the property tests prove):
- buying `q` at `p` moves `q·p` out of cash, selling moves it in; every fee is paid out of cash;
- a fill that reduces a position realizes `(price - average_price) · closed` (short: the opposite sign);
  the average price of what is left does not change; a fill that crosses zero closes the old side
  and opens the new one at the fill price;
- equity = cash + Σ quantity · market price = initial cash + deposits + realized - fees + unrealized.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from aitrading.trading.orders import ZERO, Fill, Side


@dataclass
class Position:
    symbol: str
    quantity: Decimal = ZERO            # signed: negative is short
    average_price: Decimal = ZERO       # of the open quantity; 0 when flat
    realized_pnl: Decimal = ZERO        # before fees
    fees: Decimal = ZERO

    @property
    def is_flat(self) -> bool:
        return self.quantity == ZERO

    def market_value(self, price: Decimal) -> Decimal:
        return self.quantity * price

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        return (price - self.average_price) * self.quantity

    def apply(self, side: Side, quantity: Decimal, price: Decimal, fee: Decimal = ZERO) -> Decimal:
        """Take one execution; returns the P&L it realized."""
        if quantity <= ZERO:
            raise ValueError("an execution has a positive quantity")
        signed = quantity * side.sign
        self.fees += fee
        if self.quantity == ZERO or (self.quantity > ZERO) == (signed > ZERO):
            total = self.quantity + signed
            self.average_price = (self.average_price * abs(self.quantity) + price * quantity) / abs(total)
            self.quantity = total
            return ZERO
        closed = min(quantity, abs(self.quantity))
        direction = 1 if self.quantity > ZERO else -1
        realized = (price - self.average_price) * closed * direction
        self.realized_pnl += realized
        self.quantity += signed
        if self.quantity == ZERO:
            self.average_price = ZERO
        elif (self.quantity > ZERO) != (direction > 0):  # crossed zero: the rest opens at this price
            self.average_price = price
        return realized


@dataclass
class Portfolio:
    """One account's cash and positions."""

    cash: Decimal
    initial_cash: Decimal = ZERO
    deposits: Decimal = ZERO
    positions: dict[str, Position] = field(default_factory=dict)
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO

    @classmethod
    def starting_with(cls, cash: Decimal) -> Portfolio:
        return cls(cash=cash, initial_cash=cash)

    def position(self, symbol: str) -> Position:
        found = self.positions.get(symbol)
        if found is None:
            found = self.positions[symbol] = Position(symbol)
        return found

    def quantity(self, symbol: str) -> Decimal:
        found = self.positions.get(symbol)
        return ZERO if found is None else found.quantity

    def apply_fill(self, fill: Fill) -> Decimal:
        return self.apply(fill.symbol, fill.side, fill.quantity, fill.price, fill.fee)

    def apply(self, symbol: str, side: Side, quantity: Decimal, price: Decimal,
              fee: Decimal = ZERO) -> Decimal:
        realized = self.position(symbol).apply(side, quantity, price, fee)
        self.cash -= quantity * price * side.sign + fee
        self.realized_pnl += realized
        self.fees += fee
        return realized

    def deposit(self, amount: Decimal) -> None:
        self.cash += amount
        self.deposits += amount

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if not p.is_flat]

    def positions_value(self, prices: Mapping[str, Decimal]) -> Decimal:
        return sum((p.market_value(_price(prices, p)) for p in self.open_positions()), ZERO)

    def unrealized_pnl(self, prices: Mapping[str, Decimal]) -> Decimal:
        return sum((p.unrealized_pnl(_price(prices, p)) for p in self.open_positions()), ZERO)

    def equity(self, prices: Mapping[str, Decimal]) -> Decimal:
        return self.cash + self.positions_value(prices)

    def gross_exposure(self, prices: Mapping[str, Decimal]) -> Decimal:
        return sum((abs(p.market_value(_price(prices, p))) for p in self.open_positions()), ZERO)


def _price(prices: Mapping[str, Decimal], position: Position) -> Decimal:
    """The market price of a position; its own average price when the market has none yet."""
    return prices.get(position.symbol, position.average_price)


def replay(fills: Iterable[Fill], cash: Decimal) -> Portfolio:
    """The portfolio that `fills`, in order, make of `cash`."""
    portfolio = Portfolio.starting_with(cash)
    for fill in fills:
        portfolio.apply_fill(fill)
    return portfolio
