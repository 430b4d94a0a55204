"""Fill models: market, limit, stop and stop-limit orders on quotes and bars; volume share; time in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from aitrading.market.bars import Bar, OhlcvFrame, datetime_to_ms
from aitrading.trading.fills import FillModel, Quote, after_attempt, expired
from aitrading.trading.orders import Order, OrderIntent, OrderStatus, OrderType, Side, TimeInForce
from aitrading.trading.strategies import build

D = Decimal
NOW = datetime(2024, 7, 1, 15, 0, tzinfo=UTC)
DAY_MS = 86_400_000


def placed(side: Side, kind: OrderType = OrderType.MARKET, quantity: str = "10", *, price: str | None = None,
           stop: str | None = None, tif: TimeInForce = TimeInForce.GTC,
           status: OrderStatus = OrderStatus.ACCEPTED, at: datetime = NOW) -> Order:
    """An order already accepted by the venue, as the matcher sees it."""
    intent = OrderIntent("AAPL", side, kind, D(quantity), price=None if price is None else D(price),
                         stop_price=None if stop is None else D(stop), time_in_force=tif)
    intent.validate()
    order = Order.from_intent(intent, owner=uuid4(), now=at)
    order.status = status
    return order


def quote(last: str, bid: str | None = None, ask: str | None = None) -> Quote:
    return Quote("AAPL", D(last), NOW, None if bid is None else D(bid), None if ask is None else D(ask))


def bar(open_: str, high: str, low: str, close: str, volume: str = "1000", day: int = 1) -> Bar:
    made = Bar(datetime_to_ms(NOW) + day * DAY_MS, D(open_), D(high), D(low), D(close), D(volume))
    assert made.problems() == []
    return made


# --- market orders on quotes --------------------------------------------------------------------------

def test_a_market_buy_pays_the_ask_and_a_sell_gets_the_bid() -> None:
    model = FillModel(taker_fee_rate=D("0.001"))
    buy = model.on_quote(placed(Side.BUY), quote("100", "99.9", "100.1"), resting=False)
    sell = model.on_quote(placed(Side.SELL), quote("100", "99.9", "100.1"), resting=False)
    assert buy is not None and sell is not None
    assert (buy.price, buy.quantity, buy.liquidity, buy.fee, buy.time) == (D("100.1"), D(10), "taker",
                                                                           D("1.001"), NOW)
    assert (sell.price, sell.side, sell.fee) == (D("99.9"), Side.SELL, D("0.999"))


def test_without_a_bid_or_ask_a_market_order_takes_the_last_price() -> None:
    model = FillModel()
    assert model.on_quote(placed(Side.BUY), quote("100", bid="99"), resting=False).price == D(100)
    assert model.on_quote(placed(Side.SELL), quote("100", ask="101"), resting=False).price == D(100)
    assert model.on_quote(placed(Side.SELL), quote("100", "0", "0"), resting=False).price == D(100)


def test_slippage_always_moves_the_price_against_the_trader() -> None:
    model = FillModel(slippage_bps=D(25))
    buy = model.on_quote(placed(Side.BUY), quote("200", "199", "201"), resting=False)
    sell = model.on_quote(placed(Side.SELL), quote("200", "199", "201"), resting=False)
    assert buy is not None and sell is not None
    assert buy.price == D("201") * D("1.0025") and sell.price == D("199") * D("0.9975")
    assert model.slipped(D(100), Side.BUY) > D(100) > model.slipped(D(100), Side.SELL)


def test_orders_that_are_not_open_or_have_nothing_left_never_fill() -> None:
    model = FillModel()
    for status in (OrderStatus.INITIALIZED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.DENIED):
        order = placed(Side.BUY, status=status)
        assert model.on_quote(order, quote("100"), resting=False) is None
        assert model.on_bar(order, bar("100", "101", "99", "100")) is None


# --- limit orders ------------------------------------------------------------------------------------

def test_a_limit_order_fills_only_when_the_price_crosses_it() -> None:
    model = FillModel(maker_fee_rate=D("0.0001"), taker_fee_rate=D("0.002"))
    buy = placed(Side.BUY, OrderType.LIMIT, price="100")
    assert model.on_quote(buy, quote("100.5", "100.4", "100.6"), resting=True) is None
    resting = model.on_quote(buy, quote("99.5", "99.4", "99.6"), resting=True)
    assert resting is not None
    assert (resting.price, resting.liquidity, resting.fee) == (D(100), "maker", D("0.1"))
    arriving = model.on_quote(buy, quote("99.5", "99.4", "99.6"), resting=False)
    assert arriving is not None and (arriving.price, arriving.liquidity, arriving.fee) == (
        D("99.6"), "taker", D("99.6") * 10 * D("0.002"))
    sell = placed(Side.SELL, OrderType.LIMIT, price="100")
    assert model.on_quote(sell, quote("99.95", "99.9", "100"), resting=True) is None
    crossed = model.on_quote(sell, quote("100", "100", "100.2"), resting=True)
    assert crossed is not None and crossed.price == D(100) and crossed.liquidity == "maker"


def test_a_crossing_limit_with_slippage_never_fills_beyond_its_limit() -> None:
    model = FillModel(slippage_bps=D(100))
    fill = model.on_quote(placed(Side.BUY, OrderType.LIMIT, price="100"), quote("99.5", None, "99.5"),
                          resting=False)
    assert fill is not None and fill.price == D(100)  # 99.5 + 1% is 100.495, capped at the limit
    fill = model.on_quote(placed(Side.SELL, OrderType.LIMIT, price="100"), quote("100.5", "100.5", None),
                          resting=False)
    assert fill is not None and fill.price == D(100)


def test_a_limit_order_on_bars_fills_at_the_limit_or_at_a_better_open() -> None:
    model = FillModel()
    buy = placed(Side.BUY, OrderType.LIMIT, price="100")
    assert model.on_bar(buy, bar("101", "103", "100.01", "102")) is None
    touched = model.on_bar(buy, bar("101", "103", "99", "102"))
    assert touched is not None and (touched.price, touched.liquidity) == (D(100), "maker")
    gapped = model.on_bar(buy, bar("98", "99", "97", "98.5"))
    assert gapped is not None and gapped.price == D(98)
    sell = placed(Side.SELL, OrderType.LIMIT, price="100")
    assert model.on_bar(sell, bar("99", "99.99", "98", "99")) is None
    assert model.on_bar(sell, bar("99", "100", "98", "99")).price == D(100)
    assert model.on_bar(sell, bar("103", "104", "102", "103")).price == D(103)


# --- stops -------------------------------------------------------------------------------------------

def test_a_stop_triggers_on_the_quote_that_reaches_it_then_fills_as_market() -> None:
    model = FillModel(slippage_bps=D(10))
    buy = placed(Side.BUY, OrderType.STOP, stop="105")
    assert not buy.triggered
    assert model.on_quote(buy, quote("104.99", "104.9", "105.1"), resting=True) is None and not buy.triggered
    fill = model.on_quote(buy, quote("105", "104.9", "105.1"), resting=True)
    assert buy.triggered and fill is not None
    assert (fill.price, fill.liquidity) == (D("105.1") * D("1.001"), "taker")
    sell = placed(Side.SELL, OrderType.STOP, stop="95")
    assert model.on_quote(sell, quote("95.01"), resting=True) is None
    fill = model.on_quote(sell, quote("94", "93.9", "94.1"), resting=True)
    assert fill is not None and fill.price == D("93.9") * D("0.999")


def test_a_stop_limit_stays_triggered_until_its_limit_is_reached() -> None:
    model = FillModel()
    order = placed(Side.BUY, OrderType.STOP_LIMIT, price="106", stop="105")
    assert model.on_quote(order, quote("107", "106.9", "107.1"), resting=True) is None
    assert order.triggered
    fill = model.on_quote(order, quote("105.5", "105.4", "105.6"), resting=True)
    assert fill is not None and (fill.price, fill.liquidity) == (D("105.6"), "taker")


def test_a_stop_on_bars_fills_at_the_stop_or_at_the_open_when_the_bar_gaps_through() -> None:
    model = FillModel()
    inside = placed(Side.BUY, OrderType.STOP, stop="105")
    assert model.on_bar(inside, bar("100", "104.99", "99", "104")) is None and not inside.triggered
    assert model.on_bar(inside, bar("100", "106", "99", "104")).price == D(105)
    gap_up = placed(Side.BUY, OrderType.STOP, stop="105")
    assert model.on_bar(gap_up, bar("108", "110", "107", "109")).price == D(108)
    down = placed(Side.SELL, OrderType.STOP, stop="95")
    assert model.on_bar(down, bar("100", "101", "95", "96")).price == D(95)
    gap_down = placed(Side.SELL, OrderType.STOP, stop="95")
    assert model.on_bar(gap_down, bar("90", "92", "89", "91")).price == D(90)


def test_a_stop_limit_on_bars_triggers_at_the_stop_and_respects_its_limit() -> None:
    model = FillModel(slippage_bps=D(50))
    within = placed(Side.BUY, OrderType.STOP_LIMIT, price="106", stop="105")
    fill = model.on_bar(within, bar("100", "107", "99", "106"))
    assert fill is not None and (fill.price, fill.liquidity) == (D(105), "taker")  # no slippage on a limit
    # Gapped above the limit: triggered, not filled; fills later when the price comes back.
    gapped = placed(Side.BUY, OrderType.STOP_LIMIT, price="106", stop="105")
    assert model.on_bar(gapped, bar("108", "110", "107", "109", day=1)) is None and gapped.triggered
    back = model.on_bar(gapped, bar("105.5", "106", "104", "105", day=2))
    assert back is not None and (back.price, back.liquidity) == (D("105.5"), "maker")
    # Sell stop-limit with its limit below the stop: triggered inside the bar, filled at the limit.
    sell = placed(Side.SELL, OrderType.STOP_LIMIT, price="94", stop="95")
    fill = model.on_bar(sell, bar("100", "101", "93", "94"))
    assert fill is not None and fill.price == D(95)
    slow = placed(Side.SELL, OrderType.STOP_LIMIT, price="96", stop="95")
    fill = model.on_bar(slow, bar("100", "101", "94", "95"))
    assert fill is not None and (fill.price, fill.liquidity) == (D(96), "maker")


# --- bars: the t+1 rule ------------------------------------------------------------------------------

def test_a_signal_at_bar_t_close_fills_at_bar_t_plus_1_open() -> None:
    """A strategy decides on bar t's close; the order it places can only meet bar t+1, at its open."""
    closes = [100.0] * 5 + [90.0] * 5 + [120.0] * 5
    bars = [bar(str(c), str(c + 1), str(c - 1), str(c), day=i) for i, c in enumerate(closes)]
    bars[11] = bar("121.5", "125", "118", "120", day=11)  # the bar after the signal opens away from its close
    frame = OhlcvFrame.from_bars(bars)
    strategy = build("sma_crossover", {"fast": 2, "slow": 4})
    signals = [(t, strategy.decide_last(frame.slice(0, t + 1), D(0), "AAPL")) for t in range(len(bars) - 1)]
    entries = [(t, intents) for t, intents in signals if intents]
    assert [t for t, _ in entries] == [10]          # the first bar at 120 lifts the fast SMA above the slow
    t, intents = entries[0]
    order = Order.from_intent(intents[0], owner=uuid4(), now=bars[t].time + timedelta(days=1))
    order.transition(OrderStatus.SUBMITTED, now=order.created_at)
    fill = FillModel(slippage_bps=D(0)).on_bar(order, bars[t + 1])
    assert fill is not None
    assert fill.price == bars[t + 1].open == D("121.5") != bars[t].close
    assert fill.time == bars[t + 1].time
    order.apply_fill(fill)
    assert order.status is OrderStatus.FILLED


def test_a_market_order_on_a_bar_fills_at_the_open_with_slippage() -> None:
    model = FillModel(slippage_bps=D(20), taker_fee_rate=D("0.0005"))
    fill = model.on_bar(placed(Side.SELL, quantity="4"), bar("50", "55", "45", "52"))
    assert fill is not None
    assert (fill.price, fill.quantity, fill.liquidity) == (D(50) * D("0.998"), D(4), "taker")
    assert fill.fee == fill.price * 4 * D("0.0005")


# --- volume share, fok, ioc, day ---------------------------------------------------------------------

def test_volume_share_spreads_a_large_order_over_several_bars() -> None:
    model = FillModel(volume_share=D("0.1"))
    order = placed(Side.BUY, quantity="25")
    sizes = []
    for day in range(1, 6):
        fill = model.on_bar(order, bar("100", "101", "99", "100", volume="100", day=day))
        if fill is None:
            break
        order.apply_fill(fill)
        sizes.append(fill.quantity)
    assert sizes == [D(10), D(10), D(5)]
    assert order.status is OrderStatus.FILLED and order.filled_quantity == D(25)


def test_partial_fills_are_rounded_down_to_the_quantity_step() -> None:
    model = FillModel(volume_share=D("0.1"), quantity_step=D("0.5"))
    order = placed(Side.SELL, quantity="3")
    fill = model.on_bar(order, bar("100", "101", "99", "100", volume="17"))      # 1.7 → 1.5
    assert fill is not None and fill.quantity == D("1.5")
    order.apply_fill(fill)
    assert model.on_bar(order, bar("100", "101", "99", "100", volume="4", day=2)) is None   # 0.4 → 0
    assert model.on_bar(order, bar("100", "101", "99", "100", volume="0", day=3)) is None
    assert order.status is OrderStatus.PARTIALLY_FILLED and order.remaining == D("1.5")


def test_a_fill_or_kill_order_without_enough_volume_does_not_fill_at_all() -> None:
    model = FillModel(volume_share=D("0.5"))
    fok = placed(Side.BUY, quantity="10", tif=TimeInForce.FOK)
    assert model.on_bar(fok, bar("100", "101", "99", "100", volume="19.98")) is None
    assert after_attempt(fok) is OrderStatus.CANCELED
    fok.transition(OrderStatus.CANCELED, now=NOW, reason="fok: not enough volume")
    assert fok.filled_quantity == 0
    whole = placed(Side.BUY, quantity="10", tif=TimeInForce.FOK)
    fill = model.on_bar(whole, bar("100", "101", "99", "100", volume="20"))
    assert fill is not None and fill.quantity == D(10)


def test_immediate_or_cancel_keeps_what_the_first_chance_filled_and_cancels_the_rest() -> None:
    model = FillModel(volume_share=D("0.1"))
    ioc = placed(Side.SELL, quantity="10", tif=TimeInForce.IOC)
    fill = model.on_bar(ioc, bar("100", "101", "99", "100", volume="40"))
    assert fill is not None and fill.quantity == D(4)
    ioc.apply_fill(fill)
    assert after_attempt(ioc) is OrderStatus.CANCELED
    ioc.transition(OrderStatus.CANCELED, now=NOW)
    assert (ioc.filled_quantity, ioc.status) == (D(4), OrderStatus.CANCELED)


@pytest.mark.parametrize(("tif", "status", "expected"), [
    (TimeInForce.IOC, OrderStatus.ACCEPTED, OrderStatus.CANCELED),
    (TimeInForce.FOK, OrderStatus.SUBMITTED, OrderStatus.CANCELED),
    (TimeInForce.IOC, OrderStatus.PARTIALLY_FILLED, OrderStatus.CANCELED),
    (TimeInForce.GTC, OrderStatus.ACCEPTED, None),
    (TimeInForce.DAY, OrderStatus.PARTIALLY_FILLED, None),
    (TimeInForce.IOC, OrderStatus.FILLED, None),
    (TimeInForce.FOK, OrderStatus.CANCELED, None),
])
def test_after_the_first_attempt_only_ioc_and_fok_cancel_what_is_left(
        tif: TimeInForce, status: OrderStatus, expected: OrderStatus | None) -> None:
    assert after_attempt(placed(Side.BUY, tif=tif, status=status)) is expected


def test_a_day_order_expires_when_its_utc_day_has_ended() -> None:
    late = datetime(2024, 7, 1, 23, 59, 59, tzinfo=UTC)
    day = placed(Side.BUY, OrderType.LIMIT, price="100", tif=TimeInForce.DAY, at=late)
    assert not expired(day, late)
    assert not expired(day, datetime(2024, 7, 1, 23, 59, 59, 999_999, tzinfo=UTC))
    assert expired(day, datetime(2024, 7, 2, 0, 0, tzinfo=UTC))
    # The UTC day counts, not the day on a local clock: 01:30 in New York on the 2nd is still the 2nd in UTC.
    new_york = ZoneInfo("America/New_York")
    assert not expired(day, datetime(2024, 7, 1, 19, 59, tzinfo=new_york))     # 23:59 UTC on the 1st
    assert expired(day, datetime(2024, 7, 1, 20, 0, 1, tzinfo=new_york))       # 00:00:01 UTC on the 2nd
    evening = placed(Side.BUY, tif=TimeInForce.DAY, at=datetime(2024, 7, 1, 21, 0, tzinfo=new_york))
    assert not expired(evening, datetime(2024, 7, 2, 23, 0, tzinfo=UTC))      # placed 01:00 UTC on the 2nd
    assert expired(evening, datetime(2024, 7, 3, 0, 0, tzinfo=UTC))
    assert not expired(placed(Side.BUY, tif=TimeInForce.GTC), NOW + timedelta(days=30))
    done = placed(Side.BUY, tif=TimeInForce.DAY, status=OrderStatus.FILLED)
    assert not expired(done, NOW + timedelta(days=2))


def test_bars_of_a_frame_meet_orders_in_time_order() -> None:
    """A resting buy limit over a falling series fills on the first bar whose low reaches it."""
    closes = np.linspace(110, 90, 21)
    bars = [bar(f"{c + 0.5:.2f}", f"{c + 1:.2f}", f"{c - 1:.2f}", f"{c:.2f}", day=i)
            for i, c in enumerate(closes)]
    order = placed(Side.BUY, OrderType.LIMIT, price="100")
    model = FillModel()
    first = next((i, f) for i, b in enumerate(bars) if (f := model.on_bar(order, b)) is not None)
    assert first[0] == 9 and bars[9].low <= D(100) < bars[8].low and first[1].price == D(100)


def test_an_order_without_a_stop_price_never_waits_for_a_trigger() -> None:
    """An order rebuilt field by field (from a store row) may keep the default `triggered=False`."""
    rebuilt = Order(id=uuid4(), owner=uuid4(), symbol="AAPL", side=Side.BUY, type=OrderType.LIMIT,
                    quantity=D(2), created_at=NOW, price=D(100), status=OrderStatus.ACCEPTED)
    assert not rebuilt.triggered
    on_bar = FillModel().on_bar(rebuilt, bar("101", "102", "99", "100"))
    assert on_bar is not None and (on_bar.price, on_bar.liquidity) == (D(100), "maker")
    on_quote = FillModel().on_quote(rebuilt.copy(), quote("99", "98.9", "99.1"), resting=True)
    assert on_quote is not None and on_quote.price == D(100)
