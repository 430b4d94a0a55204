"""POST /api/v1/portfolio/allocation over the real database-service: SPX/NDX bundled history and series
the user imported; refusals name the field."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
import numpy as np
import pytest
from portfolio_manager.allocation import align, risk_contributions, shrunk_covariance, simple_returns

from aitrading.market.bars import OhlcvFrame

pytestmark = pytest.mark.slow  # serves database-service (chDB) and data-bridge, consumes over NATS

NewUser = Callable[[], tuple[UUID, dict[str, str]]]
Import = Callable[..., Awaitable[None]]


async def _allocate(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post("/api/v1/portfolio/allocation", headers=headers, json=body)


async def _stored(database_service: Callable[[], httpx.AsyncClient], headers: dict[str, str], symbol: str,
                  limit: int) -> OhlcvFrame:
    async with database_service() as dbs:
        response = await dbs.get("/api/v1/market/ohlcv", headers=headers,
                                 params={"symbol": symbol, "timeframe": "1d", "limit": limit})
    assert response.status_code == 200, response.text
    return OhlcvFrame.from_json_bars(response.json()["bars"])


def _weights(body: dict[str, Any]) -> np.ndarray:
    return np.array([float(Decimal(w)) for w in body["weights"].values()])


async def test_every_method_on_spx_and_ndx(client: httpx.AsyncClient, new_user: NewUser,
                                           database_service: Callable[[], httpx.AsyncClient]) -> None:
    _, headers = new_user()
    spx = await _stored(database_service, headers, "SPX", 400)
    ndx = await _stored(database_service, headers, "NDX", 400)
    aligned = align({"SPX": (spx.time_ms, spx.close), "NDX": (ndx.time_ms, ndx.close)})
    returns = simple_returns(aligned.closes[-253:])
    cov = shrunk_covariance(returns)[0] * 252
    equal = np.array([0.5, 0.5])

    results = {}
    for method in ("min_variance", "risk_parity", "mean_variance"):
        response = await _allocate(client, headers, symbols=["SPX", "NDX"], method=method)
        assert response.status_code == 200, response.text
        body = results[method] = response.json()
        weights = _weights(body)
        assert list(body["weights"]) == ["SPX", "NDX"] and abs(weights.sum() - 1) < 1e-8
        assert np.all(weights >= 0)
        assert (body["method"], body["observations"], body["timeframe"], body["periods_per_year"]) == \
            (method, 252, "1d", 252)
        assert body["as_of"].startswith("2018-12-31")
        assert body["volatility"] == pytest.approx(float(np.sqrt(weights @ cov @ weights)), rel=1e-6)
    # Minimum variance beats equal weights; risk parity gives both the same share of the risk.
    mv = _weights(results["min_variance"])
    assert mv @ cov @ mv <= equal @ cov @ equal
    rp = results["risk_parity"]
    assert all(abs(float(c) - 0.5) < 1e-6 for c in rp["risk_contributions"].values())
    assert np.allclose(risk_contributions(_weights(rp), cov), 0.5, atol=1e-6)
    # NASDAQ is the more volatile: it gets less weight in both risk-based portfolios.
    assert mv[1] < mv[0] and _weights(rp)[1] < _weights(rp)[0]


async def test_synthetic_series_of_the_user_give_the_closed_form_weights(
        client: httpx.AsyncClient, new_user: NewUser, import_closes: Import) -> None:
    _, headers = new_user()
    symbols = [f"PMS{i}{uuid4().hex[:6].upper()}" for i in range(3)]
    rng = np.random.default_rng(42)
    sigma = []
    for symbol, vol in zip(symbols, [0.005, 0.01, 0.02], strict=True):
        closes = np.round(100 * np.cumprod(np.concatenate([[1.0], 1 + rng.normal(0.0003, vol, 120)])), 6)
        await import_closes(symbol, [f"{c:.6f}" for c in closes], headers)
        sigma.append(np.std(simple_returns(closes[-101:]), ddof=1))  # the window the service will use

    # With full shrinkage the covariance is diagonal: risk parity ∝ 1/vol, minimum variance ∝ 1/vol².
    common = {"symbols": symbols, "lookback": 100, "shrinkage": 1}
    rp = await _allocate(client, headers, method="risk_parity", **common)
    mv = await _allocate(client, headers, method="min_variance", **common)
    assert rp.status_code == 200 and mv.status_code == 200, rp.text + mv.text
    assert (rp.json()["observations"], rp.json()["shrinkage"]) == (100, 1)
    inverse = 1 / np.array(sigma)
    assert np.allclose(_weights(rp.json()), inverse / inverse.sum(), atol=1e-8)
    assert np.allclose(_weights(mv.json()), inverse**2 / (inverse**2).sum(), atol=1e-6)
    assert np.allclose([float(c) for c in rp.json()["risk_contributions"].values()], 1 / 3, atol=1e-6)

    capped = await _allocate(client, headers, method="min_variance", max_weight=0.4, **common)
    assert capped.status_code == 200 and max(_weights(capped.json())) <= 0.4 + 1e-9
    # Mean-variance with almost no risk aversion puts everything on the best mean return.
    greedy = await _allocate(client, headers, method="mean_variance", risk_aversion=1e-6, **common)
    assert greedy.status_code == 200 and max(_weights(greedy.json())) > 0.999


async def test_a_users_private_series_is_theirs_alone(
        client: httpx.AsyncClient, new_user: NewUser, import_closes: Import) -> None:
    _, headers = new_user()
    _, other = new_user()
    symbol = f"PMP{uuid4().hex[:8].upper()}"
    await import_closes(symbol, [str(100 + (i % 7) - (i % 3)) for i in range(80)], headers)
    mine = await _allocate(client, headers, symbols=[symbol, "SPX"], method="min_variance", lookback=40)
    assert mine.status_code == 422  # their series (2020) shares no dates with SPX (to 2018) ...
    assert mine.json()["errors"][0]["field"] == "symbols"
    theirs = await _allocate(client, other, symbols=[symbol, "SPX"], method="min_variance", lookback=40)
    assert theirs.status_code == 404  # ... and for anyone else it does not exist
    error = theirs.json()["errors"][0]
    assert error["field"] == "symbols" and symbol in error["reason"]


async def test_bad_requests_are_refused_naming_the_field(client: httpx.AsyncClient,
                                                         new_user: NewUser) -> None:
    _, headers = new_user()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"symbols": ["SPX"], "method": "min_variance"}, 422, "symbols"),
        ({"symbols": ["SPX", "SPX"], "method": "min_variance"}, 422, "symbols"),
        ({"symbols": ["SPX", "NDX"], "method": "best"}, 422, "method"),
        ({"symbols": ["SPX", "NDX"], "method": "min_variance", "timeframe": "2d"}, 422, "timeframe"),
        ({"symbols": ["SPX", "NDX"], "method": "min_variance", "max_weight": 0.3}, 422, "max_weight"),
        ({"symbols": ["SPX", "NDX"], "method": "min_variance", "max_weight": 0}, 422, "max_weight"),
        ({"symbols": ["SPX", "NDX"], "method": "mean_variance", "risk_aversion": -1}, 422, "risk_aversion"),
        ({"symbols": ["SPX", "NDX"], "method": "min_variance", "lookback": 5}, 422, "lookback"),
        ({"symbols": ["SPX", f"NOPE{uuid4().hex[:6]}"], "method": "min_variance"}, 404, "symbols"),
    ]
    for body, status, field in cases:
        response = await _allocate(client, headers, **body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        fields = [e["field"] for e in response.json()["errors"]]
        assert any(f == field or f.endswith(f".{field}") for f in fields), (body, fields)
