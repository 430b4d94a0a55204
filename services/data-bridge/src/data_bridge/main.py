"""The data-bridge app: feeds in; normalized ticks, closed bars, quality findings and live quotes out."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from aitrading.market.history import MarketData
from aitrading.service import Resource, create_service
from aitrading.service_tokens import ServiceTokens
from data_bridge import api, ingest, market_stream, mt5_channel
from data_bridge.feed_kinds import FEED_KINDS
from data_bridge.feed_manager import FeedManager
from data_bridge.feeds import FeedDeps
from data_bridge.market_stream import MarketFanout
from data_bridge.mt5_agents import Mt5Agents
from data_bridge.pipeline import Pipeline
from data_bridge.publishing import Publisher
from data_bridge.quotes import QuoteBook
from data_bridge.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # The parts below need the bus, cache and metrics that create_service makes, so they start after
    # the platform components (on_startup) and stop before them (on_shutdown), in reverse order.
    parts: list[Resource] = []
    started: list[Resource] = []

    async def start_parts(_: FastAPI) -> None:
        for part in parts:
            await part.start()
            started.append(part)

    async def stop_parts(_: FastAPI) -> None:
        while started:
            await started.pop().stop()

    routers = [api.router, ingest.router, market_stream.router, mt5_channel.router]
    app = create_service(settings, routers=routers, migrations=MIGRATIONS, on_startup=[start_parts],
                         on_shutdown=[stop_parts])
    state = app.state

    # MT5 agents (mt5_agents, mt5_channel): their registry and the /ws/mt5 route they connect to.
    mt5_agents = Mt5Agents()
    state.mt5_agents = mt5_agents

    market = MarketData(state.client, ServiceTokens(state.client, settings.service_name,
                                                    settings.service_client_secret))
    publisher = Publisher(state.bus, settings, state.metrics)
    quotes = QuoteBook(state.cache, mirror=bool(settings.redis_url), ttl_s=settings.quote_ttl_s)
    pipeline = Pipeline(settings, publisher, quotes, state.metrics)
    feeds = FeedManager(state.db, pipeline, FeedDeps(market=market, mt5_agents=mt5_agents, settings=settings),
                        settings, FEED_KINDS)
    pipeline.active_feeds = feeds.active
    fanout = MarketFanout(settings.nats_url, connection_name=f"{settings.service_name}-market",
                          metrics=state.metrics)
    # Started in this order, stopped in reverse: feeds stop before what they feed into.
    parts.extend([mt5_agents, publisher, quotes, pipeline, fanout, feeds])

    state.publisher = publisher
    state.quotes = quotes
    state.pipeline = pipeline
    state.feeds = feeds
    state.market_fanout = fanout
    return app
