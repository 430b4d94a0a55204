"""Replay of the bundled history: bars arrive on NATS as md.bars with the values arch ships."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import arch.data.sp500
import pytest
from data_bridge.replay_feed import bundled_bars

from aitrading.market.bars import datetime_to_ms
from aitrading.market.wire import parse_bars
from aitrading.streams import subject_token


async def finished(client: Any, feed_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            body = (await client.get(f"/api/v1/feeds/{feed_id}")).json()
            if body["status"] in ("finished", "failed"):
                return body
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout_s)


async def test_bundled_replay_publishes_the_arch_bars_under_its_alias(bridge: Any, listen: Any,
                                                                      symbol: Callable[..., str]) -> None:
    alias = f"SPX-REPLAY-{symbol()}"
    params = {"source": "bundled", "speed": 0, "start": "2018-11-01T00:00:00Z", "end": "2019-01-01T00:00:00Z",
              "publish_as": alias}
    async with bridge() as running, listen(f"md.bar.1d.{subject_token(alias)}") as bars:
        created = await running.client.post("/api/v1/feeds", json={"kind": "replay", "symbols": ["spx"],
                                                                    "params": params})
        assert created.status_code == 201, created.text
        assert created.json()["venue"] == "replay" and created.json()["synthetic"] is False
        done = await finished(running.client, created.json()["id"])
        assert done["status"] == "finished", done
        expected = arch.data.sp500.load().loc["2018-11-01":"2018-12-31"]
        assert done["counters"]["bars"] == len(expected) == 40
        events = await bars.wait_for(lambda evs: sum(len(e.data["bars"]) for e in evs) >= len(expected))
        got = [bar for event in events for bar in parse_bars(event).bars]
        assert {parse_bars(e).symbol for e in events} == {alias}
        assert {e.data["venue"] for e in events} == {"replay"}
        assert len(got) == len(expected)
        for bar, (day, row) in zip(got, expected.iterrows(), strict=True):
            assert bar.time_ms == datetime_to_ms(day.to_pydatetime().replace(tzinfo=UTC))
            assert (float(bar.open), float(bar.high), float(bar.low), float(bar.close)) == \
                (row.Open, row.High, row.Low, row.Close)
            assert bar.volume == Decimal(int(row.Volume))
        quote = (await running.client.get(f"/api/v1/quotes/{alias}")).json()
        assert Decimal(quote["last"]) == got[-1].close
        assert quote["time"].startswith("2018-12-31")
        assert quote["venue"] == "replay" and quote["synthetic"] is False


async def test_paced_replay_hands_over_bars_at_the_requested_speed(bridge: Any, listen: Any,
                                                                   symbol: Callable[..., str]) -> None:
    names = {"SPX": f"S{symbol()}", "NDX": f"N{symbol()}"}
    params = {"speed": 20, "start": "2018-12-01T00:00:00Z", "end": "2018-12-08T00:00:00Z",
              "publish_as": names}
    async with bridge() as running, listen(f"md.bar.1d.{subject_token(names['NDX'])}") as ndx:
        started = asyncio.get_running_loop().time()
        feed = (await running.client.post("/api/v1/feeds", json={"kind": "replay", "symbols": ["SPX", "NDX"],
                                                                  "params": params})).json()
        done = await finished(running.client, feed["id"])
        elapsed = asyncio.get_running_loop().time() - started
        days = bundled_bars("NDX", datetime(2018, 12, 1, tzinfo=UTC), datetime(2018, 12, 8, tzinfo=UTC))
        assert len(days) == 4  # the market closed on 5 December 2018
        assert done["counters"]["bars"] == 8  # four trading days of two indexes
        assert elapsed >= 3 / 20  # four steps at 20 per second: at least three intervals
        events = await ndx.wait_for(lambda evs: sum(len(e.data["bars"]) for e in evs) >= 4)
        # Paced: one event per step, each with that day's bar.
        assert [[b.time_ms for b in parse_bars(e).bars] for e in events] == [[d.time_ms] for d in days]


def test_bundled_history_is_real_and_complete() -> None:
    bars = bundled_bars("SPX")
    assert len(bars) == 5031
    assert bars[0].time_ms == datetime_to_ms(datetime(1999, 1, 4, tzinfo=UTC))
    assert str(bars[0].open) == "1229.22998"
    assert all(not bar.problems() for bar in bars)
    with pytest.raises(KeyError):
        bundled_bars("AAPL")
