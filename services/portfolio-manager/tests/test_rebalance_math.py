"""Rebalance proposals without I/O: target quantities, rounding down to the step, closing what is not
targeted, skipping small trades, refusing targets that are not a portfolio."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from portfolio_manager.rebalance import check_targets, floor_to_step, propose

from aitrading.errors import Invalid
from aitrading.trading.orders import Side


def amounts(**values: str | int) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in values.items()}


def test_orders_move_holdings_to_the_target_weights() -> None:
    # equity 10 000: cash 4 000, 30 A at 100 (3 000), 60 B at 50 (3 000).
    proposal = propose(equity=Decimal(10_000), cash=Decimal(4000), holdings=amounts(A=30, B=60),
                       prices=amounts(A=100, B=50, C=3), targets=amounts(A="0.5", C="0.2"),
                       quantity_step=Decimal(1))
    orders = {o.symbol: o for o in proposal.orders}
    # A: 0.5 · 10 000 / 100 = 50 wanted, 30 held → buy 20. B: not targeted → sell all 60.
    # C: 0.2 · 10 000 / 3 = 666.67 → 666 (rounded down to the step). Sells come first.
    assert [(o.symbol, o.side, o.quantity) for o in proposal.orders] == \
        [("B", Side.SELL, Decimal(60)), ("A", Side.BUY, Decimal(20)), ("C", Side.BUY, Decimal(666))]
    assert orders["A"].current_weight == Decimal("0.3") and orders["A"].target_weight == Decimal("0.5")
    assert orders["B"].quantity_after == 0 and orders["A"].quantity_after == 50
    assert proposal.cash_after == Decimal(4000) + 3000 - 2000 - 1998
    assert orders["C"].order_body() == {"symbol": "C", "side": "buy", "type": "market", "quantity": "666"}
    assert orders["C"].order_body("binance-main") == \
        {"symbol": "C", "side": "buy", "type": "market", "quantity": "666", "account": "binance-main"}


def test_small_trades_are_skipped_with_the_reason() -> None:
    proposal = propose(equity=Decimal(1000), cash=Decimal(0), holdings=amounts(A=10),
                       prices=amounts(A=100, B=10), targets=amounts(A="0.98", B="0.02"),
                       min_trade_value=Decimal(25), quantity_step=Decimal("0.5"))
    assert proposal.orders == []
    assert [(s.symbol, s.side, s.quantity, s.reason) for s in proposal.skipped] == \
        [("A", Side.SELL, Decimal("0.0"), "below quantity_step"),
         ("B", Side.BUY, Decimal("2.0"), "below min_trade_value")]


def test_a_short_position_not_targeted_is_bought_back_exactly() -> None:
    proposal = propose(equity=Decimal(500), cash=Decimal(1000), holdings=amounts(X="-3.14159"),
                       prices=amounts(X=100), targets={}, quantity_step=Decimal("0.01"))
    [order] = proposal.orders
    assert (order.side, order.quantity, order.quantity_after) == (Side.BUY, Decimal("3.14159"), 0)


def test_negative_targets_sell_short() -> None:
    proposal = propose(equity=Decimal(1000), cash=Decimal(1000), holdings={}, prices=amounts(X=10, Y=20),
                       targets=amounts(X="0.8", Y="-0.2"), quantity_step=Decimal("0.1"))
    assert [(o.symbol, o.side, o.quantity) for o in proposal.orders] == \
        [("Y", Side.SELL, Decimal("10.0")), ("X", Side.BUY, Decimal("80.0"))]


@settings(max_examples=200, deadline=None)
@given(equity=st.decimals(1000, 10**7, places=2), weight=st.decimals(0, 1, places=4),
       held=st.decimals(-1000, 1000, places=3), price=st.decimals("0.01", 10**5, places=2),
       step=st.sampled_from([Decimal("0.0001"), Decimal("0.01"), Decimal(1)]))
def test_an_order_never_overshoots_and_misses_by_less_than_a_step(
        equity: Decimal, weight: Decimal, held: Decimal, price: Decimal,
        step: Decimal) -> None:
    proposal = propose(equity=equity, cash=equity, holdings={"A": held}, prices={"A": price},
                       targets={"A": weight} if weight else {}, quantity_step=step)
    target = weight * equity / price
    after = proposal.orders[0].quantity_after if proposal.orders else held
    if weight == 0:
        assert after == 0
    else:
        assert abs(after - held) <= abs(target - held)        # no overshoot
        assert abs(target - after) < step                      # within a step of the target
        assert (target - after) * (target - held) >= 0         # on the same side as where it started


def test_floor_to_step() -> None:
    assert floor_to_step(Decimal("1.23456"), Decimal("0.0001")) == Decimal("1.2345")
    assert floor_to_step(Decimal("7"), Decimal("2.5")) == Decimal("5.0")


def test_targets_that_are_not_a_portfolio_are_refused_naming_the_field() -> None:
    with pytest.raises(Invalid) as refused:
        check_targets({"A": Decimal("0.7"), "B": Decimal("0.4")}, max_gross=Decimal(2))
    assert refused.value.errors == [{"field": "weights", "reason": "the weights sum to 1.1; at most 1"}]
    with pytest.raises(Invalid) as refused:
        check_targets({"A": Decimal("1.5"), "B": Decimal("-1")}, max_gross=Decimal(2))
    assert refused.value.errors is not None and "gross" in refused.value.errors[0]["reason"]
    with pytest.raises(Invalid) as refused:
        check_targets({"A": Decimal("NaN")}, max_gross=Decimal(2))
    assert refused.value.errors == [{"field": "weights.A", "reason": "must be a finite number"}]
    with pytest.raises(Invalid) as refused:
        propose(equity=Decimal(-5), cash=Decimal(-5), holdings={}, prices={}, targets={})
    assert refused.value.errors == [{"field": "account", "reason": "equity is not positive"}]
    check_targets({"A": Decimal("0.6"), "B": Decimal("0.4")}, max_gross=Decimal(1))
