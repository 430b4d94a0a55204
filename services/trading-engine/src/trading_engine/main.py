"""The trading-engine app: orders and fills, pre-trade risk, the kill switch, deployed strategies, and the
venues that execute — paper in the engine, CCXT exchanges and MT5 terminals outside it."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from aitrading.market.history import MarketData
from aitrading.market.prices import LatestPrices
from aitrading.service import create_service
from aitrading.service_tokens import ServiceTokens
from trading_engine import orders_api, risk_api, strategies_api, venue_api
from trading_engine.orders import OrderFlow
from trading_engine.paper_venue import PaperVenue
from trading_engine.reconcile import Reconciler
from trading_engine.settings import Settings
from trading_engine.strategy_runner import StrategyRunner
from trading_engine.venue_registry import build_venues

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    async def start_parts(app: FastAPI) -> None:
        # At start: the resting paper orders are loaded, and what external orders a previous run left
        # open is reconciled at once (the reconciler's first pass).
        await app.state.paper_venue.start()
        await app.state.reconciler.start()

    async def stop_parts(app: FastAPI) -> None:
        await app.state.reconciler.stop()
        await app.state.paper_venue.stop()
        for venue in app.state.venues.values():
            await venue.close()

    routers = [orders_api.router, risk_api.router, strategies_api.router, venue_api.router]
    app = create_service(settings, routers=routers, migrations=MIGRATIONS, outbox=True,
                         on_startup=[start_parts], on_shutdown=[stop_parts])
    state = app.state
    # Requests price and read bars with the caller's token; strategies, having no caller, with the service's.
    tokens = ServiceTokens(state.client, settings.service_name, settings.service_client_secret)
    state.prices = prices = LatestPrices(state.client, tokens)
    if settings.follow_prices:
        prices.follow(state.bus)
    state.market = market = MarketData(state.client, tokens)
    state.venues = venues = build_venues(settings, state.client, tokens)
    state.flow = flow = OrderFlow(settings, state.db, prices, venues)
    state.paper_venue = PaperVenue(flow, prices, refresh_interval_s=settings.paper_refresh_interval_s,
                                   expiry_interval_s=settings.expiry_sweep_interval_s)
    state.reconciler = reconciler = Reconciler(flow, interval_s=settings.reconcile_interval_s)
    flow.on_external = reconciler.wake
    state.strategy_runner = runner = StrategyRunner(flow, market, prices, settings)
    if settings.strategies_enabled:
        state.bus.subscribe_durable(settings.strategy_subject, f"{settings.durable_prefix}-strategy-bars",
                                    runner.on_bars, database=state.db,
                                    only_new=settings.strategy_deliver == "new")
    return app
