"""database-service under test: the real app on chDB, real NATS, a JWKS issuer.

chDB holds one warehouse folder per process: every app of this suite uses the session's folder, and a
module shares one app (each with its own durable consumers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from database_service.main import create_app
from database_service.settings import Settings
from fastapi import FastAPI

from aitrading.testing import TokenIssuer, eventually, running_app

# --- helpers, given to tests by the `h` fixture (test modules cannot import each other here) ----------

def unique_symbol(prefix: str = "T") -> str:
    return f"{prefix}{uuid4().hex[:8].upper()}"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def walk_bars(start: datetime, step: timedelta, count: int, *, seed: int = 7,
              price: str = "100") -> list[dict[str, Any]]:
    """A deterministic price walk as JSON bars (decimal strings), each bar valid."""
    bars, last = [], Decimal(price)
    state = seed
    for i in range(count):
        state = (state * 1103515245 + 12345) % 2**31
        move = Decimal(state % 2001 - 1000) / Decimal(10000)  # -0.1 .. +0.1
        open_ = last
        close = max(open_ + move, Decimal("0.01"))
        high = max(open_, close) + Decimal(state % 17) / Decimal(100)
        low = max(min(open_, close) - Decimal(state % 13) / Decimal(100), Decimal("0.001"))
        volume = Decimal(state % 5000) + Decimal("0.5")
        bars.append({"time": iso(start + i * step), "open": str(open_), "high": str(high), "low": str(low),
                     "close": str(close), "volume": str(volume)})
        last = close
    return bars


START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday


@pytest.fixture(scope="session")
def h() -> SimpleNamespace:
    return SimpleNamespace(unique_symbol=unique_symbol, iso=iso, walk_bars=walk_bars, eventually=eventually,
                           START=START)


@pytest.fixture(scope="session")
def warehouse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One folder for the whole session: chDB opens one warehouse folder per process, so apps of
    # different modules (and any other suite's) must not hold different ones at the same time.
    return tmp_path_factory.mktemp("database-service")


@pytest.fixture(scope="module")
def make_settings(database_url: str, nats_url: str, token_issuer: TokenIssuer,
                  warehouse_dir: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url, "nats_url": nats_url, "jwks_url": token_issuer.jwks_url,
            "data_dir": warehouse_dir, "heartbeat_interval_s": 60, "shutdown_grace_s": 1,
            "durable_prefix": f"dbs-test-{uuid4().hex[:10]}", "ingest_deliver": "new",
            "ingest_inactive_threshold_s": 120.0, "ingest_fetch_timeout_s": 0.2,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture(scope="module")
async def app_client(
        make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_settings())
    async with running_app(app) as client:
        yield app, client


@pytest.fixture(scope="module")
def app(app_client: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return app_client[0]


@pytest.fixture(scope="module")
def client(app_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]


@pytest.fixture(scope="module")
def user_id() -> UUID:
    return uuid4()


@pytest.fixture(scope="module")
def user_headers(token_issuer: TokenIssuer, user_id: UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_issuer.token(sub=user_id)}"}


@pytest.fixture(scope="module")
def other_headers(token_issuer: TokenIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_issuer.token(sub=uuid4())}"}


@pytest.fixture(scope="module")
def admin_headers(token_issuer: TokenIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_issuer.token(roles=('user', 'admin'))}"}


@pytest.fixture(scope="module")
def service_headers(token_issuer: TokenIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_issuer.service_token('feature-engineering')}"}
