"""The feature-engineering app: indicators over stored bars, user feature sets, features on bar close."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from aitrading.market.history import MarketData
from aitrading.service import create_service
from aitrading.service_tokens import ServiceTokens
from feature_engineering import api
from feature_engineering.settings import Settings
from feature_engineering.streaming import FeatureStream, SeriesWindows

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service(settings, routers=[api.router], migrations=MIGRATIONS, outbox=True)
    # Requests read bars with the caller's token; the stream, having no caller, with the service's own.
    tokens = ServiceTokens(app.state.client, settings.service_name, settings.service_client_secret)
    app.state.market = market = MarketData(app.state.client, tokens)
    windows = SeriesWindows(market, min_bars=settings.stream_window_bars,
                            max_series=settings.stream_max_series)
    latency = app.state.metrics.histogram(
        "feature_stream_compute_seconds", "Computing the streaming set for one new bar",
        buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
    app.state.stream = stream = FeatureStream(windows, settings.stream_indicators, latency=latency)
    if settings.stream_enabled:
        app.state.bus.subscribe_durable(settings.stream_subject, f"{settings.durable_prefix}-bars",
                                        stream.on_bars, database=app.state.db,
                                        only_new=settings.stream_deliver == "new")
    return app
