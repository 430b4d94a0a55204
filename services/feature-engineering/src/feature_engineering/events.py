"""What feature-engineering publishes and consumes.

Consumes `md.bars` on `md.bar.>` (stream MARKET; `Settings.stream_subject`) with the durable
`<durable_prefix>-bars`.

Publishes `features.computed` on `features.<timeframe>.<SYMBOL>` (stream PLATFORM, through the outbox
in the transaction that records the bar event), one per closed bar:
    data: {symbol, timeframe, time, values: {<canonical name>: number | null}}
`<SYMBOL>` is the subject-token form (`BTC/USDT` → `BTC-USDT`); `symbol` keeps the real one. A value is
null while its indicator is still warming up.
"""

from __future__ import annotations

from collections.abc import Mapping

from aitrading.events import Event
from aitrading.market.bars import ms_to_datetime
from aitrading.market.timeframes import Timeframe
from aitrading.streams import subject_token

SOURCE = "feature-engineering"
FEATURES_COMPUTED = "features.computed"


def features_subject(timeframe: Timeframe | str, symbol: str) -> str:
    return f"features.{Timeframe(timeframe).value}.{subject_token(symbol)}"


def features_computed(symbol: str, timeframe: Timeframe, time_ms: int, values: Mapping[str, float]) -> Event:
    # NaN (warming up) becomes null on the way through JSON.
    data = {"symbol": symbol, "timeframe": timeframe.value, "time": ms_to_datetime(time_ms),
            "values": dict(values)}
    return Event.new(FEATURES_COMPUTED, features_subject(timeframe, symbol), data, source=SOURCE)
