"""database-service settings: where the warehouse lives, how the feed consumer batches, retention defaults.

The warehouse is chDB in-process under `<data_dir>/database-service/warehouse` unless `CLICKHOUSE_URL`
names a ClickHouse server (`http://user:password@host:8123/aitrading`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aitrading.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "database-service"

    # A ClickHouse server over HTTP; unset: chDB in-process under service_data_dir / "warehouse".
    clickhouse_url: str | None = None
    clickhouse_connect_timeout_s: float = 10.0
    clickhouse_query_timeout_s: float = 300.0

    # Load the S&P 500 and NASDAQ daily history of `arch.data` as public SPX and NDX (skipped when present).
    load_bundled_history: bool = True

    # The feed consumer: durable JetStream consumers `<prefix>-bars` (md.bar.>) and `<prefix>-ticks`
    # (md.tick.>). Tests give each app its own prefix; replicas of one deployment share it.
    ingest_enabled: bool = True
    durable_prefix: str = Field(default="database-service", pattern=r"^[A-Za-z0-9_-]{1,100}$")
    # A brand-new durable reads what the MARKET stream still keeps ("all") or only what comes next ("new").
    ingest_deliver: Literal["all", "new"] = "all"
    ingest_batch: int = Field(default=500, ge=1, le=10_000)
    ingest_fetch_timeout_s: float = 1.0
    ingest_ack_wait_s: float = 60.0
    # Durables of a deployment live for good; tests set this so theirs vanish once idle.
    ingest_inactive_threshold_s: float | None = None

    # Retention by TTL, used until an admin sets other values (then those persist in the warehouse).
    # Feed data only: imported series are kept until deleted. None keeps data forever.
    retention_ticks_days: int | None = 30
    retention_bars_days: dict[str, int | None] = {"1m": 365}

    # Upload limits of POST /market/import.
    import_max_bytes: int = 20 * 1024 * 1024
    import_max_rows: int = 500_000
