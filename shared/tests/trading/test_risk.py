"""Pre-trade risk: each rule refuses with its name and lets an order just inside its limit through."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from aitrading.errors import Invalid
from aitrading.trading.orders import OrderIntent, OrderType, Side
from aitrading.trading.risk import (
    RULES,
    AccountView,
    Instrument,
    OrderRefused,
    RiskEngine,
    RiskLimits,
    TradingState,
    side_reduces,
)

NOW = datetime(2024, 5, 6, 14, 30, tzinfo=UTC)
D = Decimal
NO_LIMITS: dict[str, Any] = {
    "max_order_notional": None, "max_position_notional": None, "max_position_quantity": None,
    "max_gross_exposure": None, "max_open_orders": None, "max_orders_per_window": None,
    "daily_loss_limit": None, "price_band_pct": None, "allowed_symbols": None,
}


def engine(state: TradingState = TradingState.ACTIVE, **limits: Any) -> RiskEngine:
    """A risk engine enforcing only the limits a test names."""
    return RiskEngine(RiskLimits(**{**NO_LIMITS, **limits}), state)


def account(positions: Mapping[str, str] | None = None, prices: Mapping[str, str] | None = None,
            **fields: Any) -> AccountView:
    return AccountView(positions={k: D(v) for k, v in (positions or {}).items()},
                       prices={k: D(v) for k, v in (prices or {"AAPL": "100"}).items()}, **fields)


def market(side: Side, quantity: str, symbol: str = "AAPL") -> OrderIntent:
    return OrderIntent(symbol, side, OrderType.MARKET, D(quantity))


def limit(side: Side, quantity: str, price: str, symbol: str = "AAPL") -> OrderIntent:
    return OrderIntent(symbol, side, OrderType.LIMIT, D(quantity), price=D(price))


def stop(side: Side, quantity: str, stop_price: str, price: str | None = None) -> OrderIntent:
    kind = OrderType.STOP if price is None else OrderType.STOP_LIMIT
    return OrderIntent("AAPL", side, kind, D(quantity), price=None if price is None else D(price),
                       stop_price=D(stop_price))


def refused(risk: RiskEngine, intent: OrderIntent, view: AccountView, now: datetime = NOW) -> OrderRefused:
    with pytest.raises(OrderRefused) as caught:
        risk.check(intent, view, now)
    error = caught.value
    assert error.rule in RULES and isinstance(error, Invalid) and error.status == 422
    assert error.extra == {"rule": error.rule} and error.detail.startswith(f"refused by {error.rule}: ")
    return error


def test_the_default_limits_let_an_ordinary_order_through_and_stop_a_runaway_one() -> None:
    risk = RiskEngine()
    risk.check(market(Side.BUY, "10"), account(), NOW)
    assert refused(risk, market(Side.BUY, "100000"), account()).rule == "max_order_notional"


def test_halted_refuses_every_order_even_one_that_reduces() -> None:
    risk = engine(TradingState.HALTED)
    view = account({"AAPL": "10"})
    for intent in (market(Side.BUY, "1"), market(Side.SELL, "1"), limit(Side.SELL, "10", "100")):
        error = refused(risk, intent, view)
        assert error.rule == "trading_state" and "halted" in error.detail


def test_reducing_accepts_only_orders_that_shrink_a_position() -> None:
    risk = engine(TradingState.REDUCING)
    long, short = account({"AAPL": "10"}), account({"AAPL": "-4"})
    risk.check(market(Side.SELL, "3"), long, NOW)
    risk.check(market(Side.SELL, "10"), long, NOW)             # to flat is still a reduction
    risk.check(market(Side.BUY, "4"), short, NOW)
    for intent, view in ((market(Side.SELL, "10.5"), long),   # a flip through zero
                         (market(Side.BUY, "1"), long),        # grows the long
                         (market(Side.SELL, "1"), short),      # grows the short
                         (market(Side.BUY, "5"), short),       # covers and goes long
                         (market(Side.BUY, "1"), account())):  # opens from flat
        assert refused(risk, intent, view).rule == "trading_state"


def test_reducing_counts_open_orders_that_already_reduce() -> None:
    """Two sells of the whole long position would take it short once both fill."""
    risk = engine(TradingState.REDUCING)
    risk.check(market(Side.SELL, "6"), account({"AAPL": "10"}, pending_sell={"AAPL": D(4)}), NOW)
    error = refused(risk, market(Side.SELL, "10"), account({"AAPL": "10"}, pending_sell={"AAPL": D(10)}))
    assert error.rule == "trading_state" and "open orders on that side -10" in error.detail
    # An open buy does not use up the long position a sell reduces.
    risk.check(market(Side.SELL, "10"), account({"AAPL": "10"}, pending_buy={"AAPL": D(5)}), NOW)


def test_side_reduces_means_shrinks_without_crossing_zero() -> None:
    assert side_reduces(D(10), Side.SELL, D(10)) and side_reduces(D(-3), Side.BUY, D("2.5"))
    assert not side_reduces(D(10), Side.SELL, D(11)) and not side_reduces(D(10), Side.BUY, D(1))
    assert not side_reduces(D(0), Side.SELL, D(1)) and not side_reduces(D(0), Side.BUY, D(1))


def test_only_allowed_symbols_may_be_traded() -> None:
    risk = engine(allowed_symbols=frozenset({"AAPL"}))
    risk.check(market(Side.BUY, "1"), account(), NOW)
    error = refused(risk, market(Side.BUY, "1", "MSFT"), account(prices={"MSFT": "300"}))
    assert error.rule == "instrument" and "MSFT" in error.detail


def test_quantity_must_be_a_multiple_of_the_step_and_at_least_the_minimum() -> None:
    risk = engine(instruments={"AAPL": Instrument("AAPL", quantity_step=D("0.001"), min_quantity=D("0.01"))})
    for ok in ("0.01", "1.234", "7"):
        risk.check(market(Side.BUY, ok), account(), NOW)
    for bad in ("1.2345", "0.0101"):
        error = refused(risk, market(Side.BUY, bad), account())
        assert error.rule == "quantity_precision" and "not a multiple of 0.001" in error.detail
    assert "below the minimum" in refused(risk, market(Side.BUY, "0.009"), account()).detail


def test_prices_must_be_multiples_of_the_tick() -> None:
    risk = engine(instruments={"AAPL": Instrument("AAPL", price_tick=D("0.05"))})
    risk.check(limit(Side.BUY, "1", "99.95"), account(), NOW)
    risk.check(stop(Side.BUY, "1", "100.10", "100.15"), account(), NOW)
    error = refused(risk, limit(Side.BUY, "1", "99.97"), account())
    assert error.rule == "price_precision" and "price 99.97 is not a multiple of 0.05" in error.detail
    error = refused(risk, stop(Side.SELL, "1", "99.01"), account())
    assert error.rule == "price_precision"
    assert error.detail.endswith("stop_price 99.01 is not a multiple of 0.05")


def test_an_order_in_a_symbol_without_a_price_is_refused() -> None:
    error = refused(engine(), market(Side.BUY, "1", "MSFT"), account())
    assert error.rule == "no_price" and "MSFT" in error.detail
    assert refused(engine(), market(Side.BUY, "1"), account(prices={"AAPL": "0"})).rule == "no_price"


def test_order_notional_is_quantity_times_the_price_it_can_trade_at() -> None:
    risk = engine(max_order_notional=D(1000))
    risk.check(market(Side.BUY, "10"), account(), NOW)                  # 10 x last 100
    risk.check(limit(Side.BUY, "12.5", "80"), account(), NOW)          # 12.5 x limit 80
    assert refused(risk, market(Side.BUY, "10.01"), account()).rule == "max_order_notional"
    error = refused(risk, limit(Side.SELL, "9", "112"), account())
    assert error.rule == "max_order_notional" and "1,008.00 is above the limit of 1,000.00" in error.detail
    # A buy stop may trade at its stop when that is above the last price.
    assert refused(risk, stop(Side.BUY, "9.5", "106"), account()).rule == "max_order_notional"


def test_position_limits_in_quantity_and_value_count_the_position_and_same_side_open_orders() -> None:
    risk = engine(max_position_quantity=D(100), max_position_notional=D(9000))
    view = account({"AAPL": "50"}, pending_buy={"AAPL": D(30)})
    risk.check(market(Side.BUY, "10"), view, NOW)                      # 50 + 30 + 10 = 90 (x 100 = 9,000)
    error = refused(risk, market(Side.BUY, "10.01"), view)
    assert error.rule == "max_position" and "worth 9,001.00" in error.detail
    quantity_only = engine(max_position_quantity=D(100))
    quantity_only.check(market(Side.BUY, "20"), view, NOW)             # exactly 100
    assert "would be 100.5" in refused(quantity_only, market(Side.BUY, "20.5"), view).detail
    # Open sells do not offset a new buy in the worst case, and a short grows against the limit too.
    selling = account({"AAPL": "50"}, pending_sell={"AAPL": D(30)})
    assert refused(quantity_only, market(Side.BUY, "60"), selling).rule == "max_position"
    quantity_only.check(market(Side.SELL, "100"), account(), NOW)
    assert refused(quantity_only, market(Side.SELL, "100.001"), account()).rule == "max_position"


def test_open_buys_count_in_full_even_when_open_sells_of_the_same_symbol_could_net_them() -> None:
    risk = engine(max_position_quantity=D(60))
    both_ways = account({}, pending_buy={"AAPL": D(50)}, pending_sell={"AAPL": D(50)})
    # The resting sell may never fill while the resting buy does: 50 + 20 is past the limit.
    assert refused(risk, market(Side.BUY, "20"), both_ways).rule == "max_position"
    risk.check(market(Side.BUY, "10"), both_ways, NOW)


def test_a_flip_is_checked_as_the_new_position_it_opens() -> None:
    risk = engine(max_position_quantity=D(10))
    risk.check(market(Side.SELL, "20"), account({"AAPL": "10"}), NOW)  # +10 to -10
    assert refused(risk, market(Side.SELL, "21"), account({"AAPL": "10"})).rule == "max_position"


def test_gross_exposure_adds_up_every_symbol() -> None:
    risk = engine(max_gross_exposure=D(10_000))
    prices = {"AAPL": "100", "MSFT": "200", "BTC": "50"}
    view = account({"MSFT": "-20", "BTC": "40"}, prices)              # 4,000 + 2,000 held
    risk.check(market(Side.BUY, "40"), view, NOW)                      # + 4,000 = 10,000
    error = refused(risk, market(Side.BUY, "40.01"), view)
    assert error.rule == "max_gross_exposure" and "10,001.00" in error.detail
    # Reducing the short in MSFT lowers exposure, so it is never refused for it.
    risk.check(market(Side.BUY, "20", "MSFT"), account({"MSFT": "-20", "AAPL": "80"}, prices), NOW)


def test_orders_that_reduce_skip_the_exposure_and_daily_loss_rules() -> None:
    risk = engine(max_position_quantity=D(5), max_gross_exposure=D(100), daily_loss_limit=D(50))
    over = account({"AAPL": "100"}, daily_pnl=D(-500))
    risk.check(market(Side.SELL, "30"), over, NOW)
    assert refused(risk, market(Side.BUY, "1"), over).rule == "max_position"


def test_open_orders_are_limited() -> None:
    risk = engine(max_open_orders=3)
    risk.check(market(Side.BUY, "1"), account(open_orders=2), NOW)
    error = refused(risk, market(Side.BUY, "1"), account(open_orders=3))
    assert error.rule == "max_open_orders" and "3 orders are open; the limit is 3" in error.detail


def test_the_order_rate_window_slides() -> None:
    risk = engine(max_orders_per_window=3, order_window_s=60.0)
    times = [NOW, NOW + timedelta(seconds=10), NOW + timedelta(seconds=20)]
    for moment in times:
        risk.check(market(Side.BUY, "1"), account(), moment)
    error = refused(risk, market(Side.BUY, "1"), account(), NOW + timedelta(seconds=59.9))
    assert error.rule == "order_rate" and "3 orders in the last 60 s; the limit is 3" in error.detail
    # A refused order takes no place in the window; the first order leaves it 60 s after it was placed.
    risk.check(market(Side.BUY, "1"), account(), NOW + timedelta(seconds=60))
    assert refused(risk, market(Side.BUY, "1"), account(), NOW + timedelta(seconds=69)).rule == "order_rate"
    risk.check(market(Side.BUY, "1"), account(), NOW + timedelta(seconds=70))


def test_orders_refused_by_another_rule_do_not_use_up_the_rate() -> None:
    risk = engine(max_orders_per_window=1, max_open_orders=0)
    for _ in range(3):
        assert refused(risk, market(Side.BUY, "1"), account()).rule == "max_open_orders"
    risk.limits = RiskLimits(**{**NO_LIMITS, "max_orders_per_window": 1})
    risk.check(market(Side.BUY, "1"), account(), NOW)
    assert refused(risk, market(Side.BUY, "1"), account()).rule == "order_rate"


def test_a_restarted_engine_is_seeded_with_recent_order_times() -> None:
    risk = engine(max_orders_per_window=2, order_window_s=1.0)
    risk.remember_orders([NOW - timedelta(seconds=0.2), NOW - timedelta(seconds=0.5)])
    assert refused(risk, market(Side.BUY, "1"), account()).rule == "order_rate"
    risk.check(market(Side.BUY, "1"), account(), NOW + timedelta(seconds=0.5))


def test_an_engine_for_one_check_counts_the_orders_placed_elsewhere_in_the_window() -> None:
    counted = engine(max_orders_per_window=3, order_window_s=60.0)
    counted.remember_count(2)
    counted.check(market(Side.BUY, "1"), account(), NOW)                 # the third
    error = refused(counted, market(Side.BUY, "1"), account())
    assert error.rule == "order_rate" and "3 orders in the last 60 s" in error.detail


def test_the_daily_loss_limit_stops_new_risk_once_reached() -> None:
    risk = engine(daily_loss_limit=D(1000))
    risk.check(market(Side.BUY, "1"), account(daily_pnl=D("-999.99")), NOW)
    risk.check(market(Side.BUY, "1"), account(daily_pnl=D(5000)), NOW)
    error = refused(risk, market(Side.BUY, "1"), account(daily_pnl=D(-1000)))
    assert error.rule == "daily_loss" and "-1,000.00" in error.detail
    growing_short = account({"AAPL": "-2"}, daily_pnl=D(-1500))
    assert refused(risk, market(Side.SELL, "1"), growing_short).rule == "daily_loss"


@pytest.mark.parametrize(("intent", "inside"), [
    (limit(Side.BUY, "1", "110"), True), (limit(Side.BUY, "1", "110.01"), False),
    (limit(Side.SELL, "1", "90"), True), (limit(Side.SELL, "1", "89.99"), False),
    (stop(Side.BUY, "1", "110"), True), (stop(Side.BUY, "1", "110.5"), False),
    (stop(Side.SELL, "1", "89.9"), False), (stop(Side.BUY, "1", "105", "111"), False),
    (market(Side.BUY, "1"), True),
])
def test_limit_and_stop_prices_must_lie_within_the_band_around_the_last_price(intent: OrderIntent,
                                                                              inside: bool) -> None:
    risk = engine(price_band_pct=D(10))
    if inside:
        risk.check(intent, account(), NOW)
    else:
        error = refused(risk, intent, account())
        assert error.rule == "price_band" and "from the last price 100; the band is 10%" in error.detail


def test_the_first_rule_broken_is_the_one_named() -> None:
    """State, then the instrument, precision, price, band, size, exposure, open orders, loss, rate."""
    limits: dict[str, Any] = {
        "allowed_symbols": frozenset({"AAPL"}), "price_band_pct": D(5), "max_order_notional": D(100),
        "max_open_orders": 1, "daily_loss_limit": D(1),
        "instruments": {"AAPL": Instrument("AAPL", quantity_step=D(1))},
    }
    bad = account(open_orders=5, daily_pnl=D(-10))
    assert refused(engine(TradingState.HALTED, **limits), limit(Side.BUY, "1.5", "200", "X"), bad
                   ).rule == "trading_state"
    assert refused(engine(**limits), limit(Side.BUY, "1.5", "200", "X"), bad).rule == "instrument"
    assert refused(engine(**limits), limit(Side.BUY, "1.5", "200"), bad).rule == "quantity_precision"
    assert refused(engine(**limits), limit(Side.BUY, "2", "200"), bad).rule == "price_band"
    assert refused(engine(**limits), limit(Side.BUY, "2", "100"), bad).rule == "max_order_notional"
    assert refused(engine(**limits), limit(Side.BUY, "1", "100"), bad).rule == "max_open_orders"
    assert refused(engine(**limits), limit(Side.BUY, "1", "100"), account(daily_pnl=D(-10))
                   ).rule == "daily_loss"
