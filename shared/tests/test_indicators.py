"""The indicator catalogue: every TA-Lib entry equals TA-Lib called directly, statistics equal pandas,
names parse, refusals name the parameter, warm-up is where the first value appears."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrading.errors import Invalid
from aitrading.market import indicators
from aitrading.market.bars import FloatArray, OhlcvFrame
from aitrading.market.indicators import CATALOG, GROUPS, compute, parse, parse_many, warmup


def _random_walk(n: int, seed: int) -> OhlcvFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.uniform(1_000, 10_000, n).round()
    return OhlcvFrame(np.arange(n, dtype=np.int64) * 60_000, open_, high, low, close, volume)


def _spx() -> OhlcvFrame:
    """Daily S&P 500 1999-2018 from arch.data (installed with database-service); a walk without it."""
    try:
        from arch.data import sp500
    except ImportError:
        return _random_walk(5000, seed=500)
    data = sp500.load()
    times = (data.index.astype("datetime64[ns]").asi8 // 1_000_000).astype(np.int64)
    columns = ("Open", "High", "Low", "Close", "Volume")
    return OhlcvFrame(times, *(data[c].to_numpy(np.float64) for c in columns))


@pytest.fixture(scope="module", params=["spx", "random_walk"])
def frame(request: pytest.FixtureRequest) -> OhlcvFrame:
    return _spx() if request.param == "spx" else _random_walk(3000, seed=42)


Columns = dict[str, FloatArray]
TalibCall = Callable[[Columns], Any]

# Each TA-Lib-backed entry under non-default parameters, and the same computation spelled directly
# against TA-Lib: a mistake in the catalogue's parameter mapping, input columns or output order shows.
DIRECT: dict[str, tuple[str, TalibCall]] = {
    "sma": ("sma_17", lambda d: talib.SMA(d["close"], timeperiod=17)),
    "ema": ("ema_50", lambda d: talib.EMA(d["close"], timeperiod=50)),
    "wma": ("wma_9", lambda d: talib.WMA(d["close"], timeperiod=9)),
    "dema": ("dema_15", lambda d: talib.DEMA(d["close"], timeperiod=15)),
    "tema": ("tema_12", lambda d: talib.TEMA(d["close"], timeperiod=12)),
    "trima": ("trima_11", lambda d: talib.TRIMA(d["close"], timeperiod=11)),
    "kama": ("kama_20", lambda d: talib.KAMA(d["close"], timeperiod=20)),
    "t3": ("t3_7_0.5", lambda d: talib.T3(d["close"], timeperiod=7, vfactor=0.5)),
    "bbands": ("bbands_15_1.5_1", lambda d: talib.BBANDS(d["close"], timeperiod=15, nbdevup=1.5,
                                                         nbdevdn=1.5, matype=1)),
    "midpoint": ("midpoint_9", lambda d: talib.MIDPOINT(d["close"], timeperiod=9)),
    "midprice": ("midprice_9", lambda d: talib.MIDPRICE(d["high"], d["low"], timeperiod=9)),
    "max": ("max_30", lambda d: talib.MAX(d["close"], timeperiod=30)),
    "min": ("min_30", lambda d: talib.MIN(d["close"], timeperiod=30)),
    "ht_trendline": ("ht_trendline", lambda d: talib.HT_TRENDLINE(d["close"])),
    "sar": ("sar_0.03_0.25", lambda d: talib.SAR(d["high"], d["low"], acceleration=0.03, maximum=0.25)),
    "adx": ("adx_10", lambda d: talib.ADX(d["high"], d["low"], d["close"], timeperiod=10)),
    "adxr": ("adxr_10", lambda d: talib.ADXR(d["high"], d["low"], d["close"], timeperiod=10)),
    "dx": ("dx_10", lambda d: talib.DX(d["high"], d["low"], d["close"], timeperiod=10)),
    "plus_di": ("plus_di_10", lambda d: talib.PLUS_DI(d["high"], d["low"], d["close"], timeperiod=10)),
    "minus_di": ("minus_di_10", lambda d: talib.MINUS_DI(d["high"], d["low"], d["close"], timeperiod=10)),
    "aroon": ("aroon_25", lambda d: talib.AROON(d["high"], d["low"], timeperiod=25)),
    "aroonosc": ("aroonosc_25", lambda d: talib.AROONOSC(d["high"], d["low"], timeperiod=25)),
    "rsi": ("rsi_9", lambda d: talib.RSI(d["close"], timeperiod=9)),
    "macd": ("macd_8_21_5", lambda d: talib.MACD(d["close"], fastperiod=8, slowperiod=21, signalperiod=5)),
    "stoch": ("stoch_10_4_2", lambda d: talib.STOCH(d["high"], d["low"], d["close"], fastk_period=10,
                                                    slowk_period=4, slowk_matype=0, slowd_period=2,
                                                    slowd_matype=0)),
    "stochf": ("stochf_10_4", lambda d: talib.STOCHF(d["high"], d["low"], d["close"], fastk_period=10,
                                                     fastd_period=4, fastd_matype=0)),
    "stochrsi": ("stochrsi_10_7_4", lambda d: talib.STOCHRSI(d["close"], timeperiod=10, fastk_period=7,
                                                             fastd_period=4, fastd_matype=0)),
    "cci": ("cci_14", lambda d: talib.CCI(d["high"], d["low"], d["close"], timeperiod=14)),
    "mfi": ("mfi_10", lambda d: talib.MFI(d["high"], d["low"], d["close"], d["volume"], timeperiod=10)),
    "roc": ("roc_5", lambda d: talib.ROC(d["close"], timeperiod=5)),
    "rocp": ("rocp_5", lambda d: talib.ROCP(d["close"], timeperiod=5)),
    "mom": ("mom_5", lambda d: talib.MOM(d["close"], timeperiod=5)),
    "willr": ("willr_10", lambda d: talib.WILLR(d["high"], d["low"], d["close"], timeperiod=10)),
    "cmo": ("cmo_10", lambda d: talib.CMO(d["close"], timeperiod=10)),
    "apo": ("apo_5_20_0", lambda d: talib.APO(d["close"], fastperiod=5, slowperiod=20, matype=0)),
    "ppo": ("ppo_5_20_2", lambda d: talib.PPO(d["close"], fastperiod=5, slowperiod=20, matype=2)),
    "trix": ("trix_15", lambda d: talib.TRIX(d["close"], timeperiod=15)),
    "ultosc": ("ultosc_5_10_20", lambda d: talib.ULTOSC(d["high"], d["low"], d["close"], timeperiod1=5,
                                                        timeperiod2=10, timeperiod3=20)),
    "bop": ("bop", lambda d: talib.BOP(d["open"], d["high"], d["low"], d["close"])),
    "atr": ("atr_10", lambda d: talib.ATR(d["high"], d["low"], d["close"], timeperiod=10)),
    "natr": ("natr_10", lambda d: talib.NATR(d["high"], d["low"], d["close"], timeperiod=10)),
    "trange": ("trange", lambda d: talib.TRANGE(d["high"], d["low"], d["close"])),
    "stddev": ("stddev_10_2", lambda d: talib.STDDEV(d["close"], timeperiod=10, nbdev=2.0)),
    "obv": ("obv", lambda d: talib.OBV(d["close"], d["volume"])),
    "ad": ("ad", lambda d: talib.AD(d["high"], d["low"], d["close"], d["volume"])),
    "adosc": ("adosc_5_15", lambda d: talib.ADOSC(d["high"], d["low"], d["close"], d["volume"],
                                                  fastperiod=5, slowperiod=15)),
    "linearreg": ("linearreg_10", lambda d: talib.LINEARREG(d["close"], timeperiod=10)),
    "linearreg_slope": ("linearreg_slope_10", lambda d: talib.LINEARREG_SLOPE(d["close"], timeperiod=10)),
    "linearreg_angle": ("linearreg_angle_10", lambda d: talib.LINEARREG_ANGLE(d["close"], timeperiod=10)),
    "linearreg_intercept": ("linearreg_intercept_10",
                            lambda d: talib.LINEARREG_INTERCEPT(d["close"], timeperiod=10)),
    "tsf": ("tsf_10", lambda d: talib.TSF(d["close"], timeperiod=10)),
    "var": ("var_10_1.5", lambda d: talib.VAR(d["close"], timeperiod=10, nbdev=1.5)),
    "avgprice": ("avgprice", lambda d: talib.AVGPRICE(d["open"], d["high"], d["low"], d["close"])),
    "medprice": ("medprice", lambda d: talib.MEDPRICE(d["high"], d["low"])),
    "typprice": ("typprice", lambda d: talib.TYPPRICE(d["high"], d["low"], d["close"])),
    "wclprice": ("wclprice", lambda d: talib.WCLPRICE(d["high"], d["low"], d["close"])),
}


def _columns(frame: OhlcvFrame) -> Columns:
    return {c: frame.column(c) for c in indicators.COLUMNS}


def _pandas_close(frame: OhlcvFrame) -> pd.Series:
    return pd.Series(frame.close)


def test_the_catalogue_has_at_least_thirty_talib_indicators_each_checked_below() -> None:
    backed = {name for name, i in CATALOG.items() if i.talib_function}
    assert len(backed) >= 30
    assert backed == set(DIRECT)
    assert {i.group for i in CATALOG.values()} <= set(GROUPS)


@pytest.mark.parametrize("entry", sorted(DIRECT))
def test_every_talib_entry_equals_talib_called_directly(frame: OhlcvFrame, entry: str) -> None:
    name, direct = DIRECT[entry]
    expected = direct(_columns(frame))
    expected = expected if isinstance(expected, tuple) else (expected,)
    indicator = CATALOG[entry]
    assert len(expected) == max(len(indicator.outputs), 1)
    outputs = indicator.outputs or (None,)
    names = [name if output is None else f"{name}_{output}" for output in outputs]
    got = compute(frame, [parse(n) for n in names])
    for column, reference in zip(names, expected, strict=True):
        np.testing.assert_allclose(got[column], reference, rtol=0, atol=0, equal_nan=True, err_msg=column)


def test_statistics_equal_pandas(frame: OhlcvFrame) -> None:
    close = _pandas_close(frame)
    log_returns = np.log(close).diff()
    reference = {
        "return": close.pct_change(1),
        "return_5": close.pct_change(5),
        "log_return_3": np.log(close / close.shift(3)),
        "volatility_20": log_returns.rolling(20).std(),
        "volatility_2": log_returns.rolling(2).std(),
        "zscore_20": (close - close.rolling(20).mean()) / close.rolling(20).std(),
        "zscore_250": (close - close.rolling(250).mean()) / close.rolling(250).std(),
        "skew_20": close.rolling(20).skew(),
        "skew_3": close.rolling(3).skew(),
        "open": pd.Series(frame.open), "high": pd.Series(frame.high), "low": pd.Series(frame.low),
        "close": close, "volume": pd.Series(frame.volume),
    }
    got = compute(frame, parse_many(list(reference)))
    for name, expected in reference.items():
        # pandas rolls its moments online, so it differs from the exact windows in the last digits.
        np.testing.assert_allclose(got[name], expected.to_numpy(), rtol=1e-7, atol=1e-12, equal_nan=True,
                                   err_msg=name)


def test_statistics_of_a_flat_window_are_missing_as_in_pandas() -> None:
    flat = OhlcvFrame(np.arange(8, dtype=np.int64), *(np.array([1, 1, 1, 1, 2, 3, 3, 3.0]) for _ in range(5)))
    got = compute(flat, parse_many(["zscore_3", "skew_3"]))
    close = pd.Series(flat.close)
    np.testing.assert_array_equal(np.isnan(got["skew_3"]), close.rolling(3).skew().isna().to_numpy())
    zscore = (close - close.rolling(3).mean()) / close.rolling(3).std()
    np.testing.assert_array_equal(np.isnan(got["zscore_3"]), zscore.isna().to_numpy())


def _all_outputs_at(name_for: Callable[[indicators.Indicator], str]) -> list[str]:
    names = []
    for indicator in CATALOG.values():
        base = name_for(indicator)
        names.extend([base] if not indicator.outputs else [f"{base}_{o}" for o in indicator.outputs])
    return names


def _with_params(indicator: indicators.Indicator, pick: Callable[[indicators.Param], float]) -> str:
    values = [pick(p) for p in indicator.params]
    return "_".join([indicator.name, *(str(int(v)) if p.kind is int else np.format_float_positional(v)
                                       for p, v in zip(indicator.params, values, strict=True))])


def _every_output_at_defaults() -> list[str]:
    return _all_outputs_at(lambda i: _with_params(i, lambda p: p.default))


@pytest.mark.parametrize("choice", ["defaults", "other"])
def test_warmup_is_the_index_of_the_first_value(choice: str) -> None:
    frame = _random_walk(1500, seed=3)

    def pick(param: indicators.Param) -> float:
        if choice == "defaults" or param.name == "matype":
            return param.default
        return param.default + 3 if param.kind is int else param.default / 2

    specs = parse_many(_all_outputs_at(lambda i: _with_params(i, pick)))
    got = compute(frame, specs)
    for spec in specs:
        values = got[spec.name]
        first = int(np.argmax(~np.isnan(values)))
        assert not np.isnan(values[first]), spec.name
        assert warmup(spec) == first, spec.name


def test_a_window_of_history_needed_gives_the_values_of_the_whole_history() -> None:
    """Recursive indicators (EMA, RSI, ADX, SAR, ...) computed on `limit + history_needed` bars agree
    with the whole history; the running totals obv and ad are counted from their first bar."""
    frame, limit = _random_walk(6000, seed=11), 200
    names = [n for n in _every_output_at_defaults() if n not in ("obv", "ad")]
    names += ["ema_60", "rsi_40", "kama_30", "trix_50", "adx_40", "macd_24_52_18_signal", "sar_0.01_0.1"]
    specs = parse_many(names)
    whole = compute(frame, specs)
    for spec in specs:
        window = compute(frame.tail(limit + indicators.history_needed([spec])), [spec])
        expected = whole[spec.name][-limit:]
        scale = float(np.nanmax(np.abs(expected)))
        np.testing.assert_allclose(window[spec.name][-limit:], expected, rtol=0, atol=1e-6 * scale,
                                   equal_nan=True, err_msg=spec.name)


@pytest.mark.parametrize(("name", "canonical", "values", "output"), [
    ("sma_20", "sma_20", (20,), None),
    ("ema_50", "ema_50", (50,), None),
    ("rsi_14", "rsi_14", (14,), None),
    ("rsi", "rsi_14", (14,), None),
    ("RSI_7", "rsi_7", (7,), None),
    ("macd", "macd_12_26_9_macd", (12, 26, 9), None),
    ("macd_12_26_9", "macd_12_26_9_macd", (12, 26, 9), None),
    ("macd_12_26_9_macd", "macd_12_26_9_macd", (12, 26, 9), "macd"),
    ("macd_12_26_9_signal", "macd_12_26_9_signal", (12, 26, 9), "signal"),
    ("macd_12_26_9_hist", "macd_12_26_9_hist", (12, 26, 9), "hist"),
    ("macd_signal", "macd_12_26_9_signal", (12, 26, 9), "signal"),
    ("macd_5", "macd_5_26_9_macd", (5, 26, 9), None),
    ("bbands_20_2_upper", "bbands_20_2_0_upper", (20, 2.0, 0), "upper"),
    ("bbands_20_2_lower", "bbands_20_2_0_lower", (20, 2.0, 0), "lower"),
    ("stoch_14_3_3_k", "stoch_14_3_3_k", (14, 3, 3), "k"),
    ("stoch_d", "stoch_14_3_3_d", (14, 3, 3), "d"),
    ("atr_14", "atr_14", (14,), None),
    ("adx_14", "adx_14", (14,), None),
    ("cci_20", "cci_20", (20,), None),
    ("obv", "obv", (), None),
    ("mfi_14", "mfi_14", (14,), None),
    ("roc_10", "roc_10", (10,), None),
    ("willr_14", "willr_14", (14,), None),
    ("sar_0.02_0.2", "sar_0.02_0.2", (0.02, 0.2), None),
    ("sar_.05", "sar_0.05_0.2", (0.05, 0.2), None),
    ("linearreg_slope_10", "linearreg_slope_10", (10,), None),
    ("log_return_5", "log_return_5", (5,), None),
    ("return", "return_1", (1,), None),
    ("volatility_20", "volatility_20", (20,), None),
    ("zscore_30", "zscore_30", (30,), None),
    ("skew_20", "skew_20", (20,), None),
    ("close", "close", (), None),
    ("  sma_20 ", "sma_20", (20,), None),
])
def test_names_parse(name: str, canonical: str, values: tuple[float, ...], output: str | None) -> None:
    spec = parse(name)
    assert (spec.canonical, spec.values, spec.output, spec.name) == (canonical, values, output, name.strip())


def test_the_column_keeps_the_name_asked_for_and_shares_the_computation() -> None:
    frame = _random_walk(200, seed=5)
    got = compute(frame, parse_many(["rsi", "rsi_14", "RSI", "rsi"]))
    assert list(got) == ["rsi", "rsi_14", "RSI"]
    np.testing.assert_array_equal(got["rsi"], got["rsi_14"])
    np.testing.assert_array_equal(got["RSI"], talib.RSI(frame.close, timeperiod=14))


@pytest.mark.parametrize(("name", "reason"), [
    ("foo", "unknown indicator 'foo'; GET /api/v1/features/catalog lists them"),
    ("rsi_1", "rsi_1: timeperiod must be between 2 and 100000"),
    ("rsi_100001", "rsi_100001: timeperiod must be between 2 and 100000"),
    ("rsi_abc", "rsi_abc: timeperiod must be a number, not 'abc'"),
    ("rsi_14.5", "rsi_14.5: timeperiod must be a whole number, not '14.5'"),
    ("rsi_1e3", "rsi_1e3: timeperiod must be a number, not '1e3'"),
    ("sma_20_30", "sma_20_30: too many parameters; sma takes at most 1 (timeperiod)"),
    ("obv_5", "obv_5: obv takes no parameters"),
    ("macd_12_26_9_foo", "macd_12_26_9_foo: unknown output 'foo'; macd has macd, signal, hist"),
    ("macd_12_x_9", "macd_12_x_9: slowperiod must be a number, not 'x'"),
    ("sar_0.02_1.5", "sar_0.02_1.5: maximum must be between 0 and 1"),
    ("t3_5_nan", "t3_5_nan: vfactor must be a number, not 'nan'"),
    ("bbands_20_2_9", "bbands_20_2_9: matype must be between 0 and 8"),
    ("sma_", "sma_: empty parameter (two underscores in a row, or one at the end)"),
    ("", "an indicator name is empty"),
    ("skew_2", "skew_2: n must be between 3 and 100000"),
])
def test_a_bad_name_is_refused_naming_the_indicator_and_the_parameter(name: str, reason: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse(name, field="set.indicators")
    assert refused.value.errors == [{"field": "set.indicators", "reason": reason}]
    assert refused.value.status == 422


def test_parse_many_reports_every_problem_at_once() -> None:
    with pytest.raises(Invalid) as refused:
        parse_many(["sma_20", "foo", "rsi_1", "ema_9"])
    assert refused.value.errors == [
        {"field": "indicators", "reason": "unknown indicator 'foo'; GET /api/v1/features/catalog lists them"},
        {"field": "indicators", "reason": "rsi_1: timeperiod must be between 2 and 100000"},
    ]
    assert "foo" in refused.value.detail and "rsi_1" in refused.value.detail


def test_every_parameter_range_is_accepted_by_talib_at_its_limits() -> None:
    frame = _random_walk(300, seed=9)
    for limit in ("minimum", "maximum"):
        specs = parse_many(_all_outputs_at(lambda i: _with_params(i, lambda p: getattr(p, limit))))  # noqa: B023
        got = compute(frame, specs)
        assert all(values.shape == (300,) for values in got.values())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(CATALOG)), st.data())
def test_a_canonical_name_parses_back_to_the_same_feature(name: str, data: st.DataObject) -> None:
    indicator = CATALOG[name]
    values = tuple(data.draw(st.integers(int(p.minimum), int(p.maximum))) if p.kind is int
                   else data.draw(st.floats(p.minimum, p.maximum, allow_nan=False)) for p in indicator.params)
    output = data.draw(st.sampled_from(indicator.outputs)) if indicator.outputs else None
    written = "_".join([name, *(np.format_float_positional(v, trim="-") for v in values),
                        *([output] if output else [])])
    spec = parse(written)
    assert (spec.values, spec.output) == (values, output)
    again = parse(spec.canonical)
    assert (again.canonical, again.values) == (spec.canonical, spec.values)


def test_short_and_empty_frames_give_missing_values_not_errors() -> None:
    specs = parse_many(_every_output_at_defaults())
    short = compute(_random_walk(5, seed=1), specs)
    assert all(v.shape == (5,) for v in short.values())
    assert np.isnan(short["sma_20"]).all() and not np.isnan(short["close"]).any()
    empty = compute(OhlcvFrame.empty(), specs)
    assert all(v.shape == (0,) for v in empty.values())


def test_catalog_json_lists_parameters_outputs_and_an_example() -> None:
    entries = {e["name"]: e for e in indicators.catalog_json()}
    assert set(entries) == set(CATALOG)
    assert entries["macd"]["outputs"] == ["macd", "signal", "hist"]
    assert entries["macd"]["example"] == "macd_12_26_9_macd"
    assert entries["rsi"]["params"] == [{"name": "timeperiod", "type": "int", "default": 14, "minimum": 2,
                                         "maximum": 100000}]
    assert entries["sar"]["params"][0] == {"name": "acceleration", "type": "float", "default": 0.02,
                                           "minimum": 0.0, "maximum": 1.0}
    assert entries["skew"]["backend"] == "numpy" and entries["rsi"]["backend"] == "ta-lib"
    for entry in entries.values():
        assert parse(entry["example"]).canonical == entry["example"]
