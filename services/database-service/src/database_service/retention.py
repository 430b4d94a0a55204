"""How long feed data is kept: TTLs on ticks and on bars by timeframe, chosen by an admin.

Defaults come from settings (ticks 30 days, 1m bars 365 days, the rest forever). Once an admin sets
values they persist in the warehouse's `retention` table and win over the settings. Retention covers
feed data only: imported and bundled series stay until deleted. ClickHouse deletes expired rows at its
background merges, so they may linger for a while after they expire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from aitrading.errors import Invalid
from aitrading.market.timeframes import TIMEFRAMES
from database_service import sql, store
from database_service.warehouse import Warehouse

_log = structlog.get_logger("database_service.retention")

TICKS = "ticks"
MAX_DAYS = 36_500


def _bars_target(timeframe: str) -> str:
    return f"bars:{timeframe}"


@dataclass(frozen=True)
class Retention:
    ticks_days: int | None
    bars_days: dict[str, int | None]  # every timeframe; None keeps forever

    @classmethod
    def of(cls, ticks_days: int | None, bars_days: Mapping[str, int | None]) -> Retention:
        """Validated retention: days in 1..36500 or None, timeframes the platform knows."""
        errors = []
        if ticks_days is not None and not 1 <= ticks_days <= MAX_DAYS:
            errors.append({"field": "ticks_days", "reason": f"must be 1..{MAX_DAYS} days or null"})
        known = {t.value for t in TIMEFRAMES}
        for timeframe, days in bars_days.items():
            if timeframe not in known:
                errors.append({"field": f"bars_days.{timeframe}",
                               "reason": f"unknown timeframe; use one of {', '.join(sorted(known))}"})
            elif days is not None and not 1 <= days <= MAX_DAYS:
                errors.append({"field": f"bars_days.{timeframe}",
                               "reason": f"must be 1..{MAX_DAYS} days or null"})
        if errors:
            raise Invalid("retention values are invalid", errors=errors)
        full = {t.value: bars_days.get(t.value) for t in TIMEFRAMES}
        return cls(ticks_days, full)

    def merged(self, ticks_days: int | None, bars_days: Mapping[str, int | None], *,
               ticks_given: bool) -> Retention:
        """This retention with the given values replaced (a partial update)."""
        return Retention.of(ticks_days if ticks_given else self.ticks_days, {**self.bars_days, **bars_days})

    def targets(self) -> dict[str, int | None]:
        return {TICKS: self.ticks_days, **{_bars_target(t): d for t, d in self.bars_days.items()}}

    @classmethod
    def from_targets(cls, stored: Mapping[str, int | None], defaults: Retention) -> Retention:
        ticks = stored.get(TICKS, defaults.ticks_days)
        bars = {t.value: stored.get(_bars_target(t.value), defaults.bars_days.get(t.value))
                for t in TIMEFRAMES}
        return cls(ticks, bars)


async def current(wh: Warehouse, defaults: Retention) -> Retention:
    return Retention.from_targets(await store.stored_retention(wh), defaults)


async def apply(wh: Warehouse, retention: Retention, *, materialize: bool) -> None:
    await store.apply_ttl(wh, "bars", sql.bars_ttl(retention.bars_days), materialize=materialize)
    await store.apply_ttl(wh, "ticks", sql.ticks_ttl(retention.ticks_days), materialize=materialize)


async def start(wh: Warehouse, defaults: Retention) -> Retention:
    """Put the TTLs in force at start-up: the stored choice, else the defaults (a cheap metadata change)."""
    retention = await current(wh, defaults)
    await apply(wh, retention, materialize=False)
    return retention


async def update(wh: Warehouse, retention: Retention) -> None:
    """Apply new retention to all stored data (rewriting TTL info of existing parts), then persist it."""
    await apply(wh, retention, materialize=True)
    await store.save_retention(wh, retention.targets())
    _log.info("retention changed", ticks_days=retention.ticks_days, bars_days=retention.bars_days)
