"""The pattern-validator app: candlestick and chart patterns over stored and live bars, and user rules."""

from __future__ import annotations

from pathlib import Path

import structlog
from fastapi import FastAPI

from aitrading.market.history import MarketData
from aitrading.service import create_service
from aitrading.service_tokens import ServiceTokens
from pattern_validator import api, events
from pattern_validator.chart_patterns import ChartSettings
from pattern_validator.live import LiveWindows
from pattern_validator.settings import Settings
from pattern_validator.swings import SwingSettings

MIGRATIONS = Path(__file__).parent / "migrations"
_log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    swings = SwingSettings(swing_bars=settings.swing_bars, min_move_atr=settings.min_move_atr)
    chart = ChartSettings(swings=swings)
    app = create_service(settings, routers=[api.router], migrations=MIGRATIONS, outbox=True)
    client = app.state.client
    tokens = ServiceTokens(client, settings.service_name, settings.service_client_secret)
    if settings.live_enabled and not tokens.configured:
        _log.warning("no SERVICE_CLIENT_SECRET: live windows start empty instead of from stored bars")
    windows = LiveWindows(MarketData(client, tokens) if tokens.configured else None,
                          window_bars=settings.window_bars, max_series=settings.max_series, chart=chart)
    # Queries read bars with the caller's own token (their imported series included).
    app.state.market = MarketData(client)
    app.state.chart = chart
    app.state.windows = windows
    if settings.live_enabled:
        events.subscribe(app, settings, windows, app.state.metrics)
    return app
