"""Trading figures, each beside backtrader's same order path measured in the same run.

    .venv/bin/python benchmarks/trading/run.py [--bars 50000] [--orders 1000] [--rounds 3]

1. In-process order path (benchmarks/trading/order_path.py): one market order per bar through the
   trading core's risk engine, bar fill model and accounting, beside backtrader's broker doing the same
   on the same bars; orders/s of each and the check that both end with the same cash.
2. Order acknowledgement through the fleet: the real user-service, database-service, data-bridge,
   trading-engine and api-gateway as processes (the launcher; DATABASE_URL/NATS_URL when set, embedded
   otherwise). `--orders` sequential paper market orders on SPX, each answered once it is stored,
   risk-checked and filled on paper: latency p50/p99 through the gateway and straight to the engine,
   then throughput with 8 concurrent clients straight to the engine, for one user and for eight.

Prints the figures; asserts nothing. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import order_path  # the sibling harness

from aitrading.fleet.launcher import Fleet

SERVICES = ["user-service", "database-service", "data-bridge", "trading-engine", "api-gateway"]
PORT_OFFSET = 400
ADMIN_EMAIL, ADMIN_PASSWORD = "bench-admin@example.com", "bench-admin-password-1"


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.2f} ms  p99 {np.percentile(ms, 99):.2f} ms  max {ms.max():.2f} ms"


async def _orders(http: httpx.AsyncClient, base: str, headers: dict[str, str], count: int) -> list[float]:
    latencies = []
    for i in range(count):
        body = {"symbol": "SPX", "side": "buy" if i % 2 == 0 else "sell", "type": "market", "quantity": "1",
                "client_order_id": f"bench-{uuid.uuid4().hex}"}
        began = time.perf_counter()
        response = await http.post(base + "/api/v1/orders", json=body, headers=headers)
        latencies.append(time.perf_counter() - began)
        if response.status_code != 201:
            raise RuntimeError(f"order refused: {response.status_code} {response.text}")
    return latencies


async def _user(http: httpx.AsyncClient, gateway: str, index: int) -> dict[str, str]:
    """A new user whose order-rate throttle is lifted (it is a safety limit, not what is measured)."""
    credentials = {"email": f"bench-{index}-{uuid.uuid4().hex[:8]}@example.com",
                   "password": "bench-user-password-1"}
    (await http.post(gateway + "/api/v1/auth/register", json=credentials)).raise_for_status()
    login = await http.post(gateway + "/api/v1/auth/login", json=credentials)
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    limits = await http.put(gateway + "/api/v1/risk/limits", headers=headers,
                            json={"max_orders_per_window": 1_000_000})
    limits.raise_for_status()
    return headers


async def _throughput(base: str, users: list[dict[str, str]], count: int) -> float:
    """Orders/s with one client per user, all at once (one user's orders are serialized by design)."""
    async with httpx.AsyncClient(timeout=30) as http:
        began = time.perf_counter()
        await asyncio.gather(*(_orders(http, base, headers, count // len(users)) for headers in users))
        return (count // len(users) * len(users)) / (time.perf_counter() - began)


async def fleet_figures(orders: int) -> None:
    env = {"ADMIN_EMAIL": ADMIN_EMAIL, "ADMIN_PASSWORD": ADMIN_PASSWORD, "LOG_LEVEL": "WARNING",
           "DEFAULT_FEEDS": "[]", "HEARTBEAT_INTERVAL_S": "30", "RATE_LIMIT_FREE": "1000000"}
    for var in ("DATABASE_URL", "NATS_URL"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    with tempfile.TemporaryDirectory(prefix="bench-trading-") as data_dir:
        fleet = Fleet(Path(data_dir), services=SERVICES, env=env, port_offset=PORT_OFFSET)
        with fleet:
            gateway, engine = fleet.url("api-gateway"), fleet.url("trading-engine")
            async with httpx.AsyncClient(timeout=30) as http:
                users = [await _user(http, gateway, i) for i in range(8)]
                await _orders(http, gateway, users[0], 50)  # warm-up: connections, price cache
                through_gateway = await _orders(http, gateway, users[0], orders)
                direct = await _orders(http, engine, users[0], orders)
            one_user = await _throughput(engine, users[:1] * 8, orders)
            many_users = await _throughput(engine, users, orders)
    print(f"order acknowledgement, {orders} sequential paper market orders on SPX "
          "(stored, risk-checked, filled):")
    print(f"  through the gateway:      {percentiles(through_gateway)}")
    print(f"  straight to the engine:   {percentiles(direct)}")
    print(f"  8 concurrent clients straight to the engine, one user:    {one_user:,.0f} orders/s "
          "(a user's orders are placed one at a time, across replicas too)")
    print(f"  8 concurrent clients straight to the engine, eight users: {many_users:,.0f} orders/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=50_000)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    order_path.main(args.bars, args.rounds)
    bt_elapsed, bt_orders, _ = order_path.backtrader(order_path.spx(min(args.bars, 20_000)))
    print(f"backtrader's order path for comparison: {bt_elapsed / bt_orders * 1e6:.0f} us per order "
          f"(one order per bar, in-process, nothing stored)")
    asyncio.run(fleet_figures(args.orders))


if __name__ == "__main__":
    main()
