"""trading-engine settings: the paper fill model, default risk limits, deployed strategies, venues."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field

from aitrading.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "trading-engine"

    # Paper venue: market and marketable orders pay `paper_slippage_bps` against the trader; fees are
    # a share of the notional, the maker rate for resting limits that fill, the taker rate otherwise.
    paper_slippage_bps: Decimal = Field(default=Decimal(1), ge=0, le=1000)
    paper_taker_fee_rate: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    paper_maker_fee_rate: Decimal = Field(default=Decimal("0.0005"), ge=0, lt=1)
    # Resting paper orders are reloaded this often, so orders placed through another replica are
    # matched here too; day orders past their UTC day are expired by a sweep this often.
    paper_refresh_interval_s: float = Field(default=2.0, gt=0)
    expiry_sweep_interval_s: float = Field(default=30.0, gt=0)

    # Risk limits of a user who never set theirs (null: not enforced). See aitrading.trading.risk.
    risk_max_order_notional: Decimal | None = Decimal("1000000")
    risk_max_position_notional: Decimal | None = Decimal("2000000")
    risk_max_position_quantity: Decimal | None = None
    risk_max_gross_exposure: Decimal | None = Decimal("5000000")
    risk_max_open_orders: int | None = 200
    risk_max_orders_per_window: int | None = 600
    risk_order_window_s: float = Field(default=60.0, gt=0, le=86_400)
    risk_daily_loss_limit: Decimal | None = None
    risk_price_band_pct: Decimal | None = Decimal("10")

    # Deployed strategies: a durable consumer `<durable_prefix>-strategy-bars` over `strategy_subject`
    # runs every enabled deployment of a series on each closed bar. Tests give each app its own prefix
    # and a narrow subject; replicas of one deployment share them.
    strategies_enabled: bool = True
    durable_prefix: str = Field(default="trading-engine", pattern=r"^[A-Za-z0-9_-]{1,100}$")
    strategy_subject: str = Field(default="md.bar.>", pattern=r"^md\.bar\.[A-Za-z0-9_*>.+=:@^-]+$")
    # A brand-new durable starts with the next bar ("new") or with what the MARKET stream still keeps.
    strategy_deliver: Literal["all", "new"] = "new"
    # Bars read beyond a strategy's own warm-up, so its indicators are settled.
    strategy_extra_bars: int = Field(default=50, ge=0, le=10_000)
    max_deployments_per_user: int = Field(default=50, ge=1)
    # Series whose recent bars are kept in memory for strategies; the least recently traded is dropped.
    strategy_max_series: int = Field(default=5000, ge=1)

    # Prices: follow md.tick/md.bar on core NATS (off only in tests that drive prices themselves).
    follow_prices: bool = True

    # External venues (venue_registry, ccxt_venue, mt5_venue, credentials).
    # Fernet key(s), urlsafe base64 of 32 bytes, comma-separated for rotation, that encrypt venue
    # credentials at rest; CREDENTIALS_KEY_FILE works through the library settings.
    credentials_key: str = ""
    venue_timeout_s: float = Field(default=10.0, gt=0)
    # After a venue call went unanswered, the order is left alone this long before the reconciler asks
    # the venue about it: a late request may still land (Binance refuses requests older than its 5 s
    # recvWindow), and asking too early would find nothing and send the order a second time.
    venue_retry_after_s: float = Field(default=10.0, ge=0)
    # Open external orders are asked of their venue this often (and at start, and right after a
    # strategy placed one).
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    # exchange id -> API base URL override (tests point binance at a local server).
    ccxt_urls: dict[str, str] = {}
