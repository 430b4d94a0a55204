"""SIGKILL portfolio-manager while fills flow; after a restart every account equals the replay of its fills,
each fill applied exactly once.

The service runs as its real process (`python -m portfolio_manager`). A kill lands mid-batch: the open
transaction rolls back, the unacknowledged fills come again after the ack wait, and the ledger of
processed event ids plus the unique fill id keep anything from applying twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from portfolio_manager.ledger import parse_fill
from portfolio_manager.settings import Settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aitrading.db import to_async_url
from aitrading.events import Event, EventBus
from aitrading.trading.accounting import replay

pytestmark = pytest.mark.slow  # starts the service as a process, twice

SYMBOL = f"PMK{uuid4().hex[:8].upper()}"
FILLS = 600
KILL_AFTER = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(settings: Settings, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "NATS_URL": settings.nats_url,
           "JWKS_URL": settings.jwks_url or "", "DATABASE_SCHEMA": settings.db_schema,
           "DURABLE_PREFIX": settings.durable_prefix, "FILLS_SUBJECTS": json.dumps(settings.fills_subjects),
           "FILLS_ACK_WAIT_S": "2", "PORT": str(port), "SERVICE_URLS": json.dumps(settings.service_urls),
           "HEARTBEAT_INTERVAL_S": "60", "LOG_LEVEL": "WARNING", "PRICES_FOLLOW": "false"}
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "portfolio_manager"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _ready(port: int, process: subprocess.Popen[bytes], log: Path, within_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    async with httpx.AsyncClient() as client:
        while True:
            assert process.poll() is None, f"portfolio-manager exited: {_tail(log)}"
            try:
                if (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert asyncio.get_running_loop().time() < deadline, _tail(log)
            await asyncio.sleep(0.1)


@asynccontextmanager
async def _engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(to_async_url(settings.database_url),
                                 connect_args={"server_settings": {"search_path": settings.db_schema}})
    try:
        yield engine
    finally:
        await engine.dispose()


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        if (await conn.execute(text("SELECT to_regclass(:t)"), {"t": table})).scalar_one() is None:
            return 0  # not migrated yet
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def _until(count: Callable[[], Awaitable[int]], wanted: int, *, within_s: float, poll_s: float,
                 log: Path) -> None:
    """Poll `count` until it reaches `wanted` (a database row count: there is nothing to wait on)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while (have := await count()) < wanted:
        assert asyncio.get_running_loop().time() < deadline, f"{have} of {wanted}: {_tail(log)}"
        await asyncio.sleep(poll_s)


def _events(owners: list[UUID]) -> list[Event]:
    events = []
    t0 = datetime(2024, 6, 3, tzinfo=UTC)
    for i in range(FILLS):
        owner = owners[i % len(owners)]
        side = "buy" if (i // 3) % 5 != 4 else "sell"
        data = {"id": str(uuid4()), "order_id": str(uuid4()), "owner_id": str(owner),
                "account": "paper" if i % 4 else "venue-a", "symbol": SYMBOL, "side": side,
                "quantity": str(Decimal(1 + i % 7) / 4),
                "price": str(Decimal(100 + (i * 37) % 23) + Decimal("0.25")),
                "fee": "0.05", "liquidity": "taker", "time": (t0 + timedelta(seconds=i)).isoformat(),
                "strategy_id": None}
        events.append(Event.new("fill", f"fills.{SYMBOL}", data, source="trading-engine"))
    return events


async def test_positions_equal_the_fills_after_a_kill_mid_flow(
        make_settings: Any, nats_url: str, remove_traces: Any, tmp_path: Path) -> None:
    settings: Settings = make_settings(fills_subjects=[f"fills.{SYMBOL}"])
    owners = [uuid4() for _ in range(3)]
    events = _events(owners)
    port, log = _free_port(), tmp_path / "portfolio-manager.log"
    publisher = EventBus(nats_url, source="trading-engine")
    await publisher.start()
    try:
        async with _engine(settings) as engine:
            with _process(settings, port, log) as first:
                await _ready(port, first, log)
                await publisher.publish_many(events)
                await _until(lambda: _count(engine, "fills"), KILL_AFTER, within_s=60, poll_s=0.005,
                             log=log)
                first.send_signal(signal.SIGKILL)
                first.wait()
            at_kill = await _count(engine, "fills")
            assert at_kill < FILLS, "every fill was applied before the kill; nothing was tested"

            with _process(settings, port, log) as second:
                await _ready(port, second, log)
                await _until(lambda: _count(engine, "fills"), FILLS, within_s=60, poll_s=0.1, log=log)
                await asyncio.sleep(2.5)  # past the ack wait: a redelivery would show now
                assert await _count(engine, "fills") == FILLS
                # One ledger entry per fill, plus the opening entry of each paper account.
                assert await _count(engine, "cash_ledger") == FILLS + len(owners)
                await _assert_accounts_equal_replay(engine, events, owners)
    finally:
        await publisher.stop()
        await remove_traces(settings)


async def _assert_accounts_equal_replay(engine: AsyncEngine, events: list[Event], owners: list[UUID]) -> None:
    fills = [parse_fill(e.data) for e in events]
    async with engine.connect() as conn:
        for owner in owners:
            for account in ("paper", "venue-a"):
                mine = [f.fill for f in fills if f.fill.owner == owner and f.account == account]
                expected = replay(mine, Decimal(100_000) if account == "paper" else Decimal(0))
                row = (await conn.execute(text(
                    "SELECT cash, realized_pnl, fees FROM accounts WHERE owner_id = :o AND account = :a"),
                    {"o": owner, "a": account})).one()
                assert (row.cash, row.fees) == (expected.cash, expected.fees)
                # Redelivered fills come after newer ones: the position is rebuilt in time order (exact)
                # and the account's realized P&L is the sum over its positions: with one symbol, exact.
                assert row.realized_pnl == expected.realized_pnl
                position = (await conn.execute(text(
                    "SELECT quantity, average_price, realized_pnl, fees FROM positions "
                    "WHERE owner_id = :o AND account = :a AND symbol = :s"),
                    {"o": owner, "a": account, "s": SYMBOL})).one()
                replayed = expected.positions[SYMBOL]
                assert tuple(position) == (replayed.quantity, replayed.average_price, replayed.realized_pnl,
                                           replayed.fees)
