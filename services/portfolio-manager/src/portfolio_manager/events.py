"""What portfolio-manager consumes and publishes.

Consumes `fill` events on `fills.<SYMBOL>` (stream TRADING; `Settings.fills_subjects`, default `fills.>`)
with the durable `<durable_prefix>-fills`. The library records each event id in the handler's
transaction; the fill id is kept unique besides, so one fill carried by two events applies once.

Publishes `position` on `positions.<SYMBOL>` (stream TRADING, through the outbox in the transaction that
applied the fill), one per applied fill:
    data: {owner_id, account, symbol, quantity, average_price, realized_pnl, fees, cash, fill_id, time,
           updated_at}
decimals as strings; `cash` is the account's cash after the fill; `time` is the fill's time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading import outbox
from aitrading.events import Event
from aitrading.streams import subject_token
from portfolio_manager import ledger
from portfolio_manager.decimal_text import plain
from portfolio_manager.ledger import Applied

_log = structlog.get_logger(__name__)

SOURCE = "portfolio-manager"
FILL = "fill"
POSITION = "position"


def durable_names(prefix: str, subjects: list[str]) -> list[tuple[str, str]]:
    """(subject, durable) pairs: `<prefix>-fills`, then `<prefix>-fills-2`, ... for further subjects."""
    return [(subject, f"{prefix}-fills" if i == 0 else f"{prefix}-fills-{i + 1}")
            for i, subject in enumerate(subjects)]


def positions_subject(symbol: str) -> str:
    return f"positions.{subject_token(symbol)}"


def position_changed(applied: Applied, now: datetime) -> Event:
    position = applied.position
    data = {"owner_id": applied.owner, "account": applied.account, "symbol": position.symbol,
            "quantity": plain(position.quantity), "average_price": plain(position.average_price),
            "realized_pnl": plain(position.realized_pnl), "fees": plain(position.fees),
            "cash": plain(applied.cash),
            "fill_id": applied.fill.id, "time": applied.fill.time, "updated_at": now}
    return Event.new(POSITION, positions_subject(position.symbol), data, source=SOURCE)


class FillConsumer:
    """The durable handler of fills: apply each to its account and announce the position."""

    def __init__(self, paper_initial_cash: Decimal) -> None:
        self.paper_initial_cash = paper_initial_cash

    async def on_fill(self, session: AsyncSession, event: Event) -> None:
        if event.type != FILL:
            _log.warning("not a fill; ignored", event_id=str(event.id), event_type=event.type)
            return
        try:
            received = ledger.parse_fill(event.data)
        except ValueError as exc:
            # Malformed for good: a retry would not make it readable, so it is dropped with a trace.
            _log.error("unreadable fill event dropped", event_id=str(event.id), error=str(exc)[:500])
            return
        now = datetime.now(UTC)
        applied = await ledger.apply_fill(session, received, event_id=event.id,
                                          paper_initial_cash=self.paper_initial_cash, now=now)
        if applied is None:
            _log.info("fill applied before under another event; skipped", event_id=str(event.id),
                      fill_id=str(received.fill.id))
            return
        if applied.rebuilt:
            _log.info("fill arrived out of order; position rebuilt from its fills",
                      fill_id=str(applied.fill.id), symbol=applied.fill.symbol)
        await outbox.enqueue(session, position_changed(applied, now))
