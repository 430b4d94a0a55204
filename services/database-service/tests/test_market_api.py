"""The market API over the real app: symbols, bars, imports and who sees them, refusals."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

Headers = dict[str, str]
OHLCV = "/api/v1/market/ohlcv"
IMPORT = "/api/v1/market/import"


async def bars_of(client: httpx.AsyncClient, headers: Headers, **params: Any) -> httpx.Response:
    return await client.get(OHLCV, headers=headers, params=params)


async def import_json(client: httpx.AsyncClient, headers: Headers, symbol: str, timeframe: str,
                      bars: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return await client.post(IMPORT, headers=headers,
                             json={"symbol": symbol, "timeframe": timeframe, "bars": bars, **extra})


def csv_text(bars: list[dict[str, Any]]) -> str:
    lines = ["time,open,high,low,close,volume"]
    lines += [",".join(str(b[k]) for k in ("time", "open", "high", "low", "close", "volume")) for b in bars]
    return "\n".join(lines) + "\n"


async def import_csv(client: httpx.AsyncClient, headers: Headers, symbol: str, timeframe: str,
                     text: str) -> httpx.Response:
    return await client.post(IMPORT, headers=headers, data={"symbol": symbol, "timeframe": timeframe},
                             files={"file": ("bars.csv", text.encode(), "text/csv")})


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body


# --- symbols and bundled series ------------------------------------------------------------------

async def test_symbols_list_the_bundled_indices(client: httpx.AsyncClient, user_headers: Headers) -> None:
    response = await client.get("/api/v1/market/symbols", headers=user_headers)
    assert response.status_code == 200, response.text
    symbols = {s["symbol"]: s for s in response.json()}
    assert symbols["SPX"]["venue"] == "arch" and symbols["SPX"]["asset_class"] == "index"
    assert symbols["SPX"]["timeframes"] == ["1d"] and symbols["SPX"]["own"] is False
    assert "NDX" in symbols


async def test_market_routes_refuse_a_caller_without_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/symbols", "/ohlcv?symbol=SPX&timeframe=1d", "/gaps?symbol=SPX&timeframe=1d", "/retention"):
        assert_problem(await client.get(f"/api/v1/market{path}"), 401)


async def test_without_start_the_most_recent_limit_bars_come_oldest_first(client: httpx.AsyncClient,
                                                                          user_headers: Headers) -> None:
    everything = (await bars_of(client, user_headers, symbol="SPX", timeframe="1d",
                                limit=100_000)).json()["bars"]
    recent = (await bars_of(client, user_headers, symbol="SPX", timeframe="1d", limit=5)).json()["bars"]
    assert recent == everything[-5:]
    default = (await bars_of(client, user_headers, symbol="SPX", timeframe="1d")).json()["bars"]
    assert default == everything[-1000:]
    until = (await bars_of(client, user_headers, symbol="SPX", timeframe="1d", limit=3,
                           end="2010-01-01T00:00:00Z")).json()["bars"]
    assert [b["time"] for b in until] == ["2009-12-29T00:00:00Z", "2009-12-30T00:00:00Z",
                                          "2009-12-31T00:00:00Z"]


async def test_with_start_bars_run_from_start_up_to_limit_or_end(client: httpx.AsyncClient,
                                                                 user_headers: Headers) -> None:
    first = (await bars_of(client, user_headers, symbol="SPX", timeframe="1d", start="2008-09-15",
                           limit=2)).json()["bars"]
    assert [b["time"] for b in first] == ["2008-09-15T00:00:00Z", "2008-09-16T00:00:00Z"]
    window = (await bars_of(client, user_headers, symbol="SPX", timeframe="1d", start="2008-09-13T00:00:00Z",
                            end="2008-09-19T00:00:00Z")).json()["bars"]
    assert len(window) == 5  # Monday to Friday


async def test_a_service_token_reads_public_series(client: httpx.AsyncClient,
                                                   service_headers: Headers) -> None:
    response = await bars_of(client, service_headers, symbol="NDX", timeframe="1d", limit=1)
    assert response.status_code == 200, response.text
    assert response.json()["bars"][0]["time"] == "2018-12-31T00:00:00Z"


@pytest.mark.parametrize(("params", "field"), [
    ({"symbol": "SPX", "timeframe": "2d"}, "timeframe"),
    ({"symbol": "SPX", "timeframe": "1d", "limit": 100_001}, "query.limit"),
    ({"symbol": "SPX", "timeframe": "1d", "limit": 0}, "query.limit"),
    ({"symbol": "SPX", "timeframe": "1d", "start": "2010-01-02", "end": "2010-01-01"}, "start"),
    ({"symbol": "SPX", "timeframe": "1d", "start": "yesterday"}, "query.start"),
    ({"symbol": "S P X", "timeframe": "1d"}, "symbol"),
])
async def test_bad_queries_are_422_naming_the_field(client: httpx.AsyncClient, user_headers: Headers,
                                                    params: dict[str, Any], field: str) -> None:
    assert_problem(await bars_of(client, user_headers, **params), 422, field)


async def test_an_unknown_symbol_or_underivable_timeframe_is_404(client: httpx.AsyncClient,
                                                                  user_headers: Headers,
                                                                  h: SimpleNamespace) -> None:
    assert_problem(await bars_of(client, user_headers, symbol=h.unique_symbol(), timeframe="1d"), 404)
    body = assert_problem(await bars_of(client, user_headers, symbol="SPX", timeframe="1h"), 404)
    assert "1d" in body["detail"]


# --- imports -------------------------------------------------------------------------------------

async def test_json_import_is_stored_and_read_back(client: httpx.AsyncClient, user_headers: Headers,
                                                   h: SimpleNamespace) -> None:
    symbol = h.unique_symbol()
    bars = h.walk_bars(h.START, timedelta(hours=1), 48)
    response = await import_json(client, user_headers, symbol, "1h", bars)
    assert response.status_code == 201, response.text
    assert response.json() == {"symbol": symbol, "timeframe": "1h", "imported": 48, "skipped": 0,
                               "public": False}
    stored = (await bars_of(client, user_headers, symbol=symbol, timeframe="1h", limit=100)).json()["bars"]
    assert [b["time"] for b in stored] == [b["time"] for b in bars]
    for got, sent in zip(stored, bars, strict=True):
        for key in ("open", "high", "low", "close", "volume"):
            assert Decimal(got[key]) == Decimal(sent[key])


async def test_a_repeated_import_skips_identical_rows_and_replaces_changed_ones(
        client: httpx.AsyncClient, user_headers: Headers, h: SimpleNamespace) -> None:
    symbol = h.unique_symbol()
    bars = h.walk_bars(h.START, timedelta(days=1), 10)
    assert (await import_json(client, user_headers, symbol, "1d", bars)).status_code == 201
    changed = [dict(b) for b in bars]
    changed[4]["close"] = str(Decimal(changed[4]["close"]) + Decimal("0.01"))
    changed[4]["high"] = str(max(Decimal(changed[4]["high"]), Decimal(changed[4]["close"])))
    extra = h.walk_bars(h.START + timedelta(days=10), timedelta(days=1), 2, price=bars[-1]["close"])
    response = await import_json(client, user_headers, symbol, "1d", changed + extra)
    assert response.status_code == 201, response.text
    assert response.json()["imported"] == 3 and response.json()["skipped"] == 9
    stored = (await bars_of(client, user_headers, symbol=symbol, timeframe="1d")).json()["bars"]
    assert len(stored) == 12
    assert Decimal(stored[4]["close"]) == Decimal(changed[4]["close"])


async def test_csv_import_is_stored(client: httpx.AsyncClient, user_headers: Headers,
                                    h: SimpleNamespace) -> None:
    symbol = h.unique_symbol()
    bars = h.walk_bars(h.START, timedelta(minutes=15), 20)
    response = await import_csv(client, user_headers, symbol, "15m", csv_text(bars))
    assert response.status_code == 201, response.text
    assert response.json()["imported"] == 20
    stored = (await bars_of(client, user_headers, symbol=symbol, timeframe="15m")).json()["bars"]
    assert [b["time"] for b in stored] == [b["time"] for b in bars]


async def test_a_csv_with_one_bad_row_is_refused_whole_naming_the_row(
        client: httpx.AsyncClient, user_headers: Headers, h: SimpleNamespace) -> None:
    symbol = h.unique_symbol()
    bars = h.walk_bars(h.START, timedelta(days=1), 6)
    bars[3]["high"] = str(Decimal(bars[3]["low"]) - 1)  # data row 4 is line 5 of the file
    body = assert_problem(await import_csv(client, user_headers, symbol, "1d", csv_text(bars)), 422)
    [error] = body["errors"]
    assert error["field"] == "row 5" and error["reason"].startswith("high is below open, close or low")
    assert_problem(await bars_of(client, user_headers, symbol=symbol, timeframe="1d"), 404)
    symbols = (await client.get("/api/v1/market/symbols", headers=user_headers)).json()
    assert symbol not in {s["symbol"] for s in symbols}


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b: b.update(time="not a time"), "time"),
    (lambda b: b.update(open="-1"), "prices must be positive"),
    (lambda b: b.update(volume="abc"), "volume"),
    (lambda b: b.update(low="1000000"), "low is above"),
    (lambda b: b.update(close="1.0000000000001"), "decimal places"),
    (lambda b: b.update(time="2024-03-04T10:30:00Z"), "start of a 1h bar"),
    (lambda b: b.pop("open"), "open"),
])
async def test_json_bad_rows_are_named_by_index(client: httpx.AsyncClient, user_headers: Headers,
                                                h: SimpleNamespace, mutate: Any, reason: str) -> None:
    symbol = h.unique_symbol()
    bars = h.walk_bars(h.START, timedelta(hours=1), 5)
    mutate(bars[2])
    body = assert_problem(await import_json(client, user_headers, symbol, "1h", bars), 422, "bars[2]")
    assert reason in body["errors"][0]["reason"]
    assert_problem(await bars_of(client, user_headers, symbol=symbol, timeframe="1h"), 404)


async def test_duplicate_times_in_one_import_are_refused(client: httpx.AsyncClient, user_headers: Headers,
                                                         h: SimpleNamespace) -> None:
    bars = h.walk_bars(h.START, timedelta(days=1), 3)
    bars[2]["time"] = bars[0]["time"]
    response = await import_json(client, user_headers, h.unique_symbol(), "1d", bars)
    body = assert_problem(response, 422, "bars[2]")
    assert "duplicate of bars[0]" in body["errors"][0]["reason"]


async def test_import_refuses_bad_headers_types_and_sizes(client: httpx.AsyncClient, user_headers: Headers,
                                                          h: SimpleNamespace) -> None:
    bars = h.walk_bars(h.START, timedelta(days=1), 2)
    assert_problem(await import_json(client, user_headers, h.unique_symbol(), "3d", bars), 422, "timeframe")
    assert_problem(await import_json(client, user_headers, h.unique_symbol(), "1d", []), 422, "bars")
    assert_problem(await client.post(IMPORT, headers=user_headers, content=b"{nope"), 415)
    assert_problem(await client.post(IMPORT, headers={**user_headers, "content-type": "application/json"},
                                     content=b"{nope"), 422, "body")
    text = "when,open\n2024-01-01,1\n"
    assert_problem(await import_csv(client, user_headers, h.unique_symbol(), "1d", text), 422, "row 1")
    huge = b"x" * (20 * 1024 * 1024 + 1)
    assert_problem(await client.post(IMPORT, headers={**user_headers, "content-type": "application/json"},
                                     content=huge), 413)


# --- ownership -----------------------------------------------------------------------------------

async def test_a_users_import_is_invisible_to_others(client: httpx.AsyncClient, user_headers: Headers,
                                                     other_headers: Headers, service_headers: Headers,
                                                     h: SimpleNamespace) -> None:
    symbol = h.unique_symbol("PRIV")
    assert (await import_json(client, user_headers, symbol, "1d",
                              h.walk_bars(h.START, timedelta(days=1), 3))).status_code == 201
    assert (await bars_of(client, user_headers, symbol=symbol, timeframe="1d")).status_code == 200
    assert_problem(await bars_of(client, other_headers, symbol=symbol, timeframe="1d"), 404)
    assert_problem(await bars_of(client, service_headers, symbol=symbol, timeframe="1d"), 404)
    mine = {s["symbol"]: s for s in (await client.get("/api/v1/market/symbols", headers=user_headers)).json()}
    assert mine[symbol]["own"] is True and mine[symbol]["venue"] == "import"
    theirs = (await client.get("/api/v1/market/symbols", headers=other_headers)).json()
    assert symbol not in {s["symbol"] for s in theirs}


async def test_an_admin_import_is_public(client: httpx.AsyncClient, admin_headers: Headers,
                                         other_headers: Headers, service_headers: Headers,
                                         h: SimpleNamespace) -> None:
    symbol = h.unique_symbol("PUB")
    bars = h.walk_bars(h.START, timedelta(days=1), 4)
    response = await import_json(client, admin_headers, symbol, "1d", bars, venue="nasdaq",
                                 asset_class="Equity")
    assert response.status_code == 201 and response.json()["public"] is True
    for headers in (other_headers, service_headers):
        assert len((await bars_of(client, headers, symbol=symbol, timeframe="1d")).json()["bars"]) == 4
    symbols = (await client.get("/api/v1/market/symbols", headers=other_headers)).json()
    listed = {s["symbol"]: s for s in symbols}
    assert listed[symbol]["venue"] == "nasdaq" and listed[symbol]["asset_class"] == "equity"


async def test_a_users_own_series_wins_over_the_public_one_for_them_only(
        client: httpx.AsyncClient, admin_headers: Headers, user_headers: Headers, other_headers: Headers,
        h: SimpleNamespace) -> None:
    symbol = h.unique_symbol("BOTH")
    public = h.walk_bars(h.START, timedelta(days=1), 5, price="50")
    own = h.walk_bars(h.START, timedelta(days=1), 5, price="70")
    assert (await import_json(client, admin_headers, symbol, "1d", public)).status_code == 201
    assert (await import_json(client, user_headers, symbol, "1d", own)).status_code == 201
    mine = (await bars_of(client, user_headers, symbol=symbol, timeframe="1d")).json()["bars"]
    theirs = (await bars_of(client, other_headers, symbol=symbol, timeframe="1d")).json()["bars"]
    assert [Decimal(b["open"]) for b in mine] == [Decimal(b["open"]) for b in own]
    assert [Decimal(b["open"]) for b in theirs] == [Decimal(b["open"]) for b in public]
