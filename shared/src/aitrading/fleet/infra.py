"""The fleet's infrastructure: PostgreSQL, NATS and Redis from the environment, or embedded servers.

`DATABASE_URL` and `NATS_URL` name external servers when set; otherwise embedded PostgreSQL and NATS
(JetStream) start under the data folder, on preferred ports that stay clear of the usual 5432 and 4222
(and fall back to free ones). Redis has no embedded server: without `REDIS_URL` the services use their
in-process cache and rate limiter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from aitrading.embedded import EmbeddedNats, EmbeddedPostgres, port_accepts
from aitrading.fleet.status_table import StatusRow

INFRA_VARS = ("DATABASE_URL", "NATS_URL", "REDIS_URL")
PREFERRED_POSTGRES_PORT = 55432
PREFERRED_NATS_PORT = 54222


class Infrastructure:
    def __init__(self, data_dir: Path, env: Mapping[str, str]) -> None:
        self.data_dir = data_dir
        self._external_database = env.get("DATABASE_URL") or None
        self._external_nats = env.get("NATS_URL") or None
        self.redis_url = env.get("REDIS_URL") or None
        self.postgres = None if self._external_database else EmbeddedPostgres(
            data_dir / "postgres", port=PREFERRED_POSTGRES_PORT)
        self.nats = None if self._external_nats else EmbeddedNats(data_dir / "nats", port=PREFERRED_NATS_PORT)

    @property
    def database_url(self) -> str:
        return self.postgres.url if self.postgres is not None else str(self._external_database)

    @property
    def nats_url(self) -> str:
        return self.nats.url if self.nats is not None else str(self._external_nats)

    def start(self) -> None:
        if self.postgres is not None:
            self.postgres.start()
        if self.nats is not None:
            self.nats.start()

    def stop(self) -> None:
        """NATS first, then PostgreSQL (services are already gone by now)."""
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def service_env(self) -> dict[str, str]:
        env = {"DATABASE_URL": self.database_url, "NATS_URL": self.nats_url}
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def describe(self) -> list[str]:
        """One line per component saying where it comes from, for the launcher's output."""
        pg_from = f"embedded, data in {self.postgres.data_dir}" if self.postgres else "external, DATABASE_URL"
        nats_from = f"embedded, data in {self.nats.data_dir}" if self.nats else "external, NATS_URL"
        return [
            f"PostgreSQL: {hide_password(self.database_url)} ({pg_from})",
            f"NATS: {self.nats_url} ({nats_from})",
            f"Redis: {hide_password(self.redis_url)} (REDIS_URL)" if self.redis_url
            else "Redis: not configured (services use in-process cache and rate limits)",
        ]

    def components(self) -> dict[str, tuple[str, str]]:
        """`{name: (url, "embedded" | "external")}` of the running infrastructure."""
        found = {
            "postgresql": (self.database_url, "embedded" if self.postgres else "external"),
            "nats": (self.nats_url, "embedded" if self.nats else "external"),
        }
        if self.redis_url:
            found["redis"] = (self.redis_url, "external")
        return found

    def rows(self) -> list[StatusRow]:
        return infra_rows(self.components())


def infra_rows(components: Mapping[str, tuple[str, str]]) -> list[StatusRow]:
    """Status rows for `{name: (url, origin)}`: up when the URL's port accepts connections."""
    rows = []
    for name, (url, origin) in components.items():
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port
        up = port is not None and port_accepts(port, host)
        rows.append(StatusRow(name, port, f"{'up' if up else 'down'} ({origin})", hide_password(url)))
    return rows


def hide_password(url: str | None) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
