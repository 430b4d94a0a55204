"""The fleet, started once per test session as real processes on embedded PostgreSQL and NATS."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from aitrading.fleet.launcher import Fleet

FLEET_SERVICES = ["user-service", "central-hub", "api-gateway", "database-service", "data-bridge",
                  "feature-engineering", "pattern-validator"]
PORT_OFFSET = 100  # clear of a developer's `make run` on the catalogue ports
ADMIN_EMAIL = "fleet-admin@example.com"
ADMIN_PASSWORD = "fleet-admin-password-1"


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
