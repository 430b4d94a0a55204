"""The synthetic feed: deterministic for a seed, plausible, and labelled synthetic everywhere."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from data_bridge.synthetic_feed import SyntheticParams, synthetic_ticks

from aitrading.market.bars import datetime_to_ms
from aitrading.market.wire import parse_bars, parse_ticks
from aitrading.streams import subject_token

START = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


def first(n: int, symbols: list[str], **params: Any) -> list[Any]:
    ticks = synthetic_ticks(symbols, SyntheticParams(**params), datetime_to_ms(START))
    return list(itertools.islice(ticks, n))


def test_same_seed_same_ticks_and_another_seed_other_ticks() -> None:
    a = first(2000, ["SYN-A", "SYN-B"], seed=42, rate=10)
    assert a == first(2000, ["SYN-A", "SYN-B"], seed=42, rate=10)
    assert a != first(2000, ["SYN-A", "SYN-B"], seed=43, rate=10)
    # A symbol's path depends on its seed and name, not on the company it keeps.
    alone = [t for t in first(1000, ["SYN-A"], seed=42, rate=10)]
    together = [t for t in a if t.symbol == "SYN-A"][:len(alone)]
    assert together == alone[:len(together)]


def test_ticks_are_ordered_positive_and_quoted_around_the_price() -> None:
    ticks = first(20_000, ["SYN-X", "SYN-Y"], seed=1, rate=50, vol=1.5, jumps_per_day=500, spread_bps=10)
    for name in ("SYN-X", "SYN-Y"):
        mine = [t for t in ticks if t.symbol == name]
        assert all(b.time_ms > a.time_ms for a, b in itertools.pairwise(mine))
        assert all(t.bid is not None and t.ask is not None and 0 < t.bid <= t.price <= t.ask for t in mine)
        assert all(t.size > 0 for t in mine)
    times = [t.time_ms for t in ticks]
    assert times == sorted(times)
    span_s = (times[-1] - times[0]) / 1000
    assert 150 < span_s < 250  # Poisson arrivals at 50/s per symbol: ~200 s for 10,000 each


def test_the_volatile_regime_and_jumps_show_in_the_returns() -> None:
    import math

    def abs_returns(**params: Any) -> float:
        ticks = first(20_000, ["SYN-R"], seed=5, rate=1, decimals=8, **params)
        prices = [float(t.price) for t in ticks]
        return sum(abs(math.log(b / a)) for a, b in itertools.pairwise(prices))

    calm = abs_returns(to_volatile_per_hour=0, jumps_per_day=0)
    switching = abs_returns(to_volatile_per_hour=6, to_calm_per_hour=1, jumps_per_day=0)
    jumpy = abs_returns(to_volatile_per_hour=0, jumps_per_day=2000)
    assert switching > 1.5 * calm
    assert jumpy > 1.5 * calm


async def test_the_feed_publishes_its_seeded_ticks_labelled_synthetic(bridge: Any, listen: Any,
                                                                       symbol: Callable[..., str]) -> None:
    name = f"SYN-{symbol()}/USD"
    params = {"seed": 9, "rate": 5, "start": START.isoformat(), "speed": 0, "max_ticks": 700,
              "jumps_per_day": 0, "spread_bps": 4}
    expected = first(700, [name], **params)
    async with bridge() as running, listen(f"md.tick.{subject_token(name)}") as ticks, \
            listen(f"md.bar.1m.{subject_token(name)}") as bars:
        feed = (await running.client.post("/api/v1/feeds", json={"kind": "synthetic", "symbols": [name],
                                                                  "params": params})).json()
        assert feed["venue"] == "synthetic" and feed["synthetic"] is True
        events = await ticks.wait_for(lambda evs: sum(len(e.data["ticks"]) for e in evs) >= 700)
        batches = [parse_ticks(e) for e in events]
        assert all(b.synthetic and b.venue == "synthetic" for b in batches)
        assert [t for b in batches for t in b.ticks] == expected
        bar_events = await bars.wait_for(lambda evs: len(evs) >= 1)
        assert all(parse_bars(e).synthetic for e in bar_events)
        quote = (await running.client.get(f"/api/v1/quotes/{name}")).json()
        assert quote["synthetic"] is True and quote["venue"] == "synthetic"
        assert Decimal(quote["last"]) == expected[-1].price
        await asyncio.sleep(0.1)
        assert (await running.client.get(f"/api/v1/feeds/{feed['id']}")).json()["status"] == "finished"
