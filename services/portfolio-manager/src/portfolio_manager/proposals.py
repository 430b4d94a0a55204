"""Allocation and rebalance requests: read the history or the account, then run the pure math.

`allocate_universe` reads the universe's bars with the caller's token (their own imported series
count), aligns them, and solves for the weights. `propose_rebalance` values the account at market,
takes target weights as given or from an allocation, prices every symbol involved and proposes the
orders. Nothing is submitted: the caller decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import Invalid
from aitrading.market.bars import ms_to_datetime
from aitrading.market.history import MarketData
from aitrading.market.prices import LatestPrices
from aitrading.market.timeframes import Timeframe
from portfolio_manager import allocation, rebalance, universe
from portfolio_manager.allocation import Allocation, Method
from portfolio_manager.decimal_text import plain
from portfolio_manager.rebalance import Proposal
from portfolio_manager.settings import Settings
from portfolio_manager.valuation import AccountValuation, account_valuation, quotes_for


@dataclass(frozen=True)
class AllocationRequest:
    symbols: list[str]
    method: Method
    timeframe: Timeframe = Timeframe.D1
    lookback: int = 252
    risk_aversion: float = 1.0
    long_only: bool = True
    max_weight: float | None = None
    shrinkage: float | None = None
    risk_free_rate: float = 0.0
    periods_per_year: float | None = None


@dataclass(frozen=True)
class AllocationResult:
    allocation: Allocation
    timeframe: Timeframe
    start: datetime            # the first bar of the window (the base of the first return)
    as_of: datetime            # the last common bar

    def target_weights(self) -> dict[str, Decimal]:
        return {s: Decimal(weight_text(w)) for s, w in self.allocation.weight_map().items()}


def weight_text(weight: float) -> str:
    """A weight as decimal text with 10 places at most, trailing zeros dropped (`0.25`)."""
    return plain(Decimal(f"{weight:.10f}").normalize())


def _universe(symbols: list[str], max_symbols: int) -> list[str]:
    cleaned = [s.strip() for s in symbols]
    if any(not s for s in cleaned):
        raise Invalid("a symbol is empty",
                      errors=[{"field": "symbols", "reason": "symbols must not be empty"}])
    repeated = sorted({s for s in cleaned if cleaned.count(s) > 1})
    if repeated:
        raise Invalid(f"symbols listed twice: {', '.join(repeated)}",
                      errors=[{"field": "symbols", "reason": f"{s} is listed twice"} for s in repeated])
    if not 2 <= len(cleaned) <= max_symbols:
        raise Invalid(f"an allocation takes 2 to {max_symbols} symbols, not {len(cleaned)}",
                      errors=[{"field": "symbols", "reason": f"give 2 to {max_symbols} symbols"}])
    return cleaned


async def allocate_universe(market: MarketData, request: AllocationRequest, *, token: str | None,
                            settings: Settings) -> AllocationResult:
    symbols = _universe(request.symbols, settings.max_symbols)
    aligned = await universe.aligned_closes(market, symbols, request.timeframe, bars=request.lookback + 1,
                                            token=token)
    returns = universe.returns_of(aligned, lookback=request.lookback,
                                  min_observations=settings.min_observations)
    periods = request.periods_per_year or allocation.periods_per_year(request.timeframe)
    # Solvers are CPU work (tens of ms for 50 symbols): off the event loop.
    result = await asyncio.to_thread(
        allocation.allocate, symbols, returns, request.method, periods=periods, long_only=request.long_only,
        max_weight=request.max_weight, risk_aversion=request.risk_aversion, shrinkage=request.shrinkage,
        risk_free_rate=request.risk_free_rate)
    times = aligned.time_ms[-(returns.shape[0] + 1):]
    return AllocationResult(result, request.timeframe, ms_to_datetime(int(times[0])),
                            ms_to_datetime(int(times[-1])))


@dataclass(frozen=True)
class RebalanceRequest:
    account: str = "paper"
    weights: Mapping[str, Decimal] | None = None
    allocation: AllocationRequest | None = None
    min_trade_value: Decimal = Decimal(0)
    quantity_step: Decimal = Decimal("0.0001")


@dataclass(frozen=True)
class RebalanceResult:
    valuation: AccountValuation
    targets: dict[str, Decimal]
    proposal: Proposal
    allocation: AllocationResult | None


async def propose_rebalance(session: AsyncSession, prices: LatestPrices, market: MarketData, *,
                            owner: UUID, token: str | None, request: RebalanceRequest,
                            settings: Settings) -> RebalanceResult:
    if (request.weights is None) == (request.allocation is None):
        raise Invalid("give either weights or allocation",
                      errors=[{"field": "weights", "reason": "give either weights or allocation, not both"
                               if request.weights is not None else "give weights or allocation"}])
    allocated: AllocationResult | None = None
    if request.allocation is not None:
        allocated = await allocate_universe(market, request.allocation, token=token, settings=settings)
        targets, field = allocated.target_weights(), "allocation.symbols"
    else:
        assert request.weights is not None
        targets = {s.strip(): w for s, w in request.weights.items()}
        field = "weights"
        rebalance.check_targets(targets, max_gross=settings.max_gross_weight, field=field)
    valuation = await account_valuation(session, prices, owner=owner, account=request.account, token=token,
                                        paper_initial_cash=settings.paper_initial_cash)
    held = valuation.holdings()
    unpriced_held = sorted(s for s in held if s not in valuation.prices())
    if unpriced_held:
        raise Invalid(f"no market price for {', '.join(unpriced_held)}: the account cannot be valued to "
                      "size orders", errors=[{"field": "account", "reason": f"no market price for {s}"}
                                             for s in unpriced_held])
    known = valuation.prices()
    quotes = await quotes_for(prices, [s for s in targets if s not in known], token=token)
    missing = sorted(s for s, q in quotes.items() if q is None)
    if missing:
        raise Invalid(f"no price known for {', '.join(missing)}",
                      errors=[{"field": f"{field}.{s}" if field == "weights" else field,
                               "reason": f"no price known for {s}"} for s in missing])
    known.update({s: q.last for s, q in quotes.items() if q is not None})
    proposal = rebalance.propose(equity=valuation.equity, cash=valuation.cash, holdings=held, prices=known,
                                 targets=targets, min_trade_value=request.min_trade_value,
                                 quantity_step=request.quantity_step)
    return RebalanceResult(valuation, targets, proposal, allocated)
