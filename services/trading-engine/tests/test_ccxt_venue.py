"""The CCXT venue against a local server speaking Binance's spot REST API (tests/exchange_server.py):
orders, their executions and fees, cancels, finding an order again after a crash, failures."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest
from trading_engine.ccxt_venue import (
    CcxtVenue,
    client_order_id,
    executions_from_trades,
    rebase_urls,
    report_status,
    synthetic_execution,
)
from trading_engine.venue_registry import VenueNotSupported
from trading_engine.venues import VenueAccount, VenueUnavailable

from aitrading.trading.orders import Order, OrderStatus, OrderType, Side, TimeInForce

sys.path.insert(0, str(Path(__file__).parent))  # the fake exchange beside this file
from exchange_server import FakeBinance, running_fake_binance

D = Decimal


@pytest.fixture
async def binance() -> AsyncIterator[tuple[FakeBinance, str]]:
    async with running_fake_binance() as running:
        yield running


@pytest.fixture
async def venue(binance: tuple[FakeBinance, str]) -> AsyncIterator[CcxtVenue]:
    venue = CcxtVenue(timeout_s=3, urls={"binance": binance[1]})
    yield venue
    await venue.close()


def account(state: FakeBinance, secret: str | None = None, **balances: str) -> VenueAccount:
    """A new Binance key with these balances, as a venue account."""
    key, real_secret = f"key-{uuid4().hex}", f"secret-{uuid4().hex}"
    state.add_key(key, real_secret, **(balances or {"USDT": "100000", "BTC": "1"}))
    return VenueAccount(id=uuid4(), owner=uuid4(), kind="ccxt", name="main", exchange="binance",
                        credentials={"apiKey": key, "secret": secret or real_secret}, options={})


def order(side: Side = Side.BUY, kind: OrderType = OrderType.MARKET, quantity: str = "0.01",
          price: str | None = None, symbol: str = "BTC/USDT", tif: TimeInForce = TimeInForce.GTC,
          stop: str | None = None) -> Order:
    return Order(id=uuid4(), owner=uuid4(), symbol=symbol, side=side, type=kind, quantity=D(quantity),
                 created_at=datetime.now(UTC), price=D(price) if price else None,
                 stop_price=D(stop) if stop else None, time_in_force=tif, status=OrderStatus.SUBMITTED)


def recorded(o: Order, venue_order_id: str | None, filled: str = "0", average: str | None = None,
             fees: str = "0", status: OrderStatus = OrderStatus.ACCEPTED) -> Order:
    """The order as the engine holds it after applying a report."""
    o.venue_order_id, o.filled_quantity, o.fees, o.status = venue_order_id, D(filled), D(fees), status
    o.average_price = D(average) if average else None
    return o


async def test_a_market_order_fills_at_once_with_the_exchanges_trade_and_fee(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, _ = binance
    acct, buy = account(state), order(quantity="0.02")
    report = await venue.submit(acct, buy)
    assert report.status is OrderStatus.FILLED and report.reason is None
    placed = state.orders[int(report.venue_order_id or 0)]
    assert placed.client_order_id == buy.id.hex == client_order_id(buy)
    [execution] = report.executions
    trade = state.trades[-1]
    assert execution.trade_id == str(trade.trade_id)
    assert (execution.quantity, execution.price, execution.liquidity) == (D("0.02"), D(50000), "taker")
    assert execution.fee == D("1.0")  # 0.1% of 1000 USDT, charged in USDT
    assert state.calls("POST", "/api/v3/order")[0]["newClientOrderId"] == buy.id.hex


async def test_a_fee_charged_in_the_base_asset_counts_at_the_trade_price(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, _ = binance
    state.commission_in_received = True
    report = await venue.submit(account(state), order(quantity="0.02"))
    assert state.trades[-1].commission_asset == "BTC" and state.trades[-1].commission == D("0.00002")
    assert report.executions[0].fee == D("1.0")  # 0.00002 BTC at 50000


async def test_the_subject_form_of_a_symbol_names_the_same_market(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    report = await venue.submit(account(binance[0]), order(symbol="BTC-USDT"))
    assert report.status is OrderStatus.FILLED


async def test_a_limit_order_rests_then_fills_when_the_price_reaches_it(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, _ = binance
    acct = account(state)
    buy = order(kind=OrderType.LIMIT, quantity="0.1", price="49000")
    report = await venue.submit(acct, buy)
    assert report.status is OrderStatus.ACCEPTED and report.executions == []
    assert state.calls("POST", "/api/v3/order")[0]["timeInForce"] == "GTC"
    recorded(buy, report.venue_order_id)
    assert (await venue.fetch(acct, buy)).status is OrderStatus.ACCEPTED

    state.fill(int(report.venue_order_id or 0), "0.04")
    partly = await venue.fetch(acct, buy)
    assert partly.status is OrderStatus.PARTIALLY_FILLED
    assert [(e.quantity, e.price, e.liquidity) for e in partly.executions] == [(D("0.04"), D(49000), "maker")]
    recorded(buy, report.venue_order_id, "0.04", "49000", str(partly.executions[0].fee),
             OrderStatus.PARTIALLY_FILLED)

    state.set_price("BTCUSDT", "48900")
    done = await venue.fetch(acct, buy)
    assert done.status is OrderStatus.FILLED
    assert sum(e.quantity for e in done.executions) == D("0.1")
    assert len({e.trade_id for e in done.executions}) == 2  # each trade once, by its id


async def test_cancel_ends_a_resting_order_and_a_late_cancel_reports_the_fill(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, _ = binance
    acct = account(state)
    sell = order(side=Side.SELL, kind=OrderType.LIMIT, quantity="0.5", price="60000")
    placed = await venue.submit(acct, sell)
    assert state.locked[acct.credentials["apiKey"]]["BTC"] == D("0.5")
    canceled = await venue.cancel(acct, recorded(sell, placed.venue_order_id))
    assert canceled.status is OrderStatus.CANCELED and canceled.venue_order_id == placed.venue_order_id
    assert state.locked[acct.credentials["apiKey"]]["BTC"] == 0

    other = order(kind=OrderType.LIMIT, quantity="0.01", price="40000")
    resting = await venue.submit(acct, other)
    state.set_price("BTCUSDT", "39000")
    late = await venue.cancel(acct, recorded(other, resting.venue_order_id))
    assert late.status is OrderStatus.FILLED and late.executions[0].quantity == D("0.01")


async def test_after_a_crash_the_order_is_found_by_its_client_id_and_never_placed_twice(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, url = binance
    acct, buy = account(state), order(quantity="0.03")
    await venue.submit(acct, buy)
    # A new process: no client cached, the engine never recorded the exchange's order id.
    restarted = CcxtVenue(timeout_s=3, urls={"binance": url})
    try:
        found = await restarted.fetch(acct, recorded(buy, None, status=OrderStatus.SUBMITTED))
    finally:
        await restarted.close()
    assert found.status is OrderStatus.FILLED and found.venue_order_id is not None
    assert found.executions[0].quantity == D("0.03")
    assert state.calls("GET", "/api/v3/order")[-1]["origClientOrderId"] == buy.id.hex
    assert len(state.calls("POST", "/api/v3/order")) == 1


async def test_resubmitting_a_working_order_reports_the_first_one(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, _ = binance
    acct = account(state)
    buy = order(kind=OrderType.LIMIT, quantity="0.01", price="45000")
    first = await venue.submit(acct, buy)
    again = await venue.submit(acct, buy)  # Binance: -2010 "Duplicate order sent."
    assert again.status is OrderStatus.ACCEPTED and again.venue_order_id == first.venue_order_id
    assert len(state.orders) == 1


async def test_an_order_the_exchange_never_saw_is_a_lookup_error(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    acct = account(binance[0])
    with pytest.raises(LookupError):
        await venue.fetch(acct, order())
    with pytest.raises(LookupError):
        await venue.fetch(acct, recorded(order(), "99999"))
    with pytest.raises(LookupError):  # cancel of an unknown order: the exchange's view, which is none
        await venue.cancel(acct, order())


async def test_refusals_are_rejected_reports_with_the_exchanges_reason(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, _ = binance
    wrong_secret = await venue.submit(account(state, secret="not-the-secret"), order())
    assert wrong_secret.status is OrderStatus.REJECTED
    assert "AuthenticationError" in (wrong_secret.reason or "") and "-1022" in (wrong_secret.reason or "")
    unknown_key = account(state)
    unknown_key = VenueAccount(**{**unknown_key.__dict__, "id": uuid4(),
                                  "credentials": {"apiKey": "nobody", "secret": "x"}})
    refused = await venue.submit(unknown_key, order())
    assert refused.status is OrderStatus.REJECTED and "-2015" in (refused.reason or "")
    poor = await venue.submit(account(state, USDT="10"), order(quantity="1"))
    assert poor.status is OrderStatus.REJECTED and "InsufficientFunds" in (poor.reason or "")
    no_market = await venue.submit(account(state), order(symbol="DOGE/EUR"))
    assert no_market.status is OrderStatus.REJECTED and "DOGE/EUR" in (no_market.reason or "")
    assert not state.orders


async def test_stop_orders_and_day_orders_are_refused_before_anything_is_sent(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, _ = binance
    with pytest.raises(VenueNotSupported) as refused:
        await venue.submit(account(state), order(kind=OrderType.STOP, stop="40000"))
    assert refused.value.status == 422 and refused.value.errors == [
        {"field": "type", "reason": "not supported by this venue: market or limit"}]
    with pytest.raises(VenueNotSupported):
        await venue.submit(account(state), order(kind=OrderType.LIMIT, price="1", tif=TimeInForce.DAY))
    assert state.requests == []


async def test_balances_are_the_exchanges_free_and_total_per_asset(
        binance: tuple[FakeBinance, str], venue: CcxtVenue) -> None:
    state, _ = binance
    acct = account(state, USDT="1000", BTC="0.5", ETH="0")
    await venue.submit(acct, order(side=Side.SELL, kind=OrderType.LIMIT, quantity="0.2", price="70000"))
    assert await venue.balances(acct) == {"BTC": D("0.3"), "USDT": D(1000)}
    holdings = {h.asset: (h.free, h.total) for h in await venue.holdings(acct)}
    assert holdings == {"BTC": (D("0.3"), D("0.5")), "USDT": (D(1000), D(1000))}
    assert not any(path.startswith("/sapi") for _, path, _ in state.requests)


async def test_an_exchange_that_is_down_or_too_slow_is_unavailable_not_a_rejection(
        binance: tuple[FakeBinance, str]) -> None:
    state, url = binance
    acct = account(state)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    down = CcxtVenue(timeout_s=2, urls={"binance": closed_url})
    slow = CcxtVenue(timeout_s=0.3, urls={"binance": url})
    try:
        with pytest.raises(VenueUnavailable):
            await down.submit(acct, order())
        with pytest.raises(VenueUnavailable):
            await down.fetch(acct, order())
        await slow.balances(acct)  # markets loaded while the exchange is quick
        state.delay_s = 1.0
        with pytest.raises(VenueUnavailable):
            await slow.submit(acct, order())
    finally:
        await down.close()
        await slow.close()


# --- the pure parts ---------------------------------------------------------------------------------


def test_statuses_map_from_ccxts_unified_ones() -> None:
    amount = D(1)
    assert report_status("open", D(0), amount) == (OrderStatus.ACCEPTED, None)
    assert report_status("open", D("0.5"), amount) == (OrderStatus.PARTIALLY_FILLED, None)
    assert report_status("closed", amount, amount) == (OrderStatus.FILLED, None)
    assert report_status("closed", D("0.4"), amount)[0] is OrderStatus.CANCELED
    assert report_status("canceled", D(0), amount) == (OrderStatus.CANCELED, None)
    assert report_status("rejected", D(0), amount) == (OrderStatus.REJECTED, None)
    assert report_status("expired", D("0.2"), amount) == (OrderStatus.EXPIRED, None)
    assert report_status(None, D(0), amount) == (OrderStatus.ACCEPTED, None)


def test_without_trades_each_change_of_filled_is_one_execution_priced_to_the_average() -> None:
    o = order(kind=OrderType.LIMIT, quantity="3", price="100")
    first = synthetic_execution(o, "77", D(1), D(100), D("0.1"), 1_700_000_000_000)
    assert first is not None and (first.trade_id, first.quantity, first.price, first.fee) == (
        "77:1", D(1), D(100), D("0.1"))
    recorded(o, "77", "1", "100", "0.1", OrderStatus.PARTIALLY_FILLED)
    second = synthetic_execution(o, "77", D(3), D(99), D("0.3"), None)
    assert second is not None and (second.trade_id, second.quantity, second.price, second.fee) == (
        "77:3", D(2), D("98.5"), D("0.2"))  # (99 * 3 - 100) / 2
    assert synthetic_execution(o, "77", D(1), D(100), None, None) is None  # nothing new


def test_trades_without_ids_are_not_usable_as_executions() -> None:
    trade = {"id": "t1", "amount": 0.5, "price": 10.0, "timestamp": 1_700_000_000_000,
             "takerOrMaker": "maker", "fee": {"cost": 0.01, "currency": "USDT"}}
    [execution] = executions_from_trades([trade, trade], "BTC", "USDT") or []
    assert (execution.trade_id, execution.quantity, execution.fee, execution.liquidity) == (
        "t1", D("0.5"), D("0.01"), "maker")
    assert executions_from_trades([{**trade, "id": None}], "BTC", "USDT") is None


def test_url_overrides_keep_each_endpoints_path() -> None:
    api = {"public": "https://api.binance.com/api/v3", "fapiPublic": "https://fapi.binance.com/fapi/v1",
           "nested": {"rest": "https://x.com/v2?x=1"}, "flag": True}
    assert rebase_urls(api, "http://127.0.0.1:9/") == {
        "public": "http://127.0.0.1:9/api/v3", "fapiPublic": "http://127.0.0.1:9/fapi/v1",
        "nested": {"rest": "http://127.0.0.1:9/v2?x=1"}, "flag": True}
