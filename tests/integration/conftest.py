"""The fleet, started once per test session as real processes on embedded PostgreSQL and NATS."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from aitrading.fleet.launcher import Fleet

FLEET_SERVICES = ["user-service", "central-hub", "api-gateway", "database-service", "data-bridge",
                  "feature-engineering", "pattern-validator", "trading-engine", "portfolio-manager"]
PORT_OFFSET = 100  # clear of a developer's `make run` on the catalogue ports
ADMIN_EMAIL = "fleet-admin@example.com"
ADMIN_PASSWORD = "fleet-admin-password-1"
USER_PASSWORD = "a-long-enough-passphrase-7"


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    env = {
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOG_LEVEL": "INFO",
        "HEARTBEAT_INTERVAL_S": "1",
        "API_KEY_CACHE_S": "2",
    }
    # Embedded PostgreSQL and NATS, as on a fresh machine; Redis when this machine has one.
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), services=FLEET_SERVICES, env=env, port_offset=PORT_OFFSET)
    with fleet:
        yield fleet


@pytest.fixture(scope="session")
def gateway(fleet: Fleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.url("api-gateway"), timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def admin(gateway: httpx.Client) -> dict[str, str]:
    """Authorization headers of the fleet's bootstrap admin."""
    tokens = gateway.post("/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


@pytest.fixture(scope="session")
def fleet_ws_url(fleet: Fleet) -> str:
    """The gateway's WebSocket base URL."""
    return fleet.url("api-gateway").replace("http://", "ws://")


class Trading:
    """What the trading fleet tests do as a client: sign up users, place orders with retries, compare
    positions with fills."""

    def __init__(self, gateway: httpx.Client) -> None:
        self.gateway = gateway
        self.unanswered = 0  # requests place_until_answered had to send again

    def new_user(self, prefix: str = "trader") -> dict[str, str]:
        """A freshly registered user's Authorization headers."""
        email = f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"
        credentials = {"email": email, "password": USER_PASSWORD}
        created = self.gateway.post("/api/v1/auth/register", json=credentials)
        assert created.status_code == 201, created.text
        tokens = self.gateway.post("/api/v1/auth/login", json=credentials).json()
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    @staticmethod
    def eventually(check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            result = check()
            if result or time.monotonic() > deadline:
                return result
            time.sleep(every_s)

    def place_until_answered(self, headers: dict[str, str], order: dict[str, Any],
                             timeout_s: float = 90.0) -> httpx.Response:
        """POST the order until the engine gives a real answer, retrying with the same client_order_id
        through connection errors, 502/503/504 and timeouts: what a client does while the engine restarts."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                response = self.gateway.post("/api/v1/orders", json=order, headers=headers)
                if response.status_code == 429:  # the plan's rate limit: wait as told, then the same again
                    time.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                if response.status_code not in (502, 503, 504):
                    return response
            except httpx.TransportError:
                pass
            self.unanswered += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer for {order.get('client_order_id')} within {timeout_s}s")
            time.sleep(0.2)

    @staticmethod
    def signed_fills(fills: list[dict[str, Any]]) -> dict[str, Decimal]:
        """Net quantity per symbol from a list of fills."""
        net: dict[str, Decimal] = {}
        for fill in fills:
            sign = 1 if fill["side"] == "buy" else -1
            net[fill["symbol"]] = net.get(fill["symbol"], Decimal(0)) + sign * Decimal(fill["quantity"])
        return net

    def get(self, path: str, headers: dict[str, str], **params: Any) -> httpx.Response:
        """GET, waiting out the free plan's rate limit (these tests poll)."""
        while True:
            response = self.gateway.get(path, params=params, headers=headers)
            if response.status_code != 429:
                return response
            time.sleep(float(response.headers.get("retry-after", "1")))

    def all_fills(self, headers: dict[str, str]) -> list[dict[str, Any]]:
        response = self.get("/api/v1/fills", headers, limit=10_000)
        assert response.status_code == 200, response.text
        body = response.json()
        return list(body["fills"] if isinstance(body, dict) else body)

    def all_orders(self, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
        response = self.get("/api/v1/orders", headers, limit=10_000, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        return list(body["orders"] if isinstance(body, dict) else body)

    def positions_match_fills(self, headers: dict[str, str]) -> bool:
        """Whether portfolio-manager's positions equal the net of the engine's fills, symbol by symbol."""
        expected = {s: q for s, q in self.signed_fills(self.all_fills(headers)).items() if q != 0}
        response = self.get("/api/v1/positions", headers)
        if response.status_code != 200:
            return False
        held = {p["symbol"]: Decimal(p["quantity"]) for p in response.json() if Decimal(p["quantity"]) != 0}
        return held == expected


@pytest.fixture(scope="session")
def trading(gateway: httpx.Client) -> Trading:
    return Trading(gateway)
