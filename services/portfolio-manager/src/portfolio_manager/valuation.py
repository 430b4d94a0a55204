"""Valuing an account at market: each open position at its latest price, equity = cash + Σ quantity · price.

Prices come from `aitrading.market.prices.LatestPrices`: the live tick or bar seen on NATS, else
data-bridge's quote, else the last stored close (with the caller's token, so their own series count).
A symbol with no price anywhere is valued at its average price and marked `priced: false`, so the
identity equity = cash + Σ market value still holds and the caller sees which figures are estimates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import NotFound, Unavailable, UpstreamTimeout
from aitrading.market.prices import LatestPrices, PriceQuote
from aitrading.trading.accounting import Position
from portfolio_manager import store
from portfolio_manager.ledger import PAPER, ZERO, initial_cash

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ValuedPosition:
    symbol: str
    quantity: Decimal
    average_price: Decimal
    realized_pnl: Decimal
    fees: Decimal
    market_price: Decimal | None    # None only for a flat position, which is not priced
    market_value: Decimal
    unrealized_pnl: Decimal
    priced: bool
    price_source: str | None        # live | quote | bar (see PriceQuote.source); None when not priced
    price_time: datetime | None


def value_position(position: Position, quote: PriceQuote | None) -> ValuedPosition:
    """`position` at `quote`'s last price; at its own average price when there is no quote."""
    if position.is_flat:
        return ValuedPosition(position.symbol, position.quantity, position.average_price,
                              position.realized_pnl, position.fees, None, ZERO, ZERO, False, None, None)
    price = quote.last if quote is not None else position.average_price
    return ValuedPosition(
        position.symbol, position.quantity, position.average_price, position.realized_pnl, position.fees,
        price, position.market_value(price), position.unrealized_pnl(price), quote is not None,
        quote.source if quote is not None else None, quote.time if quote is not None else None)


@dataclass(frozen=True)
class AccountValuation:
    account: str
    cash: Decimal
    initial_cash: Decimal
    realized_pnl: Decimal
    fees: Decimal
    positions: list[ValuedPosition]
    as_of: datetime

    @property
    def market_value(self) -> Decimal:
        return sum((p.market_value for p in self.positions), ZERO)

    @property
    def equity(self) -> Decimal:
        return self.cash + self.market_value

    @property
    def unrealized_pnl(self) -> Decimal:
        return sum((p.unrealized_pnl for p in self.positions), ZERO)

    def holdings(self) -> dict[str, Decimal]:
        return {p.symbol: p.quantity for p in self.positions if p.quantity != ZERO}

    def prices(self) -> dict[str, Decimal]:
        """Market prices of the positions that have one."""
        return {p.symbol: p.market_price for p in self.positions if p.priced and p.market_price is not None}


async def quotes_for(prices: LatestPrices, symbols: Iterable[str], *,
                     token: str | None) -> dict[str, PriceQuote | None]:
    """The latest quote of each symbol, None where none is known or the price sources are down."""
    wanted = list(dict.fromkeys(symbols))

    async def one(symbol: str) -> PriceQuote | None:
        try:
            return await prices.latest(symbol, token=token)
        except (Unavailable, UpstreamTimeout) as exc:
            _log.warning("no price: a price source is unavailable", symbol=symbol, error=exc.detail)
            return None

    found = await asyncio.gather(*(one(s) for s in wanted))
    return dict(zip(wanted, found, strict=True))


def _position(row: store.Record) -> Position:
    return Position(row.symbol, row.quantity, row.average_price, row.realized_pnl, row.fees)


def valuate(account: str, row: store.Record | None, positions: Sequence[Position],
            quotes: Mapping[str, PriceQuote | None], *, paper_initial_cash: Decimal,
            as_of: datetime) -> AccountValuation:
    """The valuation of one account (a paper account never traded: its starting cash, nothing held)."""
    valued = [value_position(p, quotes.get(p.symbol)) for p in positions]
    if row is None:
        start = initial_cash(account, paper_initial_cash)
        return AccountValuation(account, start, start, ZERO, ZERO, valued, as_of)
    return AccountValuation(account, row.cash, row.initial_cash, row.realized_pnl, row.fees, valued, as_of)


async def account_valuation(session: AsyncSession, prices: LatestPrices, *, owner: UUID, account: str,
                            token: str | None, paper_initial_cash: Decimal,
                            include_flat: bool = False) -> AccountValuation:
    """The owner's account valued at market; 404 naming the account when a venue account has no fills."""
    row = await store.account_of(session, owner, account)
    if row is None and account != PAPER:
        raise NotFound(f"no account {account!r} with any fill",
                       errors=[{"field": "account", "reason": "no fills recorded for this account"}])
    rows = await store.positions_of(session, owner, account, include_flat=include_flat) if row else []
    positions = [_position(r) for r in rows]
    quotes = await quotes_for(prices, [p.symbol for p in positions if not p.is_flat], token=token)
    return valuate(account, row, positions, quotes, paper_initial_cash=paper_initial_cash,
                   as_of=datetime.now(UTC))
