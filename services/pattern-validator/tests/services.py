"""The real neighbours the service tests run against: database-service (and user-service), in-process.

chDB keeps one warehouse folder open per process, so every database-service app of this test session
shares one folder (the bundled SPX history is loaded into it once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from uuid import uuid4

import nats
from database_service.main import create_app as create_database_service
from database_service.settings import Settings as DatabaseSettings
from nats.js.errors import NotFoundError
from pattern_validator.settings import Settings

from aitrading.testing import serve_app


def unique_symbol() -> str:
    return f"T{uuid4().hex[:8].upper()}"


@asynccontextmanager
async def database_service(warehouse: Path, *, database_url: str, nats_url: str, jwks_url: str,
                           **overrides: Any) -> AsyncIterator[str]:
    """database-service on a real socket; yields its base URL."""
    settings = DatabaseSettings(database_url=database_url, nats_url=nats_url, jwks_url=jwks_url,
                                data_dir=warehouse, heartbeat_interval_s=60, shutdown_grace_s=1,
                                durable_prefix=f"pv-test-dbs-{uuid4().hex[:10]}", ingest_enabled=False,
                                **overrides)
    async with serve_app(create_database_service(settings)) as url:
        yield url


def pattern_settings(*, database_url: str, nats_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "nats_url": nats_url, "heartbeat_interval_s": 60,
        "shutdown_grace_s": 1, "durable_prefix": f"pv-test-{uuid4().hex[:10]}",
    }
    values.update(overrides)
    return Settings(**values)


async def delete_durables(nats_url: str, *names: str) -> None:
    """Remove the test's durable consumers, so test runs leave none behind on a shared server."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for name in names:
            with suppress(NotFoundError):
                await js.delete_consumer("MARKET", name)
    finally:
        await nc.close()
