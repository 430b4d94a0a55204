"""Orders: what a user or a strategy asks for (`OrderIntent`), the order it becomes (`Order`) and the
only transitions its status may take.

    initialized → denied                      (refused by risk before reaching a venue)
    initialized → submitted → accepted → partially_filled → filled
                            ↘ rejected  (venue)   ↘ pending_cancel → canceled
                                        ↘ canceled / expired
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID, uuid4

from aitrading.errors import Conflict, Invalid

ZERO = Decimal(0)


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    GTC = "gtc"   # until filled or canceled
    IOC = "ioc"   # fill what can be filled at once, cancel the rest
    FOK = "fok"   # fill all at once or nothing
    DAY = "day"   # expires at the end of the UTC day it was placed in


class OrderStatus(StrEnum):
    INITIALIZED = "initialized"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DENIED = "denied"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def is_open(self) -> bool:
        return self not in FINAL_STATUSES and self is not OrderStatus.INITIALIZED


FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED,
                            OrderStatus.EXPIRED, OrderStatus.DENIED})
OPEN_STATUSES = frozenset({OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED,
                           OrderStatus.PENDING_CANCEL})

_S = OrderStatus
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    _S.INITIALIZED: frozenset({_S.SUBMITTED, _S.DENIED}),
    _S.SUBMITTED: frozenset({_S.ACCEPTED, _S.REJECTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL,
                             _S.CANCELED, _S.EXPIRED}),
    _S.ACCEPTED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELED, _S.EXPIRED}),
    _S.PARTIALLY_FILLED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELED,
                                    _S.EXPIRED}),
    # A fill can still arrive while a cancel is on its way; the venue's answer decides.
    _S.PENDING_CANCEL: frozenset({_S.CANCELED, _S.PARTIALLY_FILLED, _S.FILLED, _S.ACCEPTED, _S.EXPIRED}),
    _S.FILLED: frozenset(),
    _S.CANCELED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.DENIED: frozenset(),
}


class InvalidTransition(Conflict):
    def __init__(self, order_id: UUID, current: OrderStatus, wanted: OrderStatus) -> None:
        super().__init__(f"order {order_id} is {current.value}; it cannot become {wanted.value}")
        self.current, self.wanted = current, wanted


def can_transition(current: OrderStatus, wanted: OrderStatus) -> bool:
    return wanted in TRANSITIONS[current]


@dataclass(frozen=True)
class OrderIntent:
    """What is asked for, before risk and before any venue: from the API or from a strategy."""

    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None        # limit price (limit, stop_limit)
    stop_price: Decimal | None = None   # trigger (stop, stop_limit)
    time_in_force: TimeInForce = TimeInForce.GTC
    client_order_id: str | None = None

    def problems(self) -> list[dict[str, str]]:
        """Field problems a person can act on, `[{"field", "reason"}]`; empty when well formed."""
        found: list[dict[str, str]] = []
        if not self.symbol.strip():
            found.append({"field": "symbol", "reason": "must not be empty"})
        if not self.quantity.is_finite() or self.quantity <= ZERO:
            found.append({"field": "quantity", "reason": "must be greater than 0"})
        needs_price = self.type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = self.type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if needs_price and self.price is None:
            found.append({"field": "price", "reason": f"a {self.type.value} order needs a price"})
        if not needs_price and self.price is not None:
            found.append({"field": "price", "reason": f"a {self.type.value} order takes no price"})
        if self.price is not None and (not self.price.is_finite() or self.price <= ZERO):
            found.append({"field": "price", "reason": "must be greater than 0"})
        if needs_stop and self.stop_price is None:
            found.append({"field": "stop_price", "reason": f"a {self.type.value} order needs a stop_price"})
        if not needs_stop and self.stop_price is not None:
            found.append({"field": "stop_price", "reason": f"a {self.type.value} order takes no stop_price"})
        if self.stop_price is not None and (not self.stop_price.is_finite() or self.stop_price <= ZERO):
            found.append({"field": "stop_price", "reason": "must be greater than 0"})
        return found

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            detail = "; ".join(f"{p['field']}: {p['reason']}" for p in problems)
            raise Invalid(f"the order is not valid: {detail}", errors=problems)


@dataclass
class Fill:
    """One execution: part or all of an order, at one price."""

    order_id: UUID
    owner: UUID
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    time: datetime
    liquidity: str = "taker"           # "maker" or "taker": which fee rate applied
    id: UUID = field(default_factory=uuid4)
    strategy_id: UUID | None = None

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity * self.side.sign


@dataclass
class Order:
    id: UUID
    owner: UUID
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    created_at: datetime
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    client_order_id: str | None = None
    status: OrderStatus = OrderStatus.INITIALIZED
    filled_quantity: Decimal = ZERO
    average_price: Decimal | None = None
    fees: Decimal = ZERO
    triggered: bool = False            # a stop order whose stop price was reached
    reason: str | None = None          # why it was denied, rejected, canceled or expired
    venue: str = "paper"
    venue_order_id: str | None = None
    strategy_id: UUID | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_intent(cls, intent: OrderIntent, *, owner: UUID, now: datetime, venue: str = "paper",
                    strategy_id: UUID | None = None, order_id: UUID | None = None) -> Order:
        return cls(id=order_id or uuid4(), owner=owner, symbol=intent.symbol, side=intent.side,
                   type=intent.type, quantity=intent.quantity, created_at=now, price=intent.price,
                   stop_price=intent.stop_price, time_in_force=intent.time_in_force,
                   client_order_id=intent.client_order_id, venue=venue, strategy_id=strategy_id,
                   triggered=intent.type not in (OrderType.STOP, OrderType.STOP_LIMIT), updated_at=now)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def signed_remaining(self) -> Decimal:
        return self.remaining * self.side.sign

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    def transition(self, wanted: OrderStatus, *, now: datetime, reason: str | None = None) -> None:
        if not can_transition(self.status, wanted):
            raise InvalidTransition(self.id, self.status, wanted)
        self.status = wanted
        self.updated_at = now
        if reason is not None:
            self.reason = reason

    def apply_fill(self, fill: Fill) -> None:
        """Take an execution into the order: filled quantity, average price, fees, status."""
        if fill.order_id != self.id:
            raise ValueError(f"fill {fill.id} belongs to order {fill.order_id}, not {self.id}")
        if fill.quantity <= ZERO or fill.quantity > self.remaining:
            raise ValueError(f"fill of {fill.quantity} on order {self.id} with {self.remaining} remaining")
        total = self.filled_quantity + fill.quantity
        status = OrderStatus.FILLED if total == self.quantity else OrderStatus.PARTIALLY_FILLED
        if not can_transition(self.status, status):  # checked first: a refused fill changes nothing
            raise InvalidTransition(self.id, self.status, status)
        paid = (self.average_price or ZERO) * self.filled_quantity + fill.price * fill.quantity
        self.average_price = paid / total
        self.filled_quantity = total
        self.fees += fill.fee
        self.transition(status, now=fill.time)

    def copy(self) -> Order:
        return replace(self)
