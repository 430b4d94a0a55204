"""Fill models: when and at what price an order executes, against a quote (live paper) or a bar
(backtests, and live paper on bar data).

- Market orders take the quote: a buy pays the ask (the last price when no ask is known), a sell gets
  the bid, moved against the trader by `slippage_bps`. On bars, an order placed at bar t's close fills
  at bar t+1's open — the caller hands the next bar, so nothing can look ahead.
- Limit orders fill when the price crosses them: at the limit, or at the open when the bar opened
  beyond it. A resting limit is a maker, an order that crosses on arrival is a taker.
- Stop orders trigger when the price reaches the stop and then behave as market (stop) or limit
  (stop_limit) orders; slippage applies to the market part.
- With `volume_share`, one bar fills at most that share of its volume (partial fills); the rest waits.
- Time in force: ioc cancels what the first chance did not fill, fok fills whole or cancels, day expires
  at the end of its UTC day (`expiry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal

from aitrading.market.bars import Bar
from aitrading.trading.orders import ZERO, Fill, Order, OrderStatus, OrderType, Side, TimeInForce

BPS = Decimal(10_000)


@dataclass(frozen=True)
class Quote:
    symbol: str
    last: Decimal
    time: datetime
    bid: Decimal | None = None
    ask: Decimal | None = None

    def taker_price(self, side: Side) -> Decimal:
        """What an aggressive order of `side` pays or gets before slippage."""
        if side is Side.BUY:
            return self.ask if self.ask is not None and self.ask > ZERO else self.last
        return self.bid if self.bid is not None and self.bid > ZERO else self.last


@dataclass(frozen=True)
class FillModel:
    slippage_bps: Decimal = ZERO
    maker_fee_rate: Decimal = ZERO
    taker_fee_rate: Decimal = ZERO
    volume_share: Decimal | None = None     # (0, 1]: at most this share of a bar's volume per bar
    quantity_step: Decimal | None = None    # partial fills are rounded down to this step

    def slipped(self, price: Decimal, side: Side) -> Decimal:
        if self.slippage_bps == ZERO:
            return price
        return price * (1 + self.slippage_bps / BPS * side.sign)

    def fee(self, notional: Decimal, liquidity: str) -> Decimal:
        return notional * (self.maker_fee_rate if liquidity == "maker" else self.taker_fee_rate)

    def fill(self, order: Order, quantity: Decimal, price: Decimal, liquidity: str, time: datetime) -> Fill:
        return Fill(order_id=order.id, owner=order.owner, symbol=order.symbol, side=order.side,
                    quantity=quantity, price=price, fee=self.fee(quantity * price, liquidity), time=time,
                    liquidity=liquidity, strategy_id=order.strategy_id)

    # --- quotes -----------------------------------------------------------------------------------

    def on_quote(self, order: Order, quote: Quote, *, resting: bool) -> Fill | None:
        """The fill `quote` gives `order` (all of what remains: a quote carries no size), or None.

        `resting`: the order was already on the book before this quote (a limit fill is then a maker).
        Marks a stop order triggered when the quote reaches its stop.
        """
        if not order.is_open or order.remaining <= ZERO:
            return None
        side = order.side
        if not order.triggered:
            if not _stop_reached(side, order.stop_price, quote.last):
                return None
            order.triggered = True
        taker = quote.taker_price(side)
        limit = order.price if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
        if limit is None:
            return self.fill(order, order.remaining, self.slipped(taker, side), "taker", quote.time)
        if not _crosses(side, taker, limit):
            return None
        if resting and order.type is OrderType.LIMIT:
            return self.fill(order, order.remaining, limit, "maker", quote.time)
        return self.fill(order, order.remaining, _better(side, self.slipped(taker, side), limit), "taker",
                         quote.time)

    # --- bars -------------------------------------------------------------------------------------

    def on_bar(self, order: Order, bar: Bar) -> Fill | None:
        """The fill `bar` gives `order`, which was placed before the bar opened; None if it does not fill.

        Market orders fill at the open; limits at the limit (or the open when it gapped through); stops
        trigger when the bar reaches the stop and fill at the stop (or the open when it gapped past).
        """
        if not order.is_open or order.remaining <= ZERO:
            return None
        side, time = order.side, bar.time
        trigger_price: Decimal | None = None
        stop = order.stop_price
        if not order.triggered and stop is not None:  # without a stop price there is nothing to wait for
            if side is Side.BUY and bar.high >= stop:
                trigger_price = max(bar.open, stop)
            elif side is Side.SELL and bar.low <= stop:
                trigger_price = min(bar.open, stop)
            else:
                return None
        order.triggered = True
        quantity = self._bar_quantity(order, bar)
        if quantity <= ZERO:
            return None
        if order.type is OrderType.MARKET:
            return self.fill(order, quantity, self.slipped(bar.open, side), "taker", time)
        if order.type is OrderType.STOP:
            assert trigger_price is not None or order.triggered
            base = trigger_price if trigger_price is not None else bar.open
            return self.fill(order, quantity, self.slipped(base, side), "taker", time)
        limit = order.price
        assert limit is not None
        # Where the order meets the market: the open, or for a stop-limit triggered inside this bar the stop.
        start = trigger_price if trigger_price is not None else bar.open
        if _crosses(side, start, limit):
            return self.fill(order, quantity, _better(side, start, limit),
                             "taker" if trigger_price is not None else "maker", time)
        reached = bar.low <= limit if side is Side.BUY else bar.high >= limit
        if not reached:
            return None
        return self.fill(order, quantity, limit, "maker", time)

    def _bar_quantity(self, order: Order, bar: Bar) -> Decimal:
        if self.volume_share is None:
            return order.remaining
        available = bar.volume * self.volume_share
        if self.quantity_step is not None and self.quantity_step > ZERO:
            available = (available / self.quantity_step).to_integral_value(ROUND_DOWN) * self.quantity_step
        quantity = min(order.remaining, available)
        if order.time_in_force is TimeInForce.FOK and quantity < order.remaining:
            return ZERO
        return quantity


def _stop_reached(side: Side, stop: Decimal | None, price: Decimal) -> bool:
    if stop is None:
        return True
    return price >= stop if side is Side.BUY else price <= stop


def _crosses(side: Side, market: Decimal, limit: Decimal) -> bool:
    """Whether a market at `market` lets a limit order of `side` at `limit` execute."""
    return market <= limit if side is Side.BUY else market >= limit


def _better(side: Side, price: Decimal, limit: Decimal) -> Decimal:
    """`price`, but never worse than the limit."""
    return min(price, limit) if side is Side.BUY else max(price, limit)


def after_attempt(order: Order) -> OrderStatus | None:
    """What time in force makes of an order after its first chance to fill: ioc and fok cancel what is
    left. None: it stays open (gtc and day wait for the next price)."""
    if order.is_open and order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
        return OrderStatus.CANCELED
    return None


def expired(order: Order, now: datetime) -> bool:
    """A day order is over once the UTC day it was placed in has ended."""
    if order.time_in_force is not TimeInForce.DAY or not order.is_open:
        return False
    return _utc_day(now) > _utc_day(order.created_at)


def _utc_day(moment: datetime) -> date:
    """The UTC calendar day of `moment` (naive times are taken as UTC)."""
    return (moment.astimezone(UTC) if moment.tzinfo is not None else moment).date()
