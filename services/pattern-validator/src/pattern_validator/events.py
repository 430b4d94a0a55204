"""What pattern-validator consumes and publishes.

Consumes `md.bar.<timeframe>.<SYMBOL>` (type `md.bars`, stream MARKET) with the durable consumer
`<durable_prefix>-bars`: each closed bar joins its series' live window and is scanned for candlestick
and chart patterns.

Publishes `patterns.<timeframe>.<SYMBOL>` (type `patterns.detected`, stream PLATFORM), through the
outbox in the transaction that records the bar event as applied, for every bar that completed at
least one pattern:
    data: {symbol, timeframe, time, detections: [{time, pattern, direction, confidence, kind, details?}]}
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.events import Event
from aitrading.market.timeframes import Timeframe
from aitrading.market.wire import parse_bars
from aitrading.metrics import ServiceMetrics
from aitrading.outbox import enqueue
from aitrading.streams import subject_token
from pattern_validator.detections import Detection, iso
from pattern_validator.live import LiveWindows
from pattern_validator.settings import Settings

SOURCE = "pattern-validator"
PATTERNS_DETECTED = "patterns.detected"
BAR_SUBJECTS = "md.bar.>"

_log = structlog.get_logger(__name__)


def patterns_subject(timeframe: Timeframe, symbol: str) -> str:
    return f"patterns.{timeframe.value}.{subject_token(symbol)}"


def patterns_detected(symbol: str, timeframe: Timeframe, time_ms: int,
                      detections: Sequence[Detection]) -> Event:
    data = {"symbol": symbol, "timeframe": timeframe.value, "time": iso(time_ms),
            "detections": [d.as_json() for d in detections]}
    return Event.new(PATTERNS_DETECTED, patterns_subject(timeframe, symbol), data, source=SOURCE)


def subscribe(app: FastAPI, settings: Settings, windows: LiveWindows, metrics: ServiceMetrics) -> None:
    """Register the durable bar consumer (called before the bus starts)."""
    latency = metrics.histogram("pattern_detection_seconds", "Detection time per closed bar",
                                buckets=(0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.25, 1.0))

    async def on_bars(session: AsyncSession, event: Event) -> None:
        try:
            batch = parse_bars(event)
        except (KeyError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
            # Malformed forever: retrying cannot help, so it is logged and acknowledged.
            _log.warning("malformed bar event skipped", event_id=str(event.id), error=repr(exc)[:300])
            return
        for result in await windows.on_bars(batch):
            latency.observe(result.seconds)
            if result.detections:
                await enqueue(session, patterns_detected(batch.symbol, batch.timeframe, result.time_ms,
                                                         result.detections))

    app.state.bus.subscribe_durable(BAR_SUBJECTS, f"{settings.durable_prefix}-bars", on_bars,
                                    database=app.state.db, only_new=settings.live_deliver == "new")
