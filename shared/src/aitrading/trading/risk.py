"""Pre-trade risk: every order, from a person or a strategy, live or in a backtest, passes `RiskEngine.check`.

A refusal raises `OrderRefused` naming its rule (the `RULES` below), so a user sees which limit stopped
the order. Limits are per account; a limit of None is not enforced.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from aitrading.errors import Invalid
from aitrading.trading.orders import ZERO, OrderIntent, OrderType, Side


class TradingState(StrEnum):
    ACTIVE = "active"        # everything allowed within the limits
    REDUCING = "reducing"    # only orders that shrink a position
    HALTED = "halted"        # no new orders; cancels still work


RULES = {
    "trading_state": "the account is halted, or reducing and the order would not shrink a position",
    "instrument": "the symbol is not allowed for this account",
    "quantity_precision": "the quantity is not a multiple of the instrument's quantity step",
    "price_precision": "a price is not a multiple of the instrument's price tick",
    "max_order_notional": "quantity x price exceeds the largest order allowed",
    "max_position": "the position in the symbol would exceed its limit",
    "max_gross_exposure": "Σ |position value| over all symbols would exceed the limit",
    "max_open_orders": "too many orders are open",
    "order_rate": "too many orders in the last window",
    "daily_loss": "today's loss has reached the limit",
    "price_band": "the price is too far from the last price (fat finger)",
    "no_price": "the symbol has no price to value the order with",
}


class OrderRefused(Invalid):
    """422: a risk rule refused the order. `rule` is one of RULES."""

    title, type_slug = "Order refused by risk", "order-refused"

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"refused by {rule}: {detail}", rule=rule)
        self.rule = rule


@dataclass(frozen=True)
class Instrument:
    """What an account may trade in a symbol and in which increments."""

    symbol: str
    quantity_step: Decimal | None = None
    price_tick: Decimal | None = None
    min_quantity: Decimal | None = None


@dataclass(frozen=True)
class RiskLimits:
    """Safe defaults: a new paper account cannot place a runaway order or run a runaway strategy."""

    max_order_notional: Decimal | None = Decimal("1000000")
    max_position_notional: Decimal | None = Decimal("2000000")   # per symbol, |quantity| x price
    max_position_quantity: Decimal | None = None                 # per symbol, |quantity|
    max_gross_exposure: Decimal | None = Decimal("5000000")
    max_open_orders: int | None = 200
    max_orders_per_window: int | None = 600
    order_window_s: float = 60.0
    daily_loss_limit: Decimal | None = None                      # a loss of this much stops new risk
    price_band_pct: Decimal | None = Decimal("10")               # limit/stop price vs the last price
    allowed_symbols: frozenset[str] | None = None                # None: every symbol with a price
    instruments: Mapping[str, Instrument] = field(default_factory=dict)


@dataclass(frozen=True)
class AccountView:
    """What risk needs to know about the account at the moment of the order."""

    positions: Mapping[str, Decimal]            # signed quantity per symbol
    prices: Mapping[str, Decimal]               # last price per symbol
    open_orders: int = 0
    # What open orders still want per symbol, each side on its own (a buy does not offset a sell: either
    # may fill first), as positive quantities.
    pending_buy: Mapping[str, Decimal] = field(default_factory=dict)
    pending_sell: Mapping[str, Decimal] = field(default_factory=dict)

    def pending_on_side(self, symbol: str, side: Side) -> Decimal:
        """The signed quantity open orders on `side` may still add to the position in `symbol`."""
        if side is Side.BUY:
            return self.pending_buy.get(symbol, ZERO)
        return -self.pending_sell.get(symbol, ZERO)
    daily_pnl: Decimal = ZERO                   # realized + unrealized change since the day began


def _multiple(value: Decimal, step: Decimal) -> bool:
    return step > ZERO and (value % step) == ZERO


class RiskEngine:
    """One account's limits, trading state and order-rate window."""

    def __init__(self, limits: RiskLimits | None = None, state: TradingState = TradingState.ACTIVE) -> None:
        self.limits = limits or RiskLimits()
        self.state = state
        self._recent: deque[datetime] = deque()
        self._counted_in_window = 0

    def check(self, intent: OrderIntent, account: AccountView, now: datetime) -> None:
        """Raise OrderRefused naming the first rule the order breaks; record it in the rate window if not."""
        limits = self.limits
        position = account.positions.get(intent.symbol, ZERO)
        signed = intent.quantity * intent.side.sign
        # Open orders on the same side have already claimed part of the position: reducing means the
        # order still shrinks what those leave, or a run of small sells could take a long position short.
        claimed = account.pending_on_side(intent.symbol, intent.side)
        reduces = side_reduces(position + claimed, intent.side, intent.quantity)
        if self.state is TradingState.HALTED:
            raise OrderRefused("trading_state", "trading is halted: only cancels are accepted")
        if self.state is TradingState.REDUCING and not reduces:
            raise OrderRefused("trading_state", "the account is reducing: only orders that shrink a position "
                                                f"are accepted (position in {intent.symbol} is {position}, "
                                                f"open orders on that side {claimed})")
        if limits.allowed_symbols is not None and intent.symbol not in limits.allowed_symbols:
            raise OrderRefused("instrument", f"{intent.symbol} is not in the account's allowed symbols")
        instrument = limits.instruments.get(intent.symbol)
        if instrument is not None:
            self._check_precision(intent, instrument)
        last = account.prices.get(intent.symbol)
        if last is None or last <= ZERO:
            raise OrderRefused("no_price", f"no price is known for {intent.symbol}")
        reference = intent.price if intent.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else \
            intent.stop_price if intent.type is OrderType.STOP else last
        assert reference is not None
        self._check_band(intent, last)
        notional = intent.quantity * max(reference, last) if intent.type is not OrderType.LIMIT \
            else intent.quantity * reference
        if limits.max_order_notional is not None and notional > limits.max_order_notional:
            raise OrderRefused("max_order_notional", f"{_money(notional)} is above the limit of "
                                                     f"{_money(limits.max_order_notional)}")
        if not reduces:
            self._check_exposure(intent, account, position, signed, last)
        if limits.max_open_orders is not None and account.open_orders >= limits.max_open_orders:
            raise OrderRefused("max_open_orders", f"{account.open_orders} orders are open; "
                                                  f"the limit is {limits.max_open_orders}")
        loss_limit = limits.daily_loss_limit
        if loss_limit is not None and not reduces and account.daily_pnl <= -loss_limit:
            raise OrderRefused("daily_loss", f"today's P&L is {_money(account.daily_pnl)}; the limit is a "
                                             f"loss of {_money(loss_limit)} (orders that reduce a position "
                                             "are still accepted)")
        self._check_rate(now)

    def _check_precision(self, intent: OrderIntent, instrument: Instrument) -> None:
        if instrument.min_quantity is not None and intent.quantity < instrument.min_quantity:
            raise OrderRefused("quantity_precision", f"{intent.quantity} is below the minimum quantity "
                                                     f"{instrument.min_quantity} of {intent.symbol}")
        step = instrument.quantity_step
        if step is not None and not _multiple(intent.quantity, step):
            raise OrderRefused("quantity_precision", f"{intent.quantity} is not a multiple of {step}")
        tick = instrument.price_tick
        for name, value in (("price", intent.price), ("stop_price", intent.stop_price)):
            if tick is not None and value is not None and not _multiple(value, tick):
                raise OrderRefused("price_precision", f"{name} {value} is not a multiple of {tick}")

    def _check_band(self, intent: OrderIntent, last: Decimal) -> None:
        band = self.limits.price_band_pct
        if band is None:
            return
        for name, value in (("price", intent.price), ("stop_price", intent.stop_price)):
            if value is None:
                continue
            distance = abs(value - last) / last * 100
            if distance > band:
                raise OrderRefused("price_band", f"{name} {value} is {distance:.2f}% from the last price "
                                                 f"{last}; the band is {band}%")

    def _check_exposure(self, intent: OrderIntent, account: AccountView, position: Decimal, signed: Decimal,
                        last: Decimal) -> None:
        limits = self.limits
        # The worst case: this order and every open order on the same side all fill.
        after = position + signed + account.pending_on_side(intent.symbol, intent.side)
        if limits.max_position_quantity is not None and abs(after) > limits.max_position_quantity:
            raise OrderRefused("max_position", f"the position in {intent.symbol} would be {after}; the limit "
                                               f"is {limits.max_position_quantity}")
        if limits.max_position_notional is not None and abs(after) * last > limits.max_position_notional:
            raise OrderRefused("max_position", f"the position in {intent.symbol} would be worth "
                                               f"{_money(abs(after) * last)}; the limit is "
                                               f"{_money(limits.max_position_notional)}")
        if limits.max_gross_exposure is not None:
            gross = ZERO
            for symbol, quantity in account.positions.items():
                if symbol != intent.symbol:
                    gross += abs(quantity) * account.prices.get(symbol, ZERO)
            gross += abs(after) * last
            if gross > limits.max_gross_exposure:
                raise OrderRefused("max_gross_exposure", f"gross exposure would be {_money(gross)}; the "
                                                         f"limit is {_money(limits.max_gross_exposure)}")

    def _check_rate(self, now: datetime) -> None:
        limit = self.limits.max_orders_per_window
        if limit is None:
            return
        window_start = now - timedelta(seconds=self.limits.order_window_s)
        recent = self._recent
        while recent and recent[0] <= window_start:
            recent.popleft()
        placed = len(recent) + self._counted_in_window
        if placed >= limit:
            window = self.limits.order_window_s
            raise OrderRefused("order_rate",
                               f"{placed} orders in the last {window:g} s; the limit is {limit}")
        recent.append(now)

    def remember_orders(self, times: list[datetime]) -> None:
        """Seed the rate window (a restarted engine, a second replica) with recent order times."""
        self._recent = deque(sorted(times))

    def remember_count(self, orders_in_window: int) -> None:
        """For an engine built for one check: how many orders were placed within the window before it,
        counted elsewhere (the database, across replicas) — a count is all the check needs."""
        self._counted_in_window = orders_in_window


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def side_reduces(position: Decimal, side: Side, quantity: Decimal) -> bool:
    """Whether an order of `side` and `quantity` only shrinks `position` (never flips it)."""
    signed = quantity * side.sign
    return position != ZERO and (position > ZERO) != (signed > ZERO) and quantity <= abs(position)
