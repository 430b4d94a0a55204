"""The portfolio-manager app: fills → positions and cash, valuation at market, allocation and rebalancing."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from aitrading.market.history import MarketData
from aitrading.market.prices import LatestPrices
from aitrading.service import create_service
from aitrading.service_tokens import ServiceTokens
from portfolio_manager import api
from portfolio_manager.events import FillConsumer, durable_names
from portfolio_manager.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service(settings, routers=[api.router, api.positions_router], migrations=MIGRATIONS,
                         outbox=True)
    # Requests read prices and bars with the caller's token (their own series count); the service's own
    # token is only the fallback when there is no caller.
    tokens = ServiceTokens(app.state.client, settings.service_name, settings.service_client_secret)
    app.state.market = MarketData(app.state.client, tokens)
    app.state.prices = prices = LatestPrices(app.state.client, tokens,
                                             fallback_ttl_s=settings.price_fallback_ttl_s)
    if settings.prices_follow:
        prices.follow(app.state.bus)
    consumer = FillConsumer(settings.paper_initial_cash)
    if settings.fills_enabled:
        for subject, durable in durable_names(settings.durable_prefix, settings.fills_subjects):
            app.state.bus.subscribe_durable(subject, durable, consumer.on_fill, database=app.state.db,
                                            ack_wait_s=settings.fills_ack_wait_s,
                                            only_new=settings.fills_deliver == "new")
    return app
