"""The daily history that ships in the `arch` package, loaded once as public series SPX and NDX.

`arch.data.sp500.load()` and `arch.data.nasdaq.load()` read a CSV beside their module; this reads the
same files without importing `arch` (whose import pulls in scipy and statsmodels: seconds of start-up).
The CSV holds each float by its shortest repr (`1229.22998`), so the text is taken as the Decimal.
Open/High/Low/Close and Volume are stored; Adj Close is not.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from aitrading.market.bars import Bar, datetime_to_ms
from database_service import store
from database_service.sql import NIL_OWNER, SOURCE_BUNDLED
from database_service.store import Series
from database_service.warehouse import Warehouse

_log = structlog.get_logger("database_service.bundled_history")

VENUE, ASSET_CLASS, TIMEFRAME = "arch", "index", "1d"


@dataclass(frozen=True)
class Dataset:
    symbol: str
    module: str  # the arch.data subpackage
    filename: str


DATASETS = (Dataset("SPX", "sp500", "sp500.csv.gz"), Dataset("NDX", "nasdaq", "nasdaq.csv.gz"))


def dataset_path(dataset: Dataset) -> Path:
    spec = importlib.util.find_spec("arch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the arch package is not installed; it ships the bundled history")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / dataset.module / dataset.filename


def _decimal(text: str) -> Decimal:
    return Decimal(text.strip())


def read_dataset(dataset: Dataset) -> list[Bar]:
    """The daily bars of a dataset, oldest first (dates are US-style M/D/YYYY, taken as UTC midnight)."""
    raw = gzip.decompress(dataset_path(dataset).read_bytes()).decode()
    bars = []
    for row in csv.DictReader(io.StringIO(raw)):
        day = datetime.strptime(row["Date"], "%m/%d/%Y").replace(tzinfo=UTC)
        bar = Bar(datetime_to_ms(day), _decimal(row["Open"]), _decimal(row["High"]), _decimal(row["Low"]),
                  _decimal(row["Close"]), _decimal(row["Volume"]))
        if bar.problems():
            raise ValueError(f"{dataset.symbol} {row['Date']}: {'; '.join(bar.problems())}")
        bars.append(bar)
    bars.sort(key=lambda b: b.time_ms)
    return bars


async def load(wh: Warehouse) -> dict[str, int]:
    """Store each dataset unless its series is already complete; returns the bars inserted by symbol."""
    inserted: dict[str, int] = {}
    for dataset in DATASETS:
        bars = read_dataset(dataset)
        have = await store.series_count(wh, NIL_OWNER, dataset.symbol, TIMEFRAME)
        if have >= len(bars):
            inserted[dataset.symbol] = 0
            continue
        n = len(bars)
        columns: dict[str, list[Any]] = {
            "owner": [NIL_OWNER] * n, "symbol": [dataset.symbol] * n, "timeframe": [TIMEFRAME] * n,
            "time": [b.time_ms for b in bars],
            "open": [format(b.open, "f") for b in bars], "high": [format(b.high, "f") for b in bars],
            "low": [format(b.low, "f") for b in bars], "close": [format(b.close, "f") for b in bars],
            "volume": [format(b.volume, "f") for b in bars],
            "venue": [VENUE] * n, "source": [SOURCE_BUNDLED] * n, "synthetic": [False] * n,
        }
        # Replicas starting together insert the same rows; the token drops the second insert.
        await store.insert_bars(wh, columns, token=f"bundled:{dataset.symbol}:{n}:{bars[-1].time_ms}")
        await store.register_series(wh, [Series(NIL_OWNER, dataset.symbol, TIMEFRAME, VENUE, ASSET_CLASS,
                                                 False)])
        inserted[dataset.symbol] = n
        _log.info("bundled history loaded", symbol=dataset.symbol, bars=n)
    return inserted
