"""The database-service app: the market-data warehouse (bars, ticks, symbols) and its feed consumer.

It keeps nothing in PostgreSQL: everything lives in the warehouse (chDB in-process, or ClickHouse).
"""

from __future__ import annotations

from fastapi import FastAPI

from aitrading.service import Resource, create_service
from database_service import api, bundled_history, retention
from database_service.ingest import MarketIngest
from database_service.retention import Retention
from database_service.settings import Settings
from database_service.warehouse import make_warehouse


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    warehouse = make_warehouse(settings.clickhouse_url, settings.service_data_dir,
                               connect_timeout_s=settings.clickhouse_connect_timeout_s,
                               query_timeout_s=settings.clickhouse_query_timeout_s)
    defaults = Retention.of(settings.retention_ticks_days, settings.retention_bars_days)
    resources: list[Resource] = [warehouse]
    ingest: MarketIngest | None = None
    if settings.ingest_enabled:
        ingest = MarketIngest(settings, warehouse)
        resources.append(ingest)

    async def prepare(app: FastAPI) -> None:
        await retention.start(warehouse, defaults)
        if settings.load_bundled_history:
            await bundled_history.load(warehouse)

    # Retention and the bundled history are in place before the first request is served.
    app = create_service(settings, routers=[api.router], database=False, resources=resources,
                         on_startup=[prepare])
    app.state.warehouse = warehouse
    app.state.retention_defaults = defaults
    app.state.ingest = ingest
    if ingest is not None:
        ingest.use_metrics(app.state.metrics)
    return app
