"""Bar frames for the detectors: constructed price paths where a pattern is known to be, and walks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from aitrading.market.bars import OhlcvFrame
from aitrading.testing import shared_warehouse_dir

DAY_MS = 86_400_000
START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z


def path(points: Sequence[tuple[int, float]], *, wick: float = 0.3, volume: float = 1000.0,
         volumes: Sequence[float] | None = None, start_ms: int = START_MS) -> OhlcvFrame:
    """Daily bars whose closes follow straight lines between `(bar, price)` points.

    Each bar opens at the previous close and has a wick of `wick` beyond its body on both sides.
    """
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    n = xs[-1] + 1
    close = np.interp(np.arange(n), xs, ys).astype(np.float64)
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) + wick
    low = np.minimum(open_, close) - wick
    vol = np.full(n, volume) if volumes is None else np.asarray(volumes, dtype=np.float64)
    return OhlcvFrame(start_ms + np.arange(n, dtype=np.int64) * DAY_MS, open_, high, low, close, vol)


def random_walk(n: int, seed: int, *, step: float = 0.01) -> OhlcvFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, step, n)))
    open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, step / 5, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, step, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, step, n))
    volume = rng.uniform(1_000, 10_000, n).round()
    return OhlcvFrame(START_MS + np.arange(n, dtype=np.int64) * DAY_MS, open_, high, low, close, volume)


def bar_index(frame: OhlcvFrame, time_ms: int) -> int:
    return int(np.searchsorted(frame.time_ms, time_ms))


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chDB folder of this test session, shared with the other suites that serve database-service."""
    return shared_warehouse_dir(tmp_path_factory)
