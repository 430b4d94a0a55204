"""Quality checks on normalized ticks: what each check drops or keeps, and stale feeds."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from data_bridge.normalization import NormalTick, normalize_rows
from data_bridge.quality import SpikeRule, StaleWatch, SymbolQuality, check_ticks
from websockets.asyncio.client import connect

from aitrading.streams import subject_token
from aitrading.testing import TokenIssuer

T = 1_700_000_000_000


def ticks(*rows: list[object]) -> list[NormalTick]:
    return normalize_rows(list(rows), Counter())


def calm(n: int = 30, start: int = T) -> list[list[object]]:
    """A market wobbling by a cent around 100."""
    return [[start + i * 1000, f"{100 + (i % 2) / 100:.2f}", "1"] for i in range(n)]


def run(rows: list[list[object]], rule: SpikeRule = SpikeRule()) -> tuple[list[str], Counter[str]]:
    issues: Counter[str] = Counter()
    kept = check_ticks(SymbolQuality(), ticks(*rows), rule, issues)
    return [t[5][1] for t in kept], issues


def test_out_of_order_duplicate_and_crossed_ticks_are_dropped() -> None:
    kept, issues = run([[T, "100", "1"], [T + 5, "100.01", "2"], [T + 5, "100.01", "2"], [T + 3, "100", "1"],
                        [T + 6, "100", "1", "100.1", "99.9"], [T + 4, "100.01", "3"], [T + 7, "100.02", "1"]])
    assert kept == ["100", "100.01", "100.02"]
    assert issues == Counter({"duplicate": 1, "out_of_order": 2, "crossed": 1})


def test_same_time_with_another_price_or_size_is_not_a_duplicate() -> None:
    kept, issues = run([[T, "100", "1"], [T, "100", "2"], [T, "100.01", "2"]])
    assert kept == ["100", "100", "100.01"] and not issues


def test_a_spike_after_warm_up_is_dropped_and_the_market_continues() -> None:
    rows = [*calm(), [T + 30_000, "130", "1"], [T + 31_000, "100.01", "1"]]
    kept, issues = run(rows)
    assert "130" not in kept and kept[-1] == "100.01"
    assert issues == Counter({"spike": 1})
    kept_all, issues_kept = run(rows, SpikeRule(keep=True))
    # Kept, the spike becomes the reference: the way back is reported too.
    assert kept_all[-2:] == ["130", "100.01"] and issues_kept == Counter({"spike": 2})


def test_no_spike_during_warm_up_or_below_the_floor() -> None:
    kept, issues = run([[T, "100", "1"], [T + 1, "150", "1"], [T + 2, "100", "1"]])
    assert kept == ["100", "150", "100"] and not issues
    # After a still market (zero variance) a move within the floor is no spike.
    still = [[T + i, "100.00", "1"] for i in range(30)]
    kept, issues = run([*still, [T + 40, "100.10", "1"]])
    assert kept[-1] == "100.10" and not issues


def test_a_level_that_holds_is_a_level_shift_and_accepted() -> None:
    gap = [[T + 40_000 + i * 1000, f"{120 + (i % 2) / 100:.2f}", "1"] for i in range(5)]
    kept, issues = run([*calm(), *gap])
    assert kept[-3:] == ["120.00", "120.01", "120.00"]  # from the third tick at the new level on
    assert issues == Counter({"spike": 2})


def test_stale_feeds_are_reported_once_per_silence() -> None:
    watch = StaleWatch(after_s=60)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    quiet = now - timedelta(seconds=61)
    assert watch.newly_stale([("a", quiet, quiet), ("b", now, quiet), ("c", None, now)], now) == ["a"]
    assert watch.newly_stale([("a", quiet, quiet)], now) == []
    assert watch.newly_stale([("a", now, quiet)], now) == []  # data again: re-armed
    assert watch.newly_stale([("a", now, quiet)], now + timedelta(seconds=61)) == ["a"]


async def test_a_silent_ingest_connection_is_reported_stale(
        bridge: Any, listen: Any, token_issuer: TokenIssuer, symbol: Callable[..., str]) -> None:
    name = symbol()
    async with bridge(stale_after_s=0.3, stale_check_interval_s=0.1, quality_flush_s=0.1) as running, \
            listen(f"md.quality.{subject_token(name)}") as found:
        admin = {"Authorization": f"Bearer {token_issuer.token(roles=('admin',))}"}
        async with connect(running.ws_url + "/ws/ingest", additional_headers=admin) as ws:
            await ws.send(orjson.dumps({"symbol": name, "venue": "desk", "ticks": [[T, "1", "1"]]}))
            events = await found.wait_for(lambda evs: any(e.data["check"] == "stale" for e in evs))
            stale = [e for e in events if e.data["check"] == "stale"]
            assert stale[0].data["symbol"] == name and stale[0].data["venue"] == "desk"
            await asyncio.sleep(0.5)
            assert len([e for e in found.events if e.data["check"] == "stale"]) == 1  # once per silence
