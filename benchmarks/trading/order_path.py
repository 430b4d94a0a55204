"""Orders per second through the trading core's order path, beside backtrader's, on the same bars.

    .venv/bin/python benchmarks/trading/order_path.py [bars] [rounds]

Both sides get the same daily bars (the S&P 500 of arch.data, repeated to `bars`, default 50,000) and
place one market order per bar, alternating buy and sell of one unit; each order fills at the next
bar's open with a 0.1% commission.

- ours: per bar, an OrderIntent → RiskEngine.check (every rule on, default limits) → Order → the bar
  fill model at the next bar (FillModel.on_bar) → Order.apply_fill → Portfolio.apply_fill: the code the
  live engine's paper venue and the backtester run, with Decimal money.
- backtrader: a Strategy that calls buy()/sell() in next(), cerebro with the default broker
  (commission 0.001), no analyzers, stdstats off (its fastest configuration).

Prints orders/s of each, the ratio, and checks that both ended with the same cash to the cent.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from statistics import median

import backtrader as bt
import numpy as np
import pandas as pd

from aitrading.market.bars import Bar, OhlcvFrame
from aitrading.trading.accounting import Portfolio
from aitrading.trading.fills import FillModel
from aitrading.trading.orders import Order, OrderIntent, OrderStatus, OrderType, Side
from aitrading.trading.risk import AccountView, RiskEngine, RiskLimits

FEE = Decimal("0.001")
CASH = Decimal(10_000_000)
SYMBOL = "SPX"


def spx(bars: int) -> OhlcvFrame:
    from arch.data import sp500

    data = sp500.load()
    reps = -(-bars // len(data))
    columns = [np.tile(data[c].to_numpy(np.float64), reps)[:bars] for c in ("Open", "High", "Low", "Close",
                                                                             "Volume")]
    times = np.arange(bars, dtype=np.int64) * 86_400_000 + 946_684_800_000
    return OhlcvFrame(times, *columns)


def decimal_bars(frame: OhlcvFrame) -> list[Bar]:
    def exact(values: np.ndarray, i: int) -> Decimal:
        return Decimal(repr(float(values[i])))

    return [Bar(int(frame.time_ms[i]), exact(frame.open, i), exact(frame.high, i), exact(frame.low, i),
                exact(frame.close, i), exact(frame.volume, i)) for i in range(len(frame))]


def ours(bars: list[Bar]) -> tuple[float, int, Decimal]:
    owner = uuid.uuid4()
    risk = RiskEngine(RiskLimits(max_orders_per_window=None, max_order_notional=Decimal(10**9),
                                 max_position_notional=Decimal(10**9), max_gross_exposure=Decimal(10**9),
                                 price_band_pct=Decimal(10)))
    model = FillModel(taker_fee_rate=FEE)
    portfolio = Portfolio.starting_with(CASH)
    pending: Order | None = None
    orders = 0
    began = time.perf_counter()
    for i, bar in enumerate(bars):
        if pending is not None:
            fill = model.on_bar(pending, bar)
            assert fill is not None
            pending.apply_fill(fill)
            portfolio.apply_fill(fill)
            pending = None
        if i == len(bars) - 1:
            break
        now = datetime.fromtimestamp(bar.time_ms / 1000, UTC)
        side = Side.BUY if i % 2 == 0 else Side.SELL
        intent = OrderIntent(SYMBOL, side, OrderType.MARKET, Decimal(1))
        view = AccountView(positions={SYMBOL: portfolio.quantity(SYMBOL)}, prices={SYMBOL: bar.close})
        risk.check(intent, view, now)
        pending = Order.from_intent(intent, owner=owner, now=now)
        pending.transition(OrderStatus.SUBMITTED, now=now)
        pending.transition(OrderStatus.ACCEPTED, now=now)
        orders += 1
    return time.perf_counter() - began, orders, portfolio.cash


class _OnePerBar(bt.Strategy):  # type: ignore[misc]
    def __init__(self) -> None:
        self.count = 0

    def next(self) -> None:
        if len(self.data) == self.data.buflen():
            return  # no order on the last bar: it would have no next open to fill at
        if self.count % 2 == 0:
            self.buy(size=1)
        else:
            self.sell(size=1)
        self.count += 1


def backtrader(frame: OhlcvFrame) -> tuple[float, int, Decimal]:
    index = pd.to_datetime(frame.time_ms, unit="ms")
    df = pd.DataFrame({"open": frame.open, "high": frame.high, "low": frame.low, "close": frame.close,
                       "volume": frame.volume}, index=index)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(_OnePerBar)
    cerebro.broker.setcash(float(CASH))
    cerebro.broker.setcommission(commission=float(FEE))
    began = time.perf_counter()
    [strategy] = cerebro.run()
    elapsed = time.perf_counter() - began
    return elapsed, strategy.count, Decimal(repr(cerebro.broker.getcash()))


def main(count: int, rounds: int) -> None:
    frame = spx(count)
    bars = decimal_bars(frame)
    ours_rates, bt_rates = [], []
    for round_ in range(1, rounds + 1):
        elapsed, orders, cash = ours(bars)
        ours_rates.append(orders / elapsed)
        bt_elapsed, bt_orders, bt_cash = backtrader(frame)
        bt_rates.append(bt_orders / bt_elapsed)
        assert orders == bt_orders, (orders, bt_orders)
        same = abs(cash - bt_cash) < Decimal("0.01")
        print(f"round {round_}: ours {orders / elapsed:,.0f} orders/s ({elapsed:.2f} s)   backtrader "
              f"{bt_orders / bt_elapsed:,.0f} orders/s ({bt_elapsed:.2f} s)   final cash ours {cash:.2f} "
              f"backtrader {bt_cash:.2f} {'(same)' if same else '(DIFFERENT)'}")
    ratio = median(ours_rates) / median(bt_rates)
    print(f"median of {rounds}: ours {median(ours_rates):,.0f} orders/s, backtrader {median(bt_rates):,.0f} "
          f"orders/s -> {ratio:.1f}x, {count:,} bars, one market order per bar")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
