"""Deployed strategies: the deployments API, and a deployed sma_crossover trading on closed bars published
on md.bar — through the same risk path as a person's orders, never twice for one bar."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import nats
import pytest
from trading_engine.settings import Settings

from aitrading.events import Event
from aitrading.market.bars import Bar, datetime_to_ms
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import bars_event
from aitrading.testing import eventually

from .conftest import Headers, assert_problem, unique_symbol

STRATEGIES = "/api/v1/strategies"
SYMBOL = unique_symbol("S")
START = datetime(2021, 3, 1, tzinfo=UTC)
# Falling closes: the fast average stays below the slow one through the stored history.
HISTORY = [Decimal(130 - i) for i in range(30)]           # 130 ... 101, last one on START + 29 days
SLIP = Decimal(1) / Decimal(10_000)


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(strategy_subject=f"md.bar.*.{SYMBOL}")


def bar(day: int, close: Decimal) -> Bar:
    return Bar(datetime_to_ms(START + timedelta(days=day)), close, close + 1, close - 1, close, Decimal(1000))


async def store_bars(database_service: Callable[[], httpx.AsyncClient], admin_headers: Headers,
                     bars: list[Bar]) -> None:
    """Bars into the warehouse as an admin (so public), as database-service's ingest would store them."""
    rows = [{"time": b.time.isoformat(), "open": str(b.open), "high": str(b.high), "low": str(b.low),
             "close": str(b.close), "volume": str(b.volume)} for b in bars]
    async with database_service() as dbs:
        response = await dbs.post("/api/v1/market/import", headers=admin_headers,
                                  json={"symbol": SYMBOL, "timeframe": "1d", "bars": rows})
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
async def history(database_service: Callable[[], httpx.AsyncClient], admin_headers: Headers) -> None:
    await store_bars(database_service, admin_headers, [bar(i, close) for i, close in enumerate(HISTORY)])


async def publish(nats_url: str, event: Event) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.id)})
    finally:
        await nc.close()


async def deploy(client: httpx.AsyncClient, headers: Headers, **body: Any) -> httpx.Response:
    return await client.post(STRATEGIES, headers=headers, json=body)


def crossover(**body: Any) -> dict[str, Any]:
    return {"strategy": "sma_crossover", "params": {"fast": 2, "slow": 4, "quantity": "3"}, "symbol": SYMBOL,
            "timeframe": "1d", **body}


async def test_catalog_lists_the_built_in_strategies(client: httpx.AsyncClient,
                                                     user_headers: Headers) -> None:
    catalog = (await client.get(f"{STRATEGIES}/catalog", headers=user_headers)).json()
    names = {entry["name"] for entry in catalog}
    assert {"sma_crossover", "rsi_reversion", "bollinger_breakout", "macd_trend"} <= names
    sma = next(e for e in catalog if e["name"] == "sma_crossover")
    assert {"fast", "slow", "quantity"} <= set(sma["params"]["properties"])


async def test_deployments_are_created_listed_patched_and_deleted_per_user(
        client: httpx.AsyncClient, new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    _, headers = new_user()
    _, stranger = new_user()
    created = await deploy(client, headers, strategy="rsi_reversion", params={"period": 10}, symbol="SPX")
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["strategy"], body["symbol"], body["timeframe"], body["mode"], body["account"]) == (
        "rsi_reversion", "SPX", "1d", "paper", "paper")
    assert body["params"] == {"quantity": "1", "period": 10, "oversold": 30.0, "overbought": 70.0}
    assert (body["enabled"], body["position"]) == (True, "0")
    assert (body["last_bar_time"], body["last_error"]) == (None, None)
    path = f"{STRATEGIES}/{body['id']}"

    assert [d["id"] for d in (await client.get(STRATEGIES, headers=headers)).json()] == [body["id"]]
    assert (await client.get(path, headers=headers)).json() == body
    assert_problem(await client.get(path, headers=stranger), 404)
    assert_problem(await client.patch(path, headers=stranger, json={"enabled": False}), 404)
    assert_problem(await client.delete(path, headers=stranger), 404)
    assert (await client.get(STRATEGIES, headers=stranger)).json() == []

    disabled = await client.patch(path, headers=headers, json={"enabled": False})
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert (await client.delete(path, headers=headers)).status_code == 204
    assert_problem(await client.get(path, headers=headers), 404)


async def test_bad_deployments_are_refused_naming_the_field(client: httpx.AsyncClient,
                                                           user_headers: Headers) -> None:
    assert_problem(await deploy(client, user_headers, **crossover(strategy="moon_shot")), 422,
                   field="strategy")
    crossed = assert_problem(await deploy(client, user_headers, **crossover(params={"fast": 5, "slow": 3})),
                             422)
    assert all(e["field"].startswith("params") for e in crossed["errors"]) and crossed["errors"]
    assert_problem(await deploy(client, user_headers, **crossover(params={"fast": 0, "slow": 3})), 422,
                   field="params.fast")
    assert_problem(await deploy(client, user_headers, **crossover(params={"speed": 3})), 422,
                   field="params.speed")
    assert_problem(await deploy(client, user_headers, **crossover(timeframe="2d")), 422, field="timeframe")
    assert_problem(await deploy(client, user_headers, **crossover(mode="yolo")), 422, field="mode")
    assert_problem(await deploy(client, user_headers, **crossover(account="binance")), 422, field="account")
    assert_problem(await deploy(client, user_headers, **crossover(symbol="not a symbol")), 422,
                   field="symbol")
    assert (await client.get(STRATEGIES, headers=user_headers)).json() == []


async def test_live_deployments_need_live_trading_enabled(
        client: httpx.AsyncClient, admin_headers: Headers,
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    user, headers = new_user()
    assert_problem(await deploy(client, headers, **crossover(mode="live", account="binance")), 403)
    await client.put(f"/api/v1/risk/users/{user}", headers=admin_headers, json={"live_enabled": True})
    assert_problem(await deploy(client, headers, **crossover(mode="live")), 422, field="account")


async def test_a_deployed_sma_crossover_trades_on_published_bars_once_per_bar(
        client: httpx.AsyncClient, settings: Settings, history: None,
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    _, trader = new_user()
    _, halted = new_user()
    deployment = (await deploy(client, trader, **crossover())).json()
    blocked = (await deploy(client, halted, **crossover())).json()
    await client.post("/api/v1/risk/halt", headers=halted)
    path = f"{STRATEGIES}/{deployment['id']}"

    async def orders_of(headers: Headers) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = (await client.get("/api/v1/orders", headers=headers,
                                                         params={"symbol": SYMBOL})).json()
        return listed

    async def decided_on(day: int) -> bool:
        seen = (await client.get(path, headers=trader)).json()["last_bar_time"]
        return seen is not None and seen.startswith((START + timedelta(days=day)).date().isoformat())

    # Day 30 closes at 120: the fast average (110.5) crosses above the slow one (106.5) -> buy 3. The
    # warehouse never stores the bars published here (its ingest is off): the strategy sees them as they
    # come, on top of the stored history.
    up = bars_event(SYMBOL, "test", Timeframe.D1, [bar(30, Decimal(120))], source="test")
    await publish(settings.nats_url, up)
    placed = await eventually(lambda: orders_of(trader))
    assert len(placed) == 1
    buy = placed[0]
    assert (buy["side"], buy["quantity"], buy["status"], buy["strategy_id"]) == ("buy", "3", "filled",
                                                                                  deployment["id"])
    assert buy["client_order_id"] == f"strategy-{deployment['id']}-{up.data['bars'][0][0]}-0"
    assert Decimal(buy["average_price"]) == Decimal(120) * (1 + SLIP)   # the bar's close is the price
    await eventually(lambda: decided_on(30))
    after_buy = (await client.get(path, headers=trader)).json()
    assert after_buy["position"] == "3" and after_buy["last_error"] is None

    # The halted user's deployment decided the same, and risk refused it: recorded, not raised.
    refused = (await client.get(f"{STRATEGIES}/{blocked['id']}", headers=halted)).json()
    assert "trading_state" in refused["last_error"] and refused["position"] == "0"
    assert [o["status"] for o in await orders_of(halted)] == ["denied"]

    # The same event redelivered, and the same bar in a new event: nothing more.
    await publish(settings.nats_url, up)
    await publish(settings.nats_url, bars_event(SYMBOL, "test", Timeframe.D1, [bar(30, Decimal(120))],
                                                source="test"))
    # Day 31 (121) keeps the fast average above: no signal. Once it is decided on, the replays before it
    # were too.
    await publish(settings.nats_url, bars_event(SYMBOL, "test", Timeframe.D1, [bar(31, Decimal(121))],
                                                source="test"))
    await eventually(lambda: decided_on(31))
    assert len(await orders_of(trader)) == 1

    # Day 32 closes at 90: the fast average crosses below -> the position of 3 is sold.
    await publish(settings.nats_url, bars_event(SYMBOL, "test", Timeframe.D1, [bar(32, Decimal(90))],
                                                source="test"))
    await eventually(lambda: decided_on(32))
    orders = await orders_of(trader)
    assert [(o["side"], o["quantity"], o["status"]) for o in orders] == [("sell", "3", "filled"),
                                                                        ("buy", "3", "filled")]
    assert (await client.get(path, headers=trader)).json()["position"] == "0"


async def test_a_disabled_deployment_does_not_trade(
        client: httpx.AsyncClient, settings: Settings, history: None,
        new_user: Callable[[], tuple[UUID, Headers]]) -> None:
    _, headers = new_user()
    deployment = (await deploy(client, headers, **crossover())).json()
    await client.patch(f"{STRATEGIES}/{deployment['id']}", headers=headers, json={"enabled": False})
    watcher = (await deploy(client, headers, **crossover(params={"fast": 2, "slow": 3}))).json()
    await publish(settings.nats_url, bars_event(SYMBOL, "test", Timeframe.D1, [bar(40, Decimal(100))],
                                                source="test"))

    async def watched() -> bool:
        got = (await client.get(f"{STRATEGIES}/{watcher['id']}", headers=headers)).json()
        return got["last_bar_time"] is not None

    await eventually(watched)
    disabled = (await client.get(f"{STRATEGIES}/{deployment['id']}", headers=headers)).json()
    assert disabled["last_bar_time"] is None
