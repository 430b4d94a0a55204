"""Fills over NATS → positions, cash, realized P&L and the cash ledger: each fill applied once, users
kept apart, out-of-order fills rebuilt, a position event published for every change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
import nats
import pytest
from nats.aio.msg import Msg
from portfolio_manager.settings import Settings

from aitrading.events import Event
from aitrading.streams import subject_token
from aitrading.testing import eventually
from aitrading.trading.accounting import replay
from aitrading.trading.orders import Fill, Side

pytestmark = pytest.mark.slow  # serves database-service (chDB) and data-bridge, consumes over NATS

SYMBOL = f"PMF{uuid4().hex[:8].upper()}"
OTHER = f"PMG{uuid4().hex[:8].upper()}/USD"  # a symbol whose subject token differs from it

NewUser = Callable[[], tuple[UUID, dict[str, str]]]


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(fills_subjects=[f"fills.{subject_token(SYMBOL)}", f"fills.{subject_token(OTHER)}"])


async def _get(client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def _ledger_size(client: httpx.AsyncClient, headers: dict[str, str], account: str = "paper") -> int:
    body = await _get(client, "/api/v1/portfolio/ledger", headers, account=account, limit=1000)
    return len(body["entries"])


async def _applied(client: httpx.AsyncClient, headers: dict[str, str], fills: int,
                   account: str = "paper") -> None:
    """Wait until `fills` fills show in the ledger (plus the paper account's opening entry)."""
    wanted = fills + (1 if account == "paper" else 0)
    await eventually(lambda: _at_least(client, headers, wanted, account), timeout_s=20)


async def _at_least(client: httpx.AsyncClient, headers: dict[str, str], wanted: int, account: str) -> bool:
    return await _ledger_size(client, headers, account) >= wanted


def _fill(owner: UUID, side: str, quantity: str, price: str, fee: str, time: datetime) -> Fill:
    return Fill(order_id=uuid4(), owner=owner, symbol=SYMBOL, side=Side(side), quantity=Decimal(quantity),
                price=Decimal(price), fee=Decimal(fee), time=time)


async def test_fills_make_the_position_cash_and_realized_pnl(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser) -> None:
    owner, headers = new_user()
    t0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
    trades = [("buy", "2", "100", "1"), ("buy", "1", "130", "0.5"), ("sell", "1.5", "150", "0.75")]
    for i, (side, quantity, price, fee) in enumerate(trades):
        await publish_fill(owner=owner, symbol=SYMBOL, side=side, quantity=quantity, price=price, fee=fee,
                           time=t0 + timedelta(minutes=i))
    await _applied(client, headers, len(trades))

    body = await _get(client, "/api/v1/portfolio", headers)
    [position] = body["positions"]
    # By hand: average (2·100 + 1·130) / 3 = 110; selling 1.5 at 150 realizes 1.5 · 40 = 60.
    assert Decimal(position["quantity"]) == Decimal("1.5")
    assert Decimal(position["average_price"]) == Decimal(110)
    assert Decimal(position["realized_pnl"]) == Decimal(60)
    assert Decimal(position["fees"]) == Decimal("2.25")
    assert Decimal(body["cash"]) == Decimal(100_000) - 200 - 1 - 130 - Decimal("0.5") + 225 - Decimal("0.75")
    assert (Decimal(body["realized_pnl"]), Decimal(body["fees"])) == (Decimal(60), Decimal("2.25"))
    # The same figures as the trading core's own replay of these fills.
    expected = replay([_fill(owner, *t, t0 + timedelta(minutes=i)) for i, t in enumerate(trades)],
                      Decimal(100_000))
    assert Decimal(body["cash"]) == expected.cash
    assert Decimal(position["average_price"]) == expected.positions[SYMBOL].average_price
    # No price anywhere for this symbol: valued at its average price, and said so.
    assert position["priced"] is False and position["price_source"] is None
    assert Decimal(position["market_price"]) == Decimal(110) and Decimal(position["unrealized_pnl"]) == 0
    assert Decimal(body["equity"]) == Decimal(body["cash"]) + Decimal("1.5") * 110


async def test_a_redelivered_event_and_the_same_fill_under_a_new_event_apply_once(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser, nats_url: str) -> None:
    owner, headers = new_user()
    fill_id = uuid4()
    first: Event = await publish_fill(owner=owner, symbol=SYMBOL, side="buy", quantity="3", price="10",
                                      fill_id=fill_id)
    nc = await nats.connect(nats_url)
    try:
        # The same event again without a Nats-Msg-Id, so the server stores it twice: a redelivery.
        await nc.jetstream().publish(first.subject, first.to_bytes())
    finally:
        await nc.close()
    # The same fill inside a new event (a new event id): kept out by the fill id.
    await publish_fill(owner=owner, symbol=SYMBOL, side="buy", quantity="3", price="10", fill_id=fill_id)
    # A later fill marks that everything before it on this subject was consumed.
    await publish_fill(owner=owner, symbol=SYMBOL, side="buy", quantity="1", price="10")
    await _applied(client, headers, 2)
    await asyncio.sleep(0.3)  # nothing more may arrive

    [position] = await _get(client, "/api/v1/positions", headers)
    assert Decimal(position["quantity"]) == 4
    body = await _get(client, "/api/v1/portfolio/ledger", headers)
    assert [e["kind"] for e in body["entries"]] == ["fill", "fill", "initial"]
    assert Decimal(body["entries"][0]["balance"]) == Decimal(100_000 - 40)


async def test_a_long_position_flips_short_and_back_to_flat(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser) -> None:
    owner, headers = new_user()
    t0 = datetime(2024, 3, 4, tzinfo=UTC)
    await publish_fill(owner=owner, symbol=SYMBOL, side="buy", quantity="2", price="100", time=t0)
    await publish_fill(owner=owner, symbol=SYMBOL, side="sell", quantity="5", price="110",
                       time=t0 + timedelta(hours=1))
    await _applied(client, headers, 2)
    [position] = await _get(client, "/api/v1/positions", headers)
    # Closing 2 realizes 2 · 10; the other 3 open a short at the fill price.
    assert Decimal(position["quantity"]) == -3
    assert Decimal(position["average_price"]) == 110
    assert Decimal(position["realized_pnl"]) == 20

    await publish_fill(owner=owner, symbol=SYMBOL, side="buy", quantity="3", price="90",
                       time=t0 + timedelta(hours=2))
    await _applied(client, headers, 3)
    assert await _get(client, "/api/v1/positions", headers) == []
    [flat] = await _get(client, "/api/v1/positions", headers, include_flat="true")
    assert Decimal(flat["quantity"]) == 0 and Decimal(flat["average_price"]) == 0
    assert Decimal(flat["realized_pnl"]) == 20 + 3 * 20
    assert flat["market_price"] is None and Decimal(flat["market_value"]) == 0
    body = await _get(client, "/api/v1/portfolio", headers)
    assert Decimal(body["cash"]) == Decimal(100_000) - 200 + 550 - 270
    assert Decimal(body["equity"]) == Decimal(body["cash"])
    assert Decimal(body["realized_pnl"]) == 80


async def test_a_fill_arriving_late_rebuilds_the_position_in_time_order(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser) -> None:
    owner, headers = new_user()
    t0 = datetime(2024, 3, 5, tzinfo=UTC)
    trades = [("buy", "1", "100", t0), ("buy", "1", "200", t0 + timedelta(minutes=1)),
              ("sell", "1", "150", t0 + timedelta(minutes=2))]
    for index in (0, 2, 1):  # the second buy is consumed after the sell that happened after it
        side, quantity, price, time = trades[index]
        await publish_fill(owner=owner, symbol=SYMBOL, side=side, quantity=quantity, price=price, time=time)
    await _applied(client, headers, 3)
    [position] = await _get(client, "/api/v1/positions", headers)
    # In time order: two buys average 150, the sell at 150 realizes nothing, one left at 150.
    assert (Decimal(position["quantity"]), Decimal(position["average_price"]),
            Decimal(position["realized_pnl"])) == (1, 150, 0)
    body = await _get(client, "/api/v1/portfolio", headers)
    assert Decimal(body["realized_pnl"]) == 0 and Decimal(body["cash"]) == Decimal(100_000 - 100 - 200 + 150)


async def test_one_users_fills_never_show_for_another(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser) -> None:
    owner, headers = new_user()
    _, other_headers = new_user()
    await publish_fill(owner=owner, symbol=SYMBOL, side="buy", quantity="7", price="10")
    await publish_fill(owner=owner, symbol=OTHER, side="buy", quantity="1", price="5", account="venue-x")
    await _applied(client, headers, 1)
    await _applied(client, headers, 1, account="venue-x")

    assert await _get(client, "/api/v1/positions", other_headers) == []
    body = await _get(client, "/api/v1/portfolio", other_headers)
    assert (body["account"], Decimal(body["cash"]), Decimal(body["equity"]), body["positions"]) == \
        ("paper", Decimal(100_000), Decimal(100_000), [])
    assert (await _get(client, "/api/v1/portfolio/ledger", other_headers))["entries"] == []
    accounts = await _get(client, "/api/v1/portfolio/accounts", other_headers)
    assert [(a["account"], a["cash"], a["created_at"]) for a in accounts] == [("paper", "100000", None)]
    # Someone else's venue account is not there for them.
    response = await client.get("/api/v1/portfolio", headers=other_headers, params={"account": "venue-x"})
    assert response.status_code == 404
    assert response.json()["errors"][0]["field"] == "account"

    mine = await _get(client, "/api/v1/portfolio/accounts", headers)
    assert [(a["account"], Decimal(a["cash"])) for a in mine] == \
        [("paper", Decimal(100_000 - 70)), ("venue-x", Decimal(-5))]


async def test_a_venue_account_starts_with_no_cash(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser) -> None:
    owner, headers = new_user()
    await publish_fill(owner=owner, symbol=OTHER, side="sell", quantity="2", price="50", fee="0.1",
                       account="binance-main")
    await _applied(client, headers, 1, account="binance-main")
    body = await _get(client, "/api/v1/portfolio", headers, account="binance-main")
    assert (Decimal(body["initial_cash"]), Decimal(body["cash"])) == (0, Decimal("99.9"))
    [position] = body["positions"]
    assert (position["symbol"], Decimal(position["quantity"])) == (OTHER, -2)
    # Nothing in paper: the fill belonged to the venue account.
    assert (await _get(client, "/api/v1/portfolio", headers))["positions"] == []
    ledger = await _get(client, "/api/v1/portfolio/ledger", headers, account="binance-main")
    assert [(e["kind"], Decimal(e["amount"]), Decimal(e["balance"])) for e in ledger["entries"]] == \
        [("fill", Decimal("99.9"), Decimal("99.9"))]


async def test_the_ledger_pages_newest_first_and_its_balances_add_up(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser) -> None:
    owner, headers = new_user()
    fill_ids = [uuid4() for _ in range(4)]
    for i, fill_id in enumerate(fill_ids):
        await publish_fill(owner=owner, symbol=SYMBOL, side="buy" if i % 2 == 0 else "sell", quantity="1",
                           price=str(100 + i), fee="0.5", fill_id=fill_id)
    await _applied(client, headers, 4)
    first = await _get(client, "/api/v1/portfolio/ledger", headers, limit=3)
    assert len(first["entries"]) == 3 and first["next_before"] == first["entries"][-1]["id"]
    rest = await _get(client, "/api/v1/portfolio/ledger", headers, limit=3, before=first["next_before"])
    entries = list(reversed(first["entries"] + rest["entries"]))  # oldest first
    assert [e["kind"] for e in entries] == ["initial", "fill", "fill", "fill", "fill"]
    assert [e["fill_id"] for e in entries[1:]] == [str(f) for f in fill_ids]
    balance = Decimal(0)
    for entry in entries:
        balance += Decimal(entry["amount"])
        assert Decimal(entry["balance"]) == balance
    assert [Decimal(e["amount"]) for e in entries[1:]] == \
        [Decimal("-100.5"), Decimal("100.5"), Decimal("-102.5"), Decimal("102.5")]
    response = await client.get("/api/v1/portfolio/ledger", headers=headers, params={"limit": 0})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "query.limit"


async def test_each_applied_fill_publishes_the_position(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser, nats_url: str) -> None:
    owner, _ = new_user()
    received: list[Event] = []
    nc = await nats.connect(nats_url)

    async def on_message(msg: Msg) -> None:
        event = Event.from_bytes(msg.data)
        if event.data.get("owner_id") == str(owner):
            received.append(event)

    try:
        await nc.subscribe(f"positions.{subject_token(OTHER)}", cb=on_message)
        await nc.flush()
        fill_id = uuid4()
        await publish_fill(owner=owner, symbol=OTHER, side="buy", quantity="0.5", price="40000", fee="2",
                           fill_id=fill_id)
        await eventually(lambda: received, timeout_s=20)
    finally:
        await nc.close()
    [event] = received
    assert (event.type, event.source, event.subject) == \
        ("position", "portfolio-manager", f"positions.{subject_token(OTHER)}")
    data = event.data
    assert (data["symbol"], data["account"], data["quantity"], data["average_price"], data["fees"]) == \
        (OTHER, "paper", "0.5", "40000", "2")
    assert (data["fill_id"], Decimal(data["cash"])) == (str(fill_id), Decimal(100_000 - 20_002))


async def test_an_unreadable_fill_is_dropped_and_the_next_one_still_applies(
        client: httpx.AsyncClient, publish_fill: Any, new_user: NewUser, bus: Any) -> None:
    owner, headers = new_user()
    bad = {"id": str(uuid4()), "owner_id": str(owner), "account": "paper", "symbol": SYMBOL, "side": "buy",
           "quantity": "-1", "price": "10", "time": "2024-01-01T00:00:00Z"}
    await bus.publish(Event.new("fill", f"fills.{subject_token(SYMBOL)}", bad, source="trading-engine"))
    await publish_fill(owner=owner, symbol=SYMBOL, side="buy", quantity="1", price="10")
    await _applied(client, headers, 1)
    [position] = await _get(client, "/api/v1/positions", headers)
    assert Decimal(position["quantity"]) == 1
