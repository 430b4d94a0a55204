"""A rebalance proposal: the market orders that move current holdings to target weights (pure).

Each target symbol gets `weight · equity / price` units; the order is the difference to what is held,
rounded down (toward zero) to `quantity_step`, so no order overshoots its target. A symbol held but not
in the target (or with weight 0) is sold (or bought back) to exactly zero. Orders whose value is below
`min_trade_value` are listed as skipped. Sells come first, so their cash is there for the buys. Weights
need not sum to 1: what is left stays in cash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from aitrading.errors import Invalid
from aitrading.trading.orders import Side
from portfolio_manager.decimal_text import plain

ZERO = Decimal(0)
PAPER = "paper"
SUM_TOLERANCE = Decimal("0.000001")


@dataclass(frozen=True)
class ProposedOrder:
    symbol: str
    side: Side
    quantity: Decimal
    price_used: Decimal
    target_weight: Decimal
    current_weight: Decimal
    current_quantity: Decimal
    notional: Decimal

    @property
    def quantity_after(self) -> Decimal:
        return self.current_quantity + self.quantity * self.side.sign

    def order_body(self, account: str = PAPER) -> dict[str, str]:
        """Exactly what POST /api/v1/orders accepts; a venue account is named (paper is the default)."""
        body = {"symbol": self.symbol, "side": self.side.value, "type": "market",
                "quantity": plain(self.quantity)}
        return body if account == PAPER else {**body, "account": account}


@dataclass(frozen=True)
class SkippedTrade:
    symbol: str
    side: Side
    quantity: Decimal
    notional: Decimal
    reason: str


@dataclass(frozen=True)
class Proposal:
    equity: Decimal
    cash: Decimal
    orders: list[ProposedOrder]
    skipped: list[SkippedTrade]

    @property
    def cash_after(self) -> Decimal:
        """Cash once every order filled at its price used, before fees and slippage."""
        return self.cash - sum((o.notional * o.side.sign for o in self.orders), ZERO)


def floor_to_step(quantity: Decimal, step: Decimal) -> Decimal:
    """`quantity` (≥ 0) rounded down to a whole number of `step`s."""
    return (quantity / step).to_integral_value(ROUND_DOWN) * step


def check_targets(targets: Mapping[str, Decimal], *, max_gross: Decimal, field: str = "weights") -> None:
    """422 naming the field when the target weights are not a sensible portfolio."""
    problems = []
    for symbol, weight in targets.items():
        if not symbol.strip():
            problems.append({"field": field, "reason": "a symbol must not be empty"})
        if not weight.is_finite():
            problems.append({"field": f"{field}.{symbol}", "reason": "must be a finite number"})
    if not problems:
        net, gross = sum(targets.values(), ZERO), sum((abs(w) for w in targets.values()), ZERO)
        if net > 1 + SUM_TOLERANCE:
            problems.append({"field": field, "reason": f"the weights sum to {plain(net)}; at most 1"})
        if gross > max_gross + SUM_TOLERANCE:
            problems.append({"field": field, "reason": f"gross weight Σ|w| is {plain(gross)}; at most "
                                                       f"{plain(max_gross)}"})
    if problems:
        raise Invalid("the target weights are not valid: " + "; ".join(p["reason"] for p in problems),
                      errors=problems)


def propose(*, equity: Decimal, cash: Decimal, holdings: Mapping[str, Decimal], prices: Mapping[str, Decimal],
            targets: Mapping[str, Decimal], min_trade_value: Decimal = ZERO,
            quantity_step: Decimal = Decimal("0.0001")) -> Proposal:
    """The orders that take `holdings` to `targets` at `prices` (every symbol of both must be priced)."""
    if equity <= ZERO:
        raise Invalid(f"the account's equity is {plain(equity)}: there is nothing to allocate",
                      errors=[{"field": "account", "reason": "equity is not positive"}])
    if quantity_step <= ZERO:
        raise Invalid("quantity_step must be positive",
                      errors=[{"field": "quantity_step", "reason": "must be greater than 0"}])
    orders: list[ProposedOrder] = []
    skipped: list[SkippedTrade] = []
    held = {s: q for s, q in holdings.items() if q != ZERO}
    for symbol in sorted(set(targets) | set(held)):
        price = prices[symbol]
        weight = targets.get(symbol, ZERO)
        current = held.get(symbol, ZERO)
        if weight == ZERO:
            delta = -current                       # closed exactly, dust included
            quantity = abs(delta)
        else:
            delta = weight * equity / price - current
            quantity = floor_to_step(abs(delta), quantity_step)
        if delta == ZERO:
            continue
        side = Side.BUY if delta > ZERO else Side.SELL
        notional = quantity * price
        if quantity == ZERO:
            skipped.append(SkippedTrade(symbol, side, quantity, notional, "below quantity_step"))
            continue
        if notional < min_trade_value:
            skipped.append(SkippedTrade(symbol, side, quantity, notional, "below min_trade_value"))
            continue
        orders.append(ProposedOrder(symbol, side, quantity, price, weight, current * price / equity, current,
                                    notional))
    orders.sort(key=lambda o: (o.side is Side.BUY, o.symbol))
    return Proposal(equity, cash, orders, skipped)
