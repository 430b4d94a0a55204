"""Orders: the status machine (every pair of statuses), fills taken into an order, intent validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import product
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrading.errors import Conflict, Invalid
from aitrading.trading.orders import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    TRANSITIONS,
    Fill,
    InvalidTransition,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    can_transition,
)

NOW = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)
S = OrderStatus

# The transitions the issue allows, written out here rather than read from the module, so a change
# to the table is a visible change to this list.
ALLOWED = {
    (S.INITIALIZED, S.SUBMITTED), (S.INITIALIZED, S.DENIED),
    (S.SUBMITTED, S.ACCEPTED), (S.SUBMITTED, S.REJECTED), (S.SUBMITTED, S.PARTIALLY_FILLED),
    (S.SUBMITTED, S.FILLED), (S.SUBMITTED, S.PENDING_CANCEL), (S.SUBMITTED, S.CANCELED),
    (S.SUBMITTED, S.EXPIRED),
    (S.ACCEPTED, S.PARTIALLY_FILLED), (S.ACCEPTED, S.FILLED), (S.ACCEPTED, S.PENDING_CANCEL),
    (S.ACCEPTED, S.CANCELED), (S.ACCEPTED, S.EXPIRED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED), (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.PENDING_CANCEL), (S.PARTIALLY_FILLED, S.CANCELED), (S.PARTIALLY_FILLED, S.EXPIRED),
    (S.PENDING_CANCEL, S.CANCELED), (S.PENDING_CANCEL, S.PARTIALLY_FILLED), (S.PENDING_CANCEL, S.FILLED),
    (S.PENDING_CANCEL, S.ACCEPTED), (S.PENDING_CANCEL, S.EXPIRED),
}
ALL_PAIRS = list(product(OrderStatus, OrderStatus))


def order(status: OrderStatus = S.INITIALIZED, quantity: str = "10", side: Side = Side.BUY) -> Order:
    return Order(id=uuid4(), owner=uuid4(), symbol="AAPL", side=side, type=OrderType.MARKET,
                 quantity=Decimal(quantity), created_at=NOW, status=status)


def fill_of(target: Order, quantity: Decimal, price: Decimal, fee: Decimal = Decimal(0),
            at: datetime = NOW) -> Fill:
    return Fill(order_id=target.id, owner=target.owner, symbol=target.symbol, side=target.side,
                quantity=quantity, price=price, fee=fee, time=at)


def test_the_transition_table_is_the_one_the_issue_asks_for() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(OrderStatus)
    assert all(not TRANSITIONS[final] for final in FINAL_STATUSES)


@pytest.mark.parametrize(("current", "wanted"), ALL_PAIRS,
                         ids=[f"{a.value}->{b.value}" for a, b in ALL_PAIRS])
def test_every_pair_of_statuses_either_transitions_or_raises(current: OrderStatus,
                                                             wanted: OrderStatus) -> None:
    subject = order(current)
    later = NOW + timedelta(seconds=1)
    if (current, wanted) in ALLOWED:
        assert can_transition(current, wanted)
        subject.transition(wanted, now=later, reason="because")
        assert (subject.status, subject.updated_at, subject.reason) == (wanted, later, "because")
    else:
        assert not can_transition(current, wanted)
        with pytest.raises(InvalidTransition) as refused:
            subject.transition(wanted, now=later, reason="because")
        assert isinstance(refused.value, Conflict) and refused.value.status == 409
        assert (refused.value.current, refused.value.wanted) == (current, wanted)
        assert f"is {current.value}; it cannot become {wanted.value}" in refused.value.detail
        assert (subject.status, subject.updated_at, subject.reason) == (current, None, None)


def test_open_and_final_statuses_partition_what_follows_initialized() -> None:
    assert OPEN_STATUSES | FINAL_STATUSES | {S.INITIALIZED} == set(OrderStatus)
    assert not OPEN_STATUSES & FINAL_STATUSES
    for status in OrderStatus:
        assert status.is_open == (status in OPEN_STATUSES)
        assert status.is_final == (status in FINAL_STATUSES)


quantities = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(1000), places=3)
prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100_000), places=2)


@settings(max_examples=300, deadline=None)
@given(quantity=quantities, fills=st.lists(st.tuples(quantities, prices, st.decimals(
    min_value=Decimal(0), max_value=Decimal(10), places=4)), min_size=1, max_size=12))
def test_random_fills_never_overfill_and_average_the_price(
        quantity: Decimal, fills: list[tuple[Decimal, Decimal, Decimal]]) -> None:
    subject = order(S.ACCEPTED, str(quantity))
    taken: list[tuple[Decimal, Decimal]] = []
    fees = Decimal(0)
    for n, (size, price, fee) in enumerate(fills):
        before = (subject.filled_quantity, subject.average_price, subject.fees, subject.status)
        execution = fill_of(subject, size, price, fee, NOW + timedelta(seconds=n))
        if size > subject.remaining:
            with pytest.raises(ValueError, match="remaining"):
                subject.apply_fill(execution)
            assert (subject.filled_quantity, subject.average_price, subject.fees, subject.status) == before
            continue
        if subject.status is S.FILLED:
            raise AssertionError("a filled order has nothing remaining, so every fill above was refused")
        subject.apply_fill(execution)
        taken.append((size, price))
        fees += fee
        assert subject.filled_quantity <= subject.quantity
        assert (subject.status is S.FILLED) == (subject.filled_quantity == subject.quantity)
        assert subject.status in (S.FILLED, S.PARTIALLY_FILLED)
        assert subject.updated_at == execution.time
    assert subject.filled_quantity == sum((q for q, _ in taken), Decimal(0))
    assert subject.remaining == subject.quantity - subject.filled_quantity >= 0
    assert subject.fees == fees
    if taken:
        expected = sum((q * p for q, p in taken), Decimal(0)) / subject.filled_quantity
        assert subject.average_price is not None
        assert abs(subject.average_price - expected) <= expected * Decimal("1e-20")
    else:
        assert subject.average_price is None and subject.status is S.ACCEPTED


def test_exactly_the_remaining_quantity_fills_the_order() -> None:
    subject = order(S.SUBMITTED, "5")
    subject.apply_fill(fill_of(subject, Decimal(2), Decimal(100)))
    assert (subject.status, subject.remaining) == (S.PARTIALLY_FILLED, Decimal(3))
    subject.apply_fill(fill_of(subject, Decimal(3), Decimal(110), fee=Decimal("0.5")))
    assert (subject.status, subject.remaining, subject.average_price, subject.fees) == (
        S.FILLED, Decimal(0), Decimal(106), Decimal("0.5"))


@pytest.mark.parametrize("status", [S.INITIALIZED, S.CANCELED, S.EXPIRED, S.REJECTED, S.DENIED])
def test_a_fill_on_an_order_that_cannot_take_one_changes_nothing(status: OrderStatus) -> None:
    subject = order(status)
    with pytest.raises(InvalidTransition):
        subject.apply_fill(fill_of(subject, Decimal(1), Decimal(100), fee=Decimal(1)))
    assert (subject.filled_quantity, subject.average_price, subject.fees, subject.status) == (
        Decimal(0), None, Decimal(0), status)


def test_a_fill_of_another_order_or_of_nothing_is_refused() -> None:
    subject, other = order(S.ACCEPTED), order(S.ACCEPTED)
    with pytest.raises(ValueError, match="belongs to order"):
        subject.apply_fill(fill_of(other, Decimal(1), Decimal(100)))
    with pytest.raises(ValueError, match="remaining"):
        subject.apply_fill(fill_of(subject, Decimal(0), Decimal(100)))
    assert subject.filled_quantity == 0


def test_fill_quantities_carry_the_side() -> None:
    sell = order(S.ACCEPTED, side=Side.SELL)
    execution = fill_of(sell, Decimal(3), Decimal("2.5"))
    assert (execution.notional, execution.signed_quantity) == (Decimal("7.5"), Decimal(-3))
    assert sell.signed_remaining == Decimal(-10)
    assert (Side.BUY.sign, Side.SELL.sign, Side.BUY.opposite) == (1, -1, Side.SELL)


def test_an_order_from_an_intent_keeps_every_field_and_only_stops_wait_for_a_trigger() -> None:
    owner, strategy = uuid4(), uuid4()
    intent = OrderIntent("BTC/USDT", Side.SELL, OrderType.STOP_LIMIT, Decimal("0.5"), price=Decimal(99),
                         stop_price=Decimal(100), time_in_force=TimeInForce.DAY, client_order_id="c-1")
    built = Order.from_intent(intent, owner=owner, now=NOW, venue="ccxt", strategy_id=strategy)
    assert (built.symbol, built.side, built.type, built.quantity, built.price, built.stop_price) == (
        "BTC/USDT", Side.SELL, OrderType.STOP_LIMIT, Decimal("0.5"), Decimal(99), Decimal(100))
    assert (built.time_in_force, built.client_order_id, built.owner, built.venue, built.strategy_id) == (
        TimeInForce.DAY, "c-1", owner, "ccxt", strategy)
    assert (built.status, built.created_at, built.updated_at, built.triggered) == (S.INITIALIZED, NOW, NOW,
                                                                                   False)
    for kind, price, stop in ((OrderType.MARKET, None, None), (OrderType.LIMIT, Decimal(1), None),
                              (OrderType.STOP, None, Decimal(1))):
        made = Order.from_intent(OrderIntent("X", Side.BUY, kind, Decimal(1), price, stop), owner=owner,
                                 now=NOW)
        assert made.triggered is (kind is not OrderType.STOP)
    copy = built.copy()
    copy.transition(S.SUBMITTED, now=NOW)
    assert built.status is S.INITIALIZED


WELL_FORMED = [
    OrderIntent("AAPL", Side.BUY, OrderType.MARKET, Decimal(1)),
    OrderIntent("AAPL", Side.SELL, OrderType.LIMIT, Decimal("0.1"), price=Decimal("187.5"),
                time_in_force=TimeInForce.IOC),
    OrderIntent("AAPL", Side.BUY, OrderType.STOP, Decimal(3), stop_price=Decimal(200),
                time_in_force=TimeInForce.FOK),
    OrderIntent("AAPL", Side.SELL, OrderType.STOP_LIMIT, Decimal(3), price=Decimal(99),
                stop_price=Decimal(100), time_in_force=TimeInForce.DAY),
]


@pytest.mark.parametrize("intent", WELL_FORMED, ids=lambda i: i.type.value)
def test_well_formed_intents_of_every_type_have_no_problems(intent: OrderIntent) -> None:
    assert intent.problems() == []
    intent.validate()


D = Decimal
BAD = [
    (OrderIntent("  ", Side.BUY, OrderType.MARKET, D(1)), {"symbol": "must not be empty"}),
    (OrderIntent("A", Side.BUY, OrderType.MARKET, D(0)), {"quantity": "must be greater than 0"}),
    (OrderIntent("A", Side.BUY, OrderType.MARKET, D(-2)), {"quantity": "must be greater than 0"}),
    (OrderIntent("A", Side.BUY, OrderType.MARKET, D("NaN")), {"quantity": "must be greater than 0"}),
    (OrderIntent("A", Side.BUY, OrderType.MARKET, D("Infinity")), {"quantity": "must be greater than 0"}),
    (OrderIntent("A", Side.BUY, OrderType.LIMIT, D(1)), {"price": "a limit order needs a price"}),
    (OrderIntent("A", Side.BUY, OrderType.MARKET, D(1), price=D(5)),
     {"price": "a market order takes no price"}),
    (OrderIntent("A", Side.BUY, OrderType.LIMIT, D(1), price=D(0)), {"price": "must be greater than 0"}),
    (OrderIntent("A", Side.BUY, OrderType.LIMIT, D(1), price=D("sNaN")), {"price": "must be greater than 0"}),
    (OrderIntent("A", Side.BUY, OrderType.STOP, D(1)), {"stop_price": "a stop order needs a stop_price"}),
    (OrderIntent("A", Side.BUY, OrderType.LIMIT, D(1), price=D(1), stop_price=D(2)),
     {"stop_price": "a limit order takes no stop_price"}),
    (OrderIntent("A", Side.BUY, OrderType.STOP, D(1), stop_price=D(-1)),
     {"stop_price": "must be greater than 0"}),
    (OrderIntent("A", Side.BUY, OrderType.STOP_LIMIT, D(1)),
     {"price": "a stop_limit order needs a price", "stop_price": "a stop_limit order needs a stop_price"}),
    (OrderIntent("", Side.SELL, OrderType.STOP, D(0), price=D(1)),
     {"symbol": "must not be empty", "quantity": "must be greater than 0",
      "price": "a stop order takes no price", "stop_price": "a stop order needs a stop_price"}),
]


@pytest.mark.parametrize(("intent", "expected"), BAD, ids=[",".join(e) for _, e in BAD])
def test_each_problem_of_an_intent_names_its_field(intent: OrderIntent, expected: dict[str, str]) -> None:
    problems = intent.problems()
    assert {p["field"]: p["reason"] for p in problems} == expected
    assert len(problems) == len(expected)
    with pytest.raises(Invalid) as refused:
        intent.validate()
    assert refused.value.status == 422 and refused.value.errors == problems
    for field, reason in expected.items():
        assert f"{field}: {reason}" in refused.value.detail
