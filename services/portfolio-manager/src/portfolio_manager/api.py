"""Routes of portfolio-manager: parse, authorize, call the domain, shape the response.

Every figure is the caller's own: accounts, positions and the ledger are read by owner.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from aitrading.auth import CurrentUser
from aitrading.db import DbSession
from aitrading.market.history import MarketData
from aitrading.market.prices import LatestPrices
from aitrading.market.timeframes import Timeframe
from aitrading.service import from_state
from portfolio_manager import proposals, store
from portfolio_manager.allocation import Method
from portfolio_manager.decimal_text import plain, plain_or_none
from portfolio_manager.ledger import PAPER, ZERO, initial_cash
from portfolio_manager.proposals import AllocationRequest, AllocationResult, RebalanceRequest
from portfolio_manager.settings import Settings
from portfolio_manager.valuation import AccountValuation, ValuedPosition, account_valuation

router = APIRouter(prefix="/api/v1/portfolio", tags=["portfolio"])
positions_router = APIRouter(prefix="/api/v1/positions", tags=["positions"])

Market = Annotated[MarketData, Depends(from_state("market"))]
Prices = Annotated[LatestPrices, Depends(from_state("prices"))]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Config = Annotated[Settings, Depends(_settings)]
AccountQuery = Annotated[str, Query(min_length=1, max_length=200,
                                    description='"paper" or the name of one of your venue accounts')]
FiniteDecimal = Annotated[Decimal, Field(allow_inf_nan=False)]


# --- models ---------------------------------------------------------------------------------------

class PositionOut(BaseModel):
    symbol: str
    quantity: str = Field(description="signed: negative is short")
    average_price: str
    market_price: str | None = Field(description="the latest price; the average price when none is "
                                                 "known (priced false); null for a flat position")
    market_value: str
    unrealized_pnl: str
    realized_pnl: str
    fees: str
    priced: bool
    price_source: str | None = Field(description="live (NATS tick or bar), quote (data-bridge), bar "
                                                 "(last stored close)")
    price_time: datetime | None

    @classmethod
    def of(cls, p: ValuedPosition) -> PositionOut:
        return cls(symbol=p.symbol, quantity=plain(p.quantity), average_price=plain(p.average_price),
                   market_price=plain_or_none(p.market_price), market_value=plain(p.market_value),
                   unrealized_pnl=plain(p.unrealized_pnl), realized_pnl=plain(p.realized_pnl),
                   fees=plain(p.fees), priced=p.priced, price_source=p.price_source, price_time=p.price_time)


class PortfolioOut(BaseModel):
    account: str
    cash: str
    equity: str = Field(description="cash + Σ quantity · market_price")
    market_value: str
    realized_pnl: str
    unrealized_pnl: str
    fees: str
    initial_cash: str
    positions: list[PositionOut]
    as_of: datetime

    @classmethod
    def of(cls, v: AccountValuation) -> PortfolioOut:
        return cls(account=v.account, cash=plain(v.cash), equity=plain(v.equity),
                   market_value=plain(v.market_value), realized_pnl=plain(v.realized_pnl),
                   unrealized_pnl=plain(v.unrealized_pnl), fees=plain(v.fees),
                   initial_cash=plain(v.initial_cash), positions=[PositionOut.of(p) for p in v.positions],
                   as_of=v.as_of)


class AccountOut(BaseModel):
    account: str
    cash: str
    initial_cash: str
    realized_pnl: str
    fees: str
    created_at: datetime | None = Field(description="null for the paper account before its first fill")
    updated_at: datetime | None


class LedgerEntryOut(BaseModel):
    id: int
    kind: Literal["initial", "fill"]
    amount: str = Field(description="signed: money in is positive")
    balance: str = Field(description="cash after this entry")
    fill_id: str | None
    symbol: str | None
    time: datetime


class LedgerOut(BaseModel):
    account: str
    entries: list[LedgerEntryOut] = Field(description="newest first")
    next_before: int | None = Field(description="pass as `before` for the next (older) page")


class AllocationIn(BaseModel):
    symbols: list[str] = Field(min_length=2, max_length=50)
    method: Method
    timeframe: str = "1d"
    lookback: int = Field(default=252, ge=10, le=20_000, description="return observations (bars)")
    risk_aversion: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False,
                                 description="λ of mean-variance: maximizes w'μ - (λ/2) w'Σw")
    long_only: bool = True
    max_weight: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    shrinkage: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                    description="toward the diagonal; unset: the Schäfer-Strimmer estimate")
    risk_free_rate: float = Field(default=0.0, ge=-1, le=1, allow_inf_nan=False,
                                  description="annual, for the Sharpe ratio")
    periods_per_year: float | None = Field(default=None, gt=0, le=1e7, allow_inf_nan=False,
                                           description="unset: 252 for 1d, calendar bars for intraday")

    def to_request(self) -> AllocationRequest:
        return AllocationRequest(
            symbols=self.symbols, method=self.method, timeframe=Timeframe.parse(self.timeframe),
            lookback=self.lookback, risk_aversion=self.risk_aversion, long_only=self.long_only,
            max_weight=self.max_weight, shrinkage=self.shrinkage, risk_free_rate=self.risk_free_rate,
            periods_per_year=self.periods_per_year)


class AllocationOut(BaseModel):
    method: str
    weights: dict[str, str]
    risk_contributions: dict[str, str] = Field(description="each symbol's share of the variance")
    expected_return: float = Field(description="annualized arithmetic mean return")
    volatility: float = Field(description="annualized")
    sharpe: float | None
    observations: int
    periods_per_year: float
    shrinkage: float
    timeframe: str
    start: datetime
    as_of: datetime

    @classmethod
    def of(cls, result: AllocationResult) -> AllocationOut:
        a = result.allocation
        weights = {s: proposals.weight_text(w) for s, w in a.weight_map().items()}
        return cls(method=a.method.value, weights=weights,
                   risk_contributions={s: proposals.weight_text(float(c))
                                       for s, c in zip(a.symbols, a.risk_contributions, strict=True)},
                   expected_return=a.expected_return, volatility=a.volatility, sharpe=a.sharpe,
                   observations=a.observations, periods_per_year=a.periods_per_year, shrinkage=a.shrinkage,
                   timeframe=result.timeframe.value, start=result.start, as_of=result.as_of)


class RebalanceIn(BaseModel):
    account: str = Field(default=PAPER, min_length=1, max_length=200)
    weights: dict[str, FiniteDecimal] | None = Field(default=None, max_length=500,
                                                     description="target weight per symbol")
    allocation: AllocationIn | None = Field(default=None, description="or: weights from this allocation")
    min_trade_value: Decimal = Field(default=ZERO, ge=0, allow_inf_nan=False)
    quantity_step: Decimal = Field(default=Decimal("0.0001"), gt=0, allow_inf_nan=False)


class ProposedOrderOut(BaseModel):
    symbol: str
    side: Literal["buy", "sell"]
    type: Literal["market"] = "market"
    quantity: str
    price_used: str
    notional: str
    target_weight: str
    current_weight: str
    current_quantity: str
    quantity_after: str
    order: dict[str, str] = Field(description="exactly the body of POST /api/v1/orders: symbol, side, type, "
                                              "quantity, and account for a venue account")


class SkippedOut(BaseModel):
    symbol: str
    side: Literal["buy", "sell"]
    quantity: str
    notional: str
    reason: str


class RebalanceOut(BaseModel):
    account: str
    equity: str
    cash: str
    cash_after: str = Field(description="once every order fills at its price used, before fees")
    target_weights: dict[str, str]
    orders: list[ProposedOrderOut]
    skipped: list[SkippedOut]
    allocation: AllocationOut | None
    as_of: datetime


# --- positions and portfolio ------------------------------------------------------------------------

@positions_router.get("", response_model=list[PositionOut])
async def list_positions(user: CurrentUser, db: DbSession, prices: Prices, settings: Config,
                         account: AccountQuery = PAPER, include_flat: bool = False) -> list[PositionOut]:
    valuation = await account_valuation(db, prices, owner=user.id, account=account, token=user.token,
                                        paper_initial_cash=settings.paper_initial_cash,
                                        include_flat=include_flat)
    return [PositionOut.of(p) for p in valuation.positions]


@router.get("", response_model=PortfolioOut)
async def get_portfolio(user: CurrentUser, db: DbSession, prices: Prices, settings: Config,
                        account: AccountQuery = PAPER, include_flat: bool = False) -> PortfolioOut:
    valuation = await account_valuation(db, prices, owner=user.id, account=account, token=user.token,
                                        paper_initial_cash=settings.paper_initial_cash,
                                        include_flat=include_flat)
    return PortfolioOut.of(valuation)


@router.get("/accounts", response_model=list[AccountOut])
async def list_accounts(user: CurrentUser, db: DbSession, settings: Config) -> list[AccountOut]:
    rows = await store.accounts_of(db, user.id)
    out = [AccountOut(account=r.account, cash=plain(r.cash), initial_cash=plain(r.initial_cash),
                      realized_pnl=plain(r.realized_pnl), fees=plain(r.fees), created_at=r.created_at,
                      updated_at=r.updated_at) for r in rows]
    if not any(r.account == PAPER for r in rows):
        start = plain(initial_cash(PAPER, settings.paper_initial_cash))
        out.insert(0, AccountOut(account=PAPER, cash=start, initial_cash=start, realized_pnl="0", fees="0",
                                 created_at=None, updated_at=None))
    return out


@router.get("/ledger", response_model=LedgerOut)
async def get_ledger(
    user: CurrentUser, db: DbSession, account: AccountQuery = PAPER,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, description="an entry id: entries older than it")] = None,
) -> LedgerOut:
    rows = await store.ledger_of(db, user.id, account, limit=limit, before=before)
    entries = [LedgerEntryOut(id=r.id, kind=r.kind, amount=plain(r.amount), balance=plain(r.balance),
                              fill_id=None if r.fill_id is None else str(r.fill_id), symbol=r.symbol,
                              time=r.time) for r in rows]
    return LedgerOut(account=account, entries=entries,
                     next_before=entries[-1].id if len(entries) == limit else None)


# --- allocation and rebalancing ---------------------------------------------------------------------

@router.post("/allocation", response_model=AllocationOut)
async def allocate(body: AllocationIn, user: CurrentUser, market: Market, settings: Config) -> AllocationOut:
    result = await proposals.allocate_universe(market, body.to_request(), token=user.token, settings=settings)
    return AllocationOut.of(result)


@router.post("/rebalance", response_model=RebalanceOut)
async def propose_rebalance(body: RebalanceIn, user: CurrentUser, db: DbSession, prices: Prices,
                            market: Market, settings: Config) -> RebalanceOut:
    request = RebalanceRequest(account=body.account, weights=body.weights,
                               allocation=body.allocation.to_request() if body.allocation else None,
                               min_trade_value=body.min_trade_value, quantity_step=body.quantity_step)
    result = await proposals.propose_rebalance(db, prices, market, owner=user.id, token=user.token,
                                               request=request, settings=settings)
    p = result.proposal
    return RebalanceOut(
        account=result.valuation.account, equity=plain(p.equity), cash=plain(p.cash),
        cash_after=plain(p.cash_after), target_weights={s: plain(w) for s, w in result.targets.items()},
        orders=[ProposedOrderOut(symbol=o.symbol, side=o.side.value, quantity=plain(o.quantity),
                                 price_used=plain(o.price_used), notional=plain(o.notional),
                                 target_weight=plain(o.target_weight), current_weight=plain(o.current_weight),
                                 current_quantity=plain(o.current_quantity),
                                 quantity_after=plain(o.quantity_after),
                                 order=o.order_body(result.valuation.account)) for o in p.orders],
        skipped=[SkippedOut(symbol=s.symbol, side=s.side.value, quantity=plain(s.quantity),
                            notional=plain(s.notional), reason=s.reason) for s in p.skipped],
        allocation=AllocationOut.of(result.allocation) if result.allocation else None,
        as_of=result.valuation.as_of)
