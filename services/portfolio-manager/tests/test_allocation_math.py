"""The allocation math without I/O: closed forms where they exist, the defining property where not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from portfolio_manager.allocation import (
    AllocationFailed,
    Method,
    align,
    allocate,
    equal_risk_contribution,
    min_variance,
    risk_contributions,
    risk_parity,
    shrinkage_intensity,
    shrunk_covariance,
    weight_bounds,
)


def _covariance(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vols = rng.uniform(0.05, 0.6, n)
    a = rng.normal(size=(n, n))
    m = a @ a.T + np.eye(n) * n / 4
    corr = m / np.sqrt(np.outer(np.diag(m), np.diag(m)))  # a random valid correlation matrix
    return corr * np.outer(vols, vols)


def _returns(seed: int, n: int, observations: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cov = _covariance(seed, n) / 252
    return rng.multivariate_normal(rng.normal(0.0004, 0.0003, n), cov, size=observations)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 25))
def test_risk_parity_contributions_are_equal(seed: int, n: int) -> None:
    cov = _covariance(seed, n)
    weights = equal_risk_contribution(cov)
    assert np.all(weights > 0) and abs(weights.sum() - 1) < 1e-12
    assert np.max(np.abs(risk_contributions(weights, cov) - 1 / n)) < 1e-6


def test_risk_parity_of_uncorrelated_assets_is_inverse_volatility() -> None:
    vols = np.array([0.1, 0.2, 0.4, 0.05])
    weights = equal_risk_contribution(np.diag(vols**2))
    expected = (1 / vols) / np.sum(1 / vols)
    assert np.allclose(weights, expected, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 15))
def test_min_variance_beats_equal_weights_and_matches_the_closed_form_when_unbounded(seed: int,
                                                                                    n: int) -> None:
    cov = _covariance(seed, n)
    equal = np.full(n, 1 / n)
    long_only = min_variance(cov, weight_bounds(n, long_only=True, max_weight=None))
    assert long_only @ cov @ long_only <= equal @ cov @ equal + 1e-12
    assert np.all(long_only >= 0) and abs(long_only.sum() - 1) < 1e-9
    free = min_variance(cov, weight_bounds(n, long_only=False, max_weight=None))
    inverse = np.linalg.solve(cov, np.ones(n))
    assert np.allclose(free, inverse / inverse.sum(), atol=1e-5)
    assert free @ cov @ free <= long_only @ cov @ long_only + 1e-12


def test_mean_variance_matches_its_closed_form_and_tends_to_the_best_asset() -> None:
    returns = _returns(7, 4)
    mu, cov = returns.mean(axis=0) * 252, np.cov(returns, rowvar=False) * 252
    free = allocate(list("ABCD"), returns, Method.MEAN_VARIANCE, periods=252, long_only=False, shrinkage=0.0,
                    risk_aversion=5.0)
    # max w'μ - (λ/2) w'Σw with Σw = 1: w = Σ⁻¹(μ - g·1)/λ, g chosen so the weights sum to 1.
    inv = np.linalg.inv(cov)
    ones = np.ones(4)
    gamma = (ones @ inv @ mu - 5.0) / (ones @ inv @ ones)
    assert np.allclose(free.weights, inv @ (mu - gamma * ones) / 5.0, atol=1e-5)
    greedy = allocate(list("ABCD"), returns, Method.MEAN_VARIANCE, periods=252, risk_aversion=1e-6)
    assert np.argmax(greedy.weights) == np.argmax(mu) and greedy.weights.max() > 0.999
    cautious = allocate(list("ABCD"), returns, Method.MEAN_VARIANCE, periods=252, risk_aversion=1e6)
    minimum = allocate(list("ABCD"), returns, Method.MIN_VARIANCE, periods=252)
    assert np.allclose(cautious.weights, minimum.weights, atol=1e-3)


def test_max_weight_caps_every_method_and_an_impossible_cap_is_refused() -> None:
    returns = _returns(11, 5)
    for method in Method:
        result = allocate(list("ABCDE"), returns, method, periods=252, max_weight=0.25)
        assert result.weights.max() <= 0.25 + 1e-9 and abs(result.weights.sum() - 1) < 1e-9
    with pytest.raises(AllocationFailed) as refused:
        allocate(list("ABCDE"), returns, Method.MIN_VARIANCE, periods=252, max_weight=0.1)
    assert refused.value.errors == [{"field": "max_weight", "reason": "must be at least 1/5 for 5 symbols"}]


def test_capped_risk_parity_stays_within_the_cap_and_as_equal_as_it_allows() -> None:
    cov = np.diag([0.01, 0.04, 0.09, 0.16])
    free = risk_parity(cov, None)
    capped = risk_parity(cov, 0.4)
    assert free.max() > 0.4 >= capped.max() - 1e-9
    spread = np.ptp(risk_contributions(capped, cov))
    for _ in range(200):  # no feasible point nearby has more equal contributions
        trial = np.clip(capped + np.random.default_rng(_).normal(0, 0.01, 4), 0, 0.4)
        trial /= trial.sum()
        if trial.max() <= 0.4:
            assert np.ptp(risk_contributions(trial, cov)) >= spread - 1e-6


def test_shrinkage_intensity_equals_the_direct_formula() -> None:
    returns = _returns(3, 6, observations=60)
    n = returns.shape[0]
    x = returns - returns.mean(axis=0)
    w = x[:, :, None] * x[:, None, :]                       # n · p · p
    s = w.mean(axis=0) * n / (n - 1)
    var_s = n / (n - 1) ** 3 * ((w - w.mean(axis=0)) ** 2).sum(axis=0)
    off = ~np.eye(6, dtype=bool)
    expected = min(1.0, var_s[off].sum() / (s[off] ** 2).sum())
    assert shrinkage_intensity(returns) == pytest.approx(expected, rel=1e-10)
    shrunk, delta = shrunk_covariance(returns)
    sample = np.cov(returns, rowvar=False)
    assert delta == pytest.approx(expected)
    assert np.allclose(np.diag(shrunk), np.diag(sample))
    assert np.allclose(shrunk[off], (1 - delta) * sample[off])
    assert shrunk_covariance(returns, 1.0)[0][off].max() == 0


def test_constant_prices_and_gaps_are_refused_naming_symbols() -> None:
    returns = _returns(5, 3)
    returns[:, 1] = 0.0
    with pytest.raises(AllocationFailed) as refused:
        allocate(list("ABC"), returns, Method.RISK_PARITY, periods=252)
    assert refused.value.errors == [{"field": "symbols", "reason": "B has constant prices"}]
    returns[3, 0] = np.nan
    with pytest.raises(AllocationFailed):
        allocate(list("ABC"), returns, Method.RISK_PARITY, periods=252)


def test_align_keeps_only_the_times_every_symbol_has() -> None:
    a = (np.array([1, 2, 3, 5], np.int64), np.array([10.0, 20.0, 30.0, 50.0]))
    b = (np.array([2, 3, 4, 5], np.int64), np.array([2.0, 3.0, 4.0, 5.0]))
    aligned = align({"A": a, "B": b})
    assert aligned.time_ms.tolist() == [2, 3, 5]
    assert aligned.closes.tolist() == [[20.0, 2.0], [30.0, 3.0], [50.0, 5.0]]


def test_allocation_reports_annualized_figures_of_its_weights() -> None:
    returns = _returns(9, 3)
    result = allocate(list("ABC"), returns, Method.MIN_VARIANCE, periods=252, risk_free_rate=0.01)
    cov, _ = shrunk_covariance(returns)
    assert result.volatility == pytest.approx(np.sqrt(result.weights @ (cov * 252) @ result.weights))
    assert result.expected_return == pytest.approx(result.weights @ returns.mean(axis=0) * 252)
    assert result.sharpe == pytest.approx((result.expected_return - 0.01) / result.volatility)
    assert result.observations == 400 and result.risk_contributions.sum() == pytest.approx(1.0)
