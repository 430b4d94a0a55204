"""The engine's pure parts, without I/O: the paper book, stored refusals, limits as JSON, order events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from trading_engine import events
from trading_engine.account_orders import AccountOrder
from trading_engine.bar_windows import union, until
from trading_engine.orders import refusal_of
from trading_engine.paper_book import PaperBook
from trading_engine.risk_accounts import day_start, limits_from_json, limits_json
from trading_engine.strategy_runner import strategy_client_order_id

from aitrading.market.bars import Bar, OhlcvFrame
from aitrading.trading.orders import OrderIntent, OrderStatus, OrderType, Side
from aitrading.trading.risk import Instrument, OrderRefused, RiskLimits

NOW = datetime(2024, 5, 6, 13, 30, tzinfo=UTC)


def resting(symbol: str = "SPX", *, minutes: int = 0, account: str = "paper",
            venue: str = "paper") -> AccountOrder:
    intent = OrderIntent(symbol, Side.BUY, OrderType.LIMIT, Decimal(1), price=Decimal(100))
    order = AccountOrder.for_intent(intent, owner=uuid4(), account=account, venue=venue,
                                    now=NOW + timedelta(minutes=minutes))
    order.transition(OrderStatus.SUBMITTED, now=order.created_at)
    order.transition(OrderStatus.ACCEPTED, now=order.created_at)
    return order


def test_the_book_keeps_open_paper_orders_by_symbol_oldest_first() -> None:
    book = PaperBook()
    late, early, other = resting(minutes=5), resting(minutes=1), resting("NDX")
    for order in (late, early, other):
        book.add(order)
    assert [o.id for o in book.resting("SPX")] == [early.id, late.id]
    assert book.has_resting("NDX") and not book.has_resting("DAX") and len(book) == 3

    book.remove(early.id, "SPX")
    assert [o.id for o in book.resting("SPX")] == [late.id]
    book.remove(other.id, "NDX")
    assert not book.has_resting("NDX")


def test_the_book_holds_copies_and_drops_closed_or_external_orders() -> None:
    book = PaperBook()
    order = resting()
    book.add(order)
    order.transition(OrderStatus.CANCELED, now=NOW)   # the caller's object changing does not reach the book
    assert book.resting("SPX")[0].status is OrderStatus.ACCEPTED
    book.add(order)                                    # a closed order is removed when added
    assert not book.contains(order.id)
    book.add(resting(account="binance", venue="ccxt"))
    assert len(book) == 0

    book.replace_all([resting(), resting("NDX"), resting(account="x", venue="ccxt")])
    assert len(book) == 2


def test_a_denied_order_answers_a_retry_with_the_same_rule_and_detail() -> None:
    order = resting()
    refused = OrderRefused("max_position", "the position in SPX would be 12; the limit is 10")
    intent = OrderIntent("SPX", Side.BUY, OrderType.MARKET, Decimal(12))
    denied = AccountOrder.for_intent(intent, owner=uuid4(), account="paper", venue="paper", now=NOW)
    denied.transition(OrderStatus.DENIED, now=NOW, reason=refused.detail)

    again = refusal_of(denied)

    assert again is not None
    assert (again.rule, again.detail) == ("max_position", refused.detail)
    assert again.extra["order_id"] == str(denied.id)
    assert refusal_of(order) is None


def test_limits_survive_their_json_form() -> None:
    limits = RiskLimits(max_order_notional=Decimal("2500.5"), max_position_quantity=Decimal(3),
                        max_open_orders=7, max_orders_per_window=None, order_window_s=30.0,
                        daily_loss_limit=Decimal(0),
                        price_band_pct=None, allowed_symbols=frozenset({"SPX", "BTC/USDT"}),
                        instruments={"SPX": Instrument("SPX", Decimal("0.5"), Decimal("0.25"), None)})
    stored = limits_json(limits)
    assert stored["max_order_notional"] == "2500.5" and stored["allowed_symbols"] == ["BTC/USDT", "SPX"]
    assert stored["instruments"] == {
        "SPX": {"quantity_step": "0.5", "price_tick": "0.25", "min_quantity": None}}
    assert limits_from_json(stored) == limits


def test_the_trading_day_starts_at_midnight_utc() -> None:
    assert day_start(NOW) == datetime(2024, 5, 6, tzinfo=UTC)
    before = datetime(2024, 5, 6, 1, tzinfo=UTC) - timedelta(hours=2)
    assert day_start(before) == datetime(2024, 5, 5, tzinfo=UTC)


def test_order_events_carry_the_api_shape_with_the_owner_on_a_per_status_subject() -> None:
    order = resting("BTC/USDT")
    event = events.order_event(order)
    assert (event.type, event.subject) == ("order.accepted", "orders.accepted.BTC-USDT")
    assert event.data["owner_id"] == str(order.owner) and event.data["symbol"] == "BTC/USDT"
    assert event.data["quantity"] == "1" and event.data["created_at"].endswith("Z")


def test_a_strategys_client_order_id_names_the_deployment_the_bar_and_the_intent() -> None:
    deployment = uuid4()
    expected = f"strategy-{deployment}-1700000000000-1"
    assert strategy_client_order_id(deployment, 1_700_000_000_000, 1) == expected


def frame(*bars: tuple[int, int]) -> OhlcvFrame:
    return OhlcvFrame.from_bars([Bar(t, Decimal(c), Decimal(c), Decimal(c), Decimal(c), Decimal(1))
                                 for t, c in bars])


def test_a_window_merges_stored_and_seen_bars_by_time_the_stored_ones_winning() -> None:
    stored, seen = frame((1, 10), (2, 20), (3, 30)), frame((3, 99), (4, 40), (5, 50))
    merged = union(stored, seen)
    assert merged.time_ms.tolist() == [1, 2, 3, 4, 5]
    assert merged.close.tolist() == [10, 20, 30, 40, 50]
    assert union(OhlcvFrame.empty(), seen) is seen and union(stored, OhlcvFrame.empty()) is stored
    assert until(merged, 3).time_ms.tolist() == [1, 2, 3]
    assert len(until(merged, 0)) == 0
