"""portfolio-manager settings: the paper account's starting cash, the fills consumer, allocation limits."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from aitrading.settings import ServiceSettings

FILLS_SUBJECT = r"^fills\.[A-Za-z0-9_*>+=:@^-]+$"


class Settings(ServiceSettings):
    service_name: str = "portfolio-manager"

    # A "paper" account starts with this much cash (quote currency); venue accounts start at 0, since
    # their truth is the venue's balance.
    paper_initial_cash: Decimal = Field(default=Decimal(100_000), ge=0, allow_inf_nan=False)

    # Fills: a durable consumer `<durable_prefix>-fills` over each subject below (a second subject gets
    # `<durable_prefix>-fills-2`, ...). Replicas of one deployment share the prefix and split the work;
    # tests give each app its own prefix and narrow the subjects to their own symbols.
    fills_enabled: bool = True
    durable_prefix: str = Field(default="portfolio-manager", pattern=r"^[A-Za-z0-9_-]{1,100}$")
    fills_subjects: list[str] = Field(default_factory=lambda: ["fills.>"], min_length=1)
    # A brand-new durable reads every fill the TRADING stream still keeps ("all"); "new" only what follows.
    fills_deliver: Literal["all", "new"] = "all"
    # A fill handed to an instance that died unacknowledged is redelivered after this long.
    # A fill takes milliseconds to apply, so a short wait costs nothing and a restart catches up soon.
    fills_ack_wait_s: float = Field(default=10.0, gt=0)

    # Valuation follows live ticks and bars on core NATS; symbols not seen ask data-bridge, then the
    # last stored close (answers cached this long).
    prices_follow: bool = True
    price_fallback_ttl_s: float = Field(default=2.0, ge=0)

    # Allocation: common return observations needed at least, and the size of a universe.
    min_observations: int = Field(default=30, ge=3)
    max_symbols: int = Field(default=50, ge=2)
    # Rebalance: the largest gross exposure (Σ|weight|) a target may ask for.
    max_gross_weight: Decimal = Field(default=Decimal(2), gt=0)

    @field_validator("fills_subjects")
    @classmethod
    def _fills_only(cls, subjects: list[str]) -> list[str]:
        for subject in subjects:
            if not re.fullmatch(FILLS_SUBJECT, subject):
                raise ValueError(f"{subject!r} is not a fills subject (fills.> or fills.<SYMBOL>)")
        if len(set(subjects)) != len(subjects):
            raise ValueError("fills_subjects lists a subject twice")
        return subjects
