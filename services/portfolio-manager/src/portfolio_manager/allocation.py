"""Portfolio weights from return history: mean-variance, minimum variance and risk parity (pure numpy/scipy).

- Returns are simple returns between consecutive bars that every symbol has (an inner join on time).
- The covariance is shrunk toward its diagonal, with the Schäfer-Strimmer (2005) estimate of the
  intensity (Ledoit-Wolf style, target "D": own variances kept, correlations pulled toward zero) unless
  a fixed `shrinkage` is given; this keeps the solvers stable when bars are few or assets move together.
- Expected returns and covariance are annualized with `periods_per_year` (252 for daily bars, calendar
  bars for intraday timeframes, whose markets trade around the clock).
- Minimum variance minimizes w'Σw; mean-variance maximizes w'μ - (λ/2) w'Σw; both with SLSQP under
  Σw = 1 and 0 ≤ w ≤ max_weight when long-only (-max_weight ≤ w ≤ max_weight otherwise).
- Risk parity gives every asset the same share of the variance, w_i (Σw)_i = w'Σw / n: Newton's method
  on the convex log-barrier problem min ½ y'Σy - (1/n) Σ log y_i, whose optimum normalized is the
  equal-risk-contribution portfolio. It is long-only by nature; a max_weight below what equal risk
  needs is met by SLSQP on the squared differences of the risk contributions, as close as the cap allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from aitrading.errors import Invalid
from aitrading.market.timeframes import Timeframe

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TRADING_DAYS = 252
WEIGHT_TOLERANCE = 1e-7    # sum and bounds of a solution, before it is cleaned up
NEWTON_TOLERANCE = 1e-13   # risk parity: largest |risk contribution - 1/n| accepted


class Method(StrEnum):
    MEAN_VARIANCE = "mean_variance"
    MIN_VARIANCE = "min_variance"
    RISK_PARITY = "risk_parity"


class AllocationFailed(Invalid):
    """The problem as posed has no acceptable solution (infeasible, degenerate data, no convergence)."""


def periods_per_year(timeframe: Timeframe) -> float:
    if timeframe is Timeframe.D1:
        return float(TRADING_DAYS)
    return 365.0 * 86_400 / timeframe.seconds


# --- data -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlignedCloses:
    symbols: list[str]
    time_ms: IntArray          # the bar times every symbol has, oldest first
    closes: FloatArray         # len(time_ms) · len(symbols)


def align(series: Mapping[str, tuple[IntArray, FloatArray]]) -> AlignedCloses:
    """Closes of every symbol at the times all of them have a bar (inner join), oldest first."""
    symbols = list(series)
    common: IntArray | None = None
    for times, _ in series.values():
        common = times if common is None else np.intersect1d(common, times)
    if common is None:
        return AlignedCloses(symbols, np.empty(0, np.int64), np.empty((0, 0)))
    columns = []
    for times, closes in series.values():
        index = np.searchsorted(times, common)
        columns.append(closes[index])
    return AlignedCloses(symbols, common.astype(np.int64),
                         np.column_stack(columns) if columns else np.empty((len(common), 0)))


def simple_returns(closes: FloatArray) -> FloatArray:
    """Returns between consecutive rows: close[t] / close[t-1] - 1."""
    returns: FloatArray = closes[1:] / closes[:-1] - 1.0
    return returns


# --- estimates --------------------------------------------------------------------------------------

def shrinkage_intensity(returns: FloatArray) -> float:
    """Schäfer-Strimmer estimate of the optimal shrinkage toward the diagonal, in [0, 1].

    λ* = Σ_{i≠j} Var(s_ij) / Σ_{i≠j} s_ij², with Var(s_ij) = n / (n-1)³ Σ_k (w_kij - w̄_ij)² and
    w_kij = (x_ki - x̄_i)(x_kj - x̄_j); computed with matrix products, never the n · p · p array.
    """
    n = returns.shape[0]
    x = returns - returns.mean(axis=0)
    w_bar = x.T @ x / n
    squares = (x * x).T @ (x * x)                     # Σ_k w_kij²
    var_s = n / (n - 1) ** 3 * (squares - n * w_bar * w_bar)
    s = w_bar * n / (n - 1)
    off = ~np.eye(returns.shape[1], dtype=bool)
    denominator = float(np.sum(s[off] ** 2))
    if denominator <= 0.0:
        return 1.0
    return float(np.clip(np.sum(var_s[off]) / denominator, 0.0, 1.0))


def shrunk_covariance(returns: FloatArray, shrinkage: float | None = None) -> tuple[FloatArray, float]:
    """The sample covariance pulled toward its diagonal, and the intensity used."""
    sample: FloatArray = np.atleast_2d(np.cov(returns, rowvar=False, ddof=1))
    delta = shrinkage_intensity(returns) if shrinkage is None else float(shrinkage)
    shrunk: FloatArray = (1.0 - delta) * sample + delta * np.diag(np.diag(sample))
    return shrunk, delta


def risk_contributions(weights: FloatArray, cov: FloatArray) -> FloatArray:
    """Each asset's share of the portfolio variance, w_i (Σw)_i / w'Σw (they sum to 1)."""
    marginal = cov @ weights
    variance = float(weights @ marginal)
    shares: FloatArray = weights * marginal / variance
    return shares


# --- solvers ----------------------------------------------------------------------------------------

Bounds = list[tuple[float | None, float | None]]


def weight_bounds(n: int, *, long_only: bool, max_weight: float | None) -> Bounds:
    if long_only:
        cap = 1.0 if max_weight is None else max_weight
        if cap * n < 1.0 - 1e-12:
            raise AllocationFailed(
                f"max_weight {max_weight} · {n} symbols is below 1: the weights cannot sum to 1",
                errors=[{"field": "max_weight", "reason": f"must be at least 1/{n} for {n} symbols"}])
        return [(0.0, cap)] * n
    if max_weight is None:
        return [(None, None)] * n
    if max_weight * n < 1.0 - 1e-12:
        raise AllocationFailed(
            f"max_weight {max_weight} · {n} symbols is below 1: the weights cannot sum to 1",
            errors=[{"field": "max_weight", "reason": f"must be at least 1/{n} for {n} symbols"}])
    return [(-max_weight, max_weight)] * n


def _start(bounds: Bounds) -> FloatArray:
    n = len(bounds)
    start: FloatArray = np.full(n, 1.0 / n)
    return start


def _slsqp(objective: Any, gradient: Any, bounds: Bounds, start: FloatArray, method: Method) -> FloatArray:
    result = minimize(objective, start, jac=gradient, method="SLSQP", bounds=bounds,
                      constraints=[{"type": "eq", "fun": lambda w: float(np.sum(w) - 1.0),
                                    "jac": lambda w: np.ones_like(w)}],
                      options={"ftol": 1e-15, "maxiter": 1000})
    weights = np.asarray(result.x, dtype=np.float64)
    if not result.success and not _acceptable(weights, bounds):
        raise AllocationFailed(f"the {method.value} optimizer did not converge: {result.message}",
                               errors=[{"field": "method", "reason": str(result.message)}])
    return _clean(weights, bounds, method)


def _acceptable(weights: FloatArray, bounds: Bounds) -> bool:
    if not np.all(np.isfinite(weights)) or abs(float(np.sum(weights)) - 1.0) > WEIGHT_TOLERANCE:
        return False
    for w, (low, high) in zip(weights, bounds, strict=True):
        below = low is not None and w < low - WEIGHT_TOLERANCE
        above = high is not None and w > high + WEIGHT_TOLERANCE
        if below or above:
            return False
    return True


def _clean(weights: FloatArray, bounds: Bounds, method: Method) -> FloatArray:
    """Clip solver noise at the bounds and renormalize; refuse a solution outside them."""
    if not _acceptable(weights, bounds):
        raise AllocationFailed(f"the {method.value} optimizer returned weights outside the constraints",
                               errors=[{"field": "method", "reason": "no solution within the constraints"}])
    low = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    high = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    clipped: FloatArray = np.clip(weights, low, high)
    cleaned: FloatArray = clipped / np.sum(clipped)
    return cleaned


def min_variance(cov: FloatArray, bounds: Bounds) -> FloatArray:
    return _slsqp(lambda w: float(w @ cov @ w), lambda w: 2.0 * cov @ w, bounds, _start(bounds),
                  Method.MIN_VARIANCE)


def mean_variance(mu: FloatArray, cov: FloatArray, risk_aversion: float, bounds: Bounds) -> FloatArray:
    """Maximizes w'μ - (λ/2) w'Σw (minimizes its negative)."""
    return _slsqp(lambda w: float(-(w @ mu) + 0.5 * risk_aversion * (w @ cov @ w)),
                  lambda w: -mu + risk_aversion * (cov @ w), bounds, _start(bounds), Method.MEAN_VARIANCE)


def equal_risk_contribution(cov: FloatArray, *, max_iterations: int = 200) -> FloatArray:
    """The long-only portfolio whose assets contribute equally to its variance (Newton, log barrier)."""
    n = cov.shape[0]
    budget = np.full(n, 1.0 / n)
    y = 1.0 / np.sqrt(np.diag(cov))          # inverse volatility: exact when uncorrelated
    y *= np.sqrt(1.0 / float(y @ cov @ y))

    def barrier(v: FloatArray) -> float:
        return float(0.5 * v @ cov @ v - budget @ np.log(v))

    for _ in range(max_iterations):
        weights = y / np.sum(y)
        if np.max(np.abs(risk_contributions(weights, cov) - budget)) < NEWTON_TOLERANCE:
            return weights
        gradient = cov @ y - budget / y
        hessian = cov + np.diag(budget / (y * y))
        step = np.linalg.solve(hessian, gradient)
        size, current, residual = 1.0, barrier(y), float(np.linalg.norm(gradient))
        while size > 1e-12:
            candidate = y - size * step
            # Far from the optimum the barrier must fall (Armijo); near it the barrier's change is below
            # floating point resolution, and a full step that shrinks the gradient is Newton converging.
            if np.all(candidate > 0) and (
                    barrier(candidate) <= current - 1e-4 * size * float(gradient @ step)
                    or np.linalg.norm(cov @ candidate - budget / candidate) < 0.5 * residual):
                break
            size *= 0.5
        else:
            break  # no progress left: as exact as floating point allows
        y = candidate
    weights = y / np.sum(y)
    if np.max(np.abs(risk_contributions(weights, cov) - budget)) > 1e-9:
        raise AllocationFailed("risk parity did not converge",
                               errors=[{"field": "method", "reason": "risk parity did not converge"}])
    return weights


def risk_parity(cov: FloatArray, max_weight: float | None) -> FloatArray:
    weights = equal_risk_contribution(cov)
    if max_weight is None or float(np.max(weights)) <= max_weight + 1e-12:
        return weights
    bounds = weight_bounds(len(weights), long_only=True, max_weight=max_weight)
    n = len(weights)

    def spread(w: FloatArray) -> float:
        contributions = w * (cov @ w) / float(w @ cov @ w)
        return float(np.sum((contributions - 1.0 / n) ** 2))

    start = np.clip(weights, 1e-6, max_weight)
    return _slsqp(spread, None, bounds, start / np.sum(start), Method.RISK_PARITY)


# --- the whole allocation --------------------------------------------------------------------------

@dataclass(frozen=True)
class Allocation:
    method: Method
    symbols: list[str]
    weights: FloatArray
    expected_return: float         # annualized, arithmetic
    volatility: float              # annualized
    sharpe: float | None
    risk_contributions: FloatArray
    observations: int
    periods_per_year: float
    shrinkage: float

    def weight_map(self) -> dict[str, float]:
        return dict(zip(self.symbols, (float(w) for w in self.weights), strict=True))


def allocate(symbols: Sequence[str], returns: FloatArray, method: Method, *, periods: float,
             long_only: bool = True, max_weight: float | None = None, risk_aversion: float = 1.0,
             shrinkage: float | None = None, risk_free_rate: float = 0.0) -> Allocation:
    """Weights of `symbols` by `method` over a matrix of simple returns (observations · symbols)."""
    if returns.ndim != 2 or returns.shape[1] != len(symbols):
        raise ValueError("returns must be observations · symbols")
    if not np.all(np.isfinite(returns)):
        raise AllocationFailed("the return history has gaps or non-positive prices",
                               errors=[{"field": "symbols", "reason": "history with non-finite returns"}])
    flat = [s for s, v in zip(symbols, returns.var(axis=0), strict=True) if v <= 0.0]
    if flat:
        raise AllocationFailed(f"no price movement over the window for {', '.join(flat)}",
                               errors=[{"field": "symbols", "reason": f"{s} has constant prices"}
                                       for s in flat])
    cov_bar, delta = shrunk_covariance(returns, shrinkage)
    cov = cov_bar * periods
    mu = returns.mean(axis=0) * periods
    if method is Method.RISK_PARITY:
        weights = risk_parity(cov, max_weight)
    else:
        bounds = weight_bounds(len(symbols), long_only=long_only, max_weight=max_weight)
        weights = min_variance(cov, bounds) if method is Method.MIN_VARIANCE \
            else mean_variance(mu, cov, risk_aversion, bounds)
    expected = float(weights @ mu)
    volatility = float(np.sqrt(weights @ cov @ weights))
    sharpe = (expected - risk_free_rate) / volatility if volatility > 0 else None
    return Allocation(method, list(symbols), weights, expected, volatility, sharpe,
                      risk_contributions(weights, cov), int(returns.shape[0]), periods, delta)
