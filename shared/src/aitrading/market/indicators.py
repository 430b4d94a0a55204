"""The indicator catalogue: technical indicators (TA-Lib), rolling statistics (numpy) and raw columns.

Shared because feature-engineering serves these as features and pattern-validator evaluates rules
over them: both must read `rsi_14` or `bbands_20_2_upper` the same way and compute the same numbers.

A feature is named `<indicator>[_<param>...][_<output>]`: parameters in catalogue order, trailing ones
may be left out (their defaults apply), floats are allowed (`sar_0.02_0.2`), and a multi-output
indicator without an output gives its first one (`macd` = `macd_12_26_9` = the MACD line). Names are
case-insensitive. A computed column keeps the name exactly as it was asked for (`rsi` stays `rsi`), so
a caller finds its column under the key it sent; `FeatureSpec.canonical` spells every parameter and
the output out (`rsi_14`, `macd_12_26_9_macd`), and names sharing an indicator are computed once.

TA-Lib is the optional dependency `aitrading[indicators]`; it is imported on first computation, so
parsing and the catalogue work without it.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from aitrading.errors import Invalid
from aitrading.market.bars import FloatArray, OhlcvFrame

GROUPS = ("overlap", "momentum", "volatility", "volume", "trend", "statistic", "price")
COLUMNS = ("open", "high", "low", "close", "volume")
MAX_PERIOD = 100_000
# TA-Lib's moving-average types, for the `matype` parameters.
MA_TYPES = ("SMA", "EMA", "WMA", "DEMA", "TEMA", "TRIMA", "KAMA", "MAMA", "T3")

_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
# Rolling statistics are computed on window views in row chunks of at most this many cells, so a
# long window over a long series never allocates more than a few MB at once.
_CHUNK_CELLS = 1 << 20

NumpyFunction = Callable[[Mapping[str, FloatArray], tuple[float, ...]], tuple[FloatArray, ...]]


@dataclass(frozen=True)
class Param:
    name: str
    kind: type[int] | type[float]
    default: float
    minimum: float
    maximum: float

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.kind.__name__, "default": self.kind(self.default),
                "minimum": self.kind(self.minimum), "maximum": self.kind(self.maximum)}


@dataclass(frozen=True)
class Indicator:
    """One catalogue entry. Backed either by a TA-Lib function or by a numpy function."""

    name: str
    group: str
    description: str
    params: tuple[Param, ...]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    # The TA-Lib function behind it, and for each parameter the TA-Lib keyword(s) it sets (Bollinger's
    # one `nbdev` sets both `nbdevup` and `nbdevdn`); fixed keywords are not exposed as parameters.
    talib_function: str | None = None
    talib_keywords: tuple[tuple[str, ...], ...] = ()
    talib_fixed: tuple[tuple[str, int | float], ...] = ()
    numpy_function: NumpyFunction | None = field(default=None, repr=False, compare=False)
    numpy_warmup: Callable[[tuple[float, ...]], int] | None = field(default=None, repr=False, compare=False)

    def talib_kwargs(self, values: Sequence[float]) -> dict[str, int | float]:
        """The keyword arguments of the TA-Lib call for these parameter values."""
        kwargs: dict[str, int | float] = dict(self.talib_fixed)
        for param, keywords, value in zip(self.params, self.talib_keywords, values, strict=True):
            for keyword in keywords:
                kwargs[keyword] = int(value) if param.kind is int else float(value)
        return kwargs

    @property
    def default_name(self) -> str:
        return _canonical(self, tuple(p.default for p in self.params), None)


@dataclass(frozen=True)
class FeatureSpec:
    """One requested column: an indicator, its parameter values (all of them, in order) and output."""

    indicator: Indicator
    values: tuple[float, ...]
    output: str | None
    name: str  # as the caller asked for it: the key of the computed column

    @property
    def output_index(self) -> int:
        return self.indicator.outputs.index(self.output) if self.output else 0

    @property
    def canonical(self) -> str:
        """Every parameter spelled out, and the output of a multi-output indicator: `macd_12_26_9_macd`."""
        return _canonical(self.indicator, self.values, self.output)


# ---------------------------------------------------------------------------------------------------
# Naming


def _format_value(param: Param, value: float) -> str:
    if param.kind is int:
        return str(int(value))
    # Positional, shortest round-trip digits: `0.00001`, never `1e-05`, which is not a valid name part.
    return np.format_float_positional(float(value), trim="-")


def _canonical(indicator: Indicator, values: tuple[float, ...], output: str | None) -> str:
    parts = [indicator.name, *(_format_value(p, v) for p, v in zip(indicator.params, values, strict=True))]
    if indicator.outputs:
        parts.append(output or indicator.outputs[0])
    return "_".join(parts)


def _problem(name: str, reason: str, field_name: str) -> Invalid:
    return Invalid(reason, errors=[{"field": field_name, "reason": reason}], indicator=name)


def _parse_value(name: str, param: Param, token: str, field_name: str) -> float:
    if not _NUMBER.match(token):
        raise _problem(name, f"{name}: {param.name} must be a number, not {token!r}", field_name)
    if param.kind is int:
        if not token.lstrip("+-").isdigit():
            raise _problem(name, f"{name}: {param.name} must be a whole number, not {token!r}", field_name)
        value: float = int(token)
    else:
        value = float(token)
    if not (param.minimum <= value <= param.maximum and math.isfinite(value)):
        low, high = _format_value(param, param.minimum), _format_value(param, param.maximum)
        raise _problem(name, f"{name}: {param.name} must be between {low} and {high}", field_name)
    return value


def parse(name: str, *, field: str = "indicators") -> FeatureSpec:
    """The feature that `name` asks for; `Invalid` naming the indicator and the bad parameter."""
    asked = name.strip()
    if not asked:
        raise _problem(asked, "an indicator name is empty", field)
    tokens = asked.lower().split("_")
    # Indicator names contain underscores (`linearreg_slope`, `log_return`): the longest known prefix.
    for cut in range(len(tokens), 0, -1):
        indicator = CATALOG.get("_".join(tokens[:cut]))
        if indicator is not None:
            rest = tokens[cut:]
            break
    else:
        raise _problem(asked, f"unknown indicator {asked!r}; GET /api/v1/features/catalog lists them", field)
    if "" in rest:
        raise _problem(asked, f"{asked}: empty parameter (two underscores in a row, or one at the end)",
                       field)
    output: str | None = None
    if indicator.outputs and rest and not _NUMBER.match(rest[-1]):
        output = rest.pop()
        if output not in indicator.outputs:
            raise _problem(asked, f"{asked}: unknown output {output!r}; {indicator.name} has "
                                  f"{', '.join(indicator.outputs)}", field)
    if len(rest) > len(indicator.params):
        if not indicator.params:
            reason = f"{asked}: {indicator.name} takes no parameters"
        else:
            accepted = ", ".join(p.name for p in indicator.params)
            reason = f"{asked}: too many parameters; {indicator.name} takes at most " \
                     f"{len(indicator.params)} ({accepted})"
        raise _problem(asked, reason, field)
    values = tuple(_parse_value(asked, param, token, field)
                   for param, token in zip(indicator.params, rest, strict=False))
    values += tuple(p.default for p in indicator.params[len(values):])
    return FeatureSpec(indicator, values, output, asked)


def parse_many(names: Sequence[str], *, field: str = "indicators") -> list[FeatureSpec]:
    """Every feature in `names` (a name asked twice once), or one `Invalid` listing every problem."""
    specs: dict[str, FeatureSpec] = {}
    errors: list[dict[str, Any]] = []
    for name in names:
        try:
            spec = parse(name, field=field)
        except Invalid as problem:
            errors.extend(problem.errors or [])
            continue
        specs.setdefault(spec.name, spec)
    if errors:
        raise Invalid("; ".join(str(e["reason"]) for e in errors), errors=errors)
    return list(specs.values())


# ---------------------------------------------------------------------------------------------------
# Computing


def _talib() -> Any:
    try:
        import talib  # type: ignore[import-untyped,unused-ignore]
    except ImportError as missing:  # pragma: no cover - depends on the installation
        raise RuntimeError("indicators need TA-Lib: depend on 'aitrading[indicators]'") from missing
    return talib


@lru_cache(maxsize=4096)
def _talib_lookback(function: str, kwargs: tuple[tuple[str, int | float], ...]) -> int:
    abstract = importlib.import_module("talib.abstract")
    call = abstract.Function(function)
    call.set_parameters(dict(kwargs))
    return int(call.lookback)


def warmup(spec: FeatureSpec) -> int:
    """Bars before the first valid value: the index of the first non-NaN output on enough data.

    For indicators that smooth exponentially (EMA, RSI, ATR, ADX, ...) values after the warm-up still
    depend faintly on where the data starts; `settling` says how many more bars make that negligible.
    """
    indicator = spec.indicator
    if indicator.talib_function is not None:
        kwargs = indicator.talib_kwargs(spec.values)
        return _talib_lookback(indicator.talib_function, tuple(sorted(kwargs.items())))
    assert indicator.numpy_warmup is not None
    return indicator.numpy_warmup(spec.values)


# TA-Lib functions whose value at a bar depends on all earlier bars (recursive smoothing or state), and
# the bars it takes for the starting point to stop mattering (to ~1e-6 of the value's scale, measured on
# random walks): a multiple of the longest period, and a floor for those whose memory is not set by a
# period (KAMA's slowest smoothing constant is fixed; SAR and the Hilbert transform carry state).
_SETTLING: Mapping[str, tuple[int, int]] = {
    "EMA": (7, 0), "DEMA": (7, 0), "TEMA": (7, 0), "T3": (7, 0), "MACD": (7, 0), "APO": (7, 0),
    "PPO": (7, 0), "TRIX": (10, 0), "ADOSC": (7, 0), "KAMA": (14, 400), "RSI": (14, 0),
    "STOCHRSI": (14, 0), "CMO": (14, 0), "ATR": (14, 0), "NATR": (14, 0), "ADX": (14, 0), "ADXR": (14, 0),
    "DX": (14, 0), "PLUS_DI": (14, 0), "MINUS_DI": (14, 0), "SAR": (0, 250), "HT_TRENDLINE": (0, 250),
}


def settling(spec: FeatureSpec) -> int:
    """Extra bars beyond `warmup` after which a recursive indicator no longer depends on its start.

    Computing on a window that starts this many bars earlier gives the same values (to ~1e-6 of their
    scale) as computing on the whole history; windowed indicators need none. The running totals `obv`
    and `ad` never settle: their level is counted from the first bar computed.
    """
    indicator = spec.indicator
    factor, floor = _SETTLING.get(indicator.talib_function or "", (0, 0))
    periods = [v for p, v in zip(indicator.params, spec.values, strict=True) if "period" in p.name]
    return max(int(factor * max(periods, default=0)), floor)


def history_needed(specs: Sequence[FeatureSpec]) -> int:
    """Bars to load before the first row wanted so every spec is warmed up and settled."""
    return max((warmup(s) + settling(s) for s in specs), default=0)


def _inputs(frame: OhlcvFrame) -> dict[str, FloatArray]:
    return {c: np.ascontiguousarray(frame.column(c), dtype=np.float64) for c in COLUMNS}


def _compute_indicator(indicator: Indicator, values: tuple[float, ...],
                       columns: Mapping[str, FloatArray]) -> tuple[FloatArray, ...]:
    if indicator.talib_function is not None:
        function = getattr(_talib(), indicator.talib_function)
        result = function(*(columns[c] for c in indicator.inputs), **indicator.talib_kwargs(values))
        return tuple(result) if isinstance(result, tuple) else (result,)
    assert indicator.numpy_function is not None
    return indicator.numpy_function(columns, values)


def compute(frame: OhlcvFrame, specs: Sequence[FeatureSpec]) -> dict[str, FloatArray]:
    """Each spec's column, aligned with `frame` (NaN during warm-up), keyed by the name asked for."""
    n = len(frame)
    if n == 0:
        return {spec.name: np.empty(0, dtype=np.float64) for spec in specs}
    columns = _inputs(frame)
    done: dict[tuple[str, tuple[float, ...]], tuple[FloatArray, ...]] = {}
    out: dict[str, FloatArray] = {}
    for spec in specs:
        key = (spec.indicator.name, spec.values)
        if key not in done:
            done[key] = _compute_indicator(spec.indicator, spec.values, columns)
        out[spec.name] = np.asarray(done[key][spec.output_index], dtype=np.float64)
    return out


def catalog_json() -> list[dict[str, Any]]:
    """The catalogue as the API shows it: every entry with its parameters, outputs and an example."""
    return [{"name": i.name, "group": i.group, "description": i.description,
             "params": [p.as_json() for p in i.params], "outputs": list(i.outputs),
             "inputs": list(i.inputs), "example": i.default_name,
             "backend": "ta-lib" if i.talib_function else "numpy"}
            for i in CATALOG.values()]


# ---------------------------------------------------------------------------------------------------
# Rolling statistics (numpy): each matches pandas on the same close series.


def _chunk_rows(window: int) -> int:
    return max(_CHUNK_CELLS // max(window, 1), 1)


def _rolling_moments(x: FloatArray, window: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Mean, sample std (ddof=1) and the 2nd and 3rd central moments of each full window, NaN before.

    A window whose values are all equal has std exactly 0 (float rounding in the mean would otherwise
    leave a tiny spurious spread).
    """
    n = x.shape[0]
    mean, std, m2, m3 = (np.full(n, np.nan) for _ in range(4))
    if n < window:
        return mean, std, m2, m3
    views = sliding_window_view(x, window)
    step = _chunk_rows(window)
    for start in range(0, views.shape[0], step):
        block = views[start:start + step]
        rows = slice(start + window - 1, start + window - 1 + block.shape[0])
        centre = block.mean(axis=1)
        deviation = block - centre[:, None]
        flat = block.max(axis=1) == block.min(axis=1)
        deviation[flat] = 0.0
        squares = (deviation * deviation).sum(axis=1)
        mean[rows] = centre
        std[rows] = np.sqrt(squares / (window - 1)) if window > 1 else np.nan
        m2[rows] = squares / window
        m3[rows] = (deviation * deviation * deviation).sum(axis=1) / window
    return mean, std, m2, m3


def _shifted_ratio(close: FloatArray, n: int) -> FloatArray:
    ratio = np.full(close.shape[0], np.nan)
    if close.shape[0] > n:
        ratio[n:] = close[n:] / close[:-n]
    return ratio


def _return(columns: Mapping[str, FloatArray], values: tuple[float, ...]) -> tuple[FloatArray, ...]:
    return (_shifted_ratio(columns["close"], int(values[0])) - 1.0,)


def _log_return(columns: Mapping[str, FloatArray], values: tuple[float, ...]) -> tuple[FloatArray, ...]:
    return (np.log(_shifted_ratio(columns["close"], int(values[0]))),)


def _volatility(columns: Mapping[str, FloatArray], values: tuple[float, ...]) -> tuple[FloatArray, ...]:
    window = int(values[0])
    close = columns["close"]
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] > 1:
        _, std, _, _ = _rolling_moments(np.diff(np.log(close)), window)
        out[1:] = std
    return (out,)


def _zscore(columns: Mapping[str, FloatArray], values: tuple[float, ...]) -> tuple[FloatArray, ...]:
    close = columns["close"]
    mean, std, _, _ = _rolling_moments(close, int(values[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (close - mean) / std
    z[std == 0] = np.nan  # a flat window has no spread to measure against
    return (z,)


def _skew(columns: Mapping[str, FloatArray], values: tuple[float, ...]) -> tuple[FloatArray, ...]:
    window = int(values[0])
    _, _, m2, m3 = _rolling_moments(columns["close"], window)
    # The adjusted Fisher-Pearson coefficient, as pandas' rolling skew computes it.
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = math.sqrt(window * (window - 1)) / (window - 2) * m3 / m2 ** 1.5
    skew[m2 == 0] = np.nan
    return (skew,)


def _raw(column: str) -> NumpyFunction:
    def take(columns: Mapping[str, FloatArray], _: tuple[float, ...]) -> tuple[FloatArray, ...]:
        return (columns[column].copy(),)
    return take


# ---------------------------------------------------------------------------------------------------
# The catalogue


def _period(name: str = "timeperiod", default: int = 14, minimum: int = 2) -> Param:
    return Param(name, int, default, minimum, MAX_PERIOD)


def _matype(default: int) -> Param:
    return Param("matype", int, default, 0, len(MA_TYPES) - 1)


def _nbdev(default: float) -> Param:
    return Param("nbdev", float, default, 0.01, 100.0)


def _ta(name: str, group: str, description: str, function: str, inputs: tuple[str, ...],
        params: tuple[Param, ...] = (), outputs: tuple[str, ...] = (),
        fixed: tuple[tuple[str, int | float], ...] = (),
        keywords: Mapping[str, tuple[str, ...]] | None = None) -> Indicator:
    """A TA-Lib entry; each parameter sets the TA-Lib keyword of its own name unless `keywords` says."""
    keywords = keywords or {}
    return Indicator(name, group, description, params, outputs, inputs, talib_function=function,
                     talib_keywords=tuple(keywords.get(p.name, (p.name,)) for p in params), talib_fixed=fixed)


def _one(name: str, group: str, description: str, function: str, inputs: tuple[str, ...],
         default: int, minimum: int = 2) -> Indicator:
    """A TA-Lib entry with one `timeperiod` parameter."""
    return _ta(name, group, description, function, inputs, (_period(default=default, minimum=minimum),))


def _np(name: str, description: str, function: NumpyFunction, warm: Callable[[tuple[float, ...]], int],
        params: tuple[Param, ...], group: str = "statistic",
        inputs: tuple[str, ...] = ("close",)) -> Indicator:
    return Indicator(name, group, description, params, (), inputs, numpy_function=function,
                     numpy_warmup=warm)


C, HL, HLC, OHLC = ("close",), ("high", "low"), ("high", "low", "close"), ("open", "high", "low", "close")
HLCV = ("high", "low", "close", "volume")

_ENTRIES: tuple[Indicator, ...] = (
    # Overlap studies: averages, bands and channels drawn over price.
    _one("sma", "overlap", "Simple moving average of close", "SMA", C, 20),
    _one("ema", "overlap", "Exponential moving average of close", "EMA", C, 20),
    _one("wma", "overlap", "Linearly weighted moving average of close", "WMA", C, 20),
    _one("dema", "overlap", "Double exponential moving average of close", "DEMA", C, 20),
    _one("tema", "overlap", "Triple exponential moving average of close", "TEMA", C, 20),
    _one("trima", "overlap", "Triangular moving average of close", "TRIMA", C, 20),
    _one("kama", "overlap", "Kaufman adaptive moving average of close", "KAMA", C, 10),
    _ta("t3", "overlap", "Tillson T3 moving average of close", "T3", C,
        (_period(default=5), Param("vfactor", float, 0.7, 0.0, 1.0))),
    _ta("bbands", "overlap", "Bollinger bands: moving average of close +/- nbdev standard deviations",
        "BBANDS", C, (_period(default=20), _nbdev(2.0), _matype(0)), ("upper", "middle", "lower"),
        keywords={"nbdev": ("nbdevup", "nbdevdn")}),
    _one("midpoint", "overlap", "(highest close + lowest close) / 2 over the period", "MIDPOINT", C, 14),
    _one("midprice", "overlap", "(highest high + lowest low) / 2 over the period", "MIDPRICE", HL, 14),
    _one("max", "overlap", "Highest close over the period", "MAX", C, 20),
    _one("min", "overlap", "Lowest close over the period", "MIN", C, 20),
    _ta("ht_trendline", "overlap", "Hilbert transform instantaneous trendline of close", "HT_TRENDLINE", C),
    # Trend.
    _ta("sar", "trend", "Parabolic SAR (stop and reverse)", "SAR", HL,
        (Param("acceleration", float, 0.02, 0.0, 1.0), Param("maximum", float, 0.2, 0.0, 1.0))),
    _one("adx", "trend", "Average directional movement index", "ADX", HLC, 14),
    _one("adxr", "trend", "Average directional movement index rating", "ADXR", HLC, 14),
    _one("dx", "trend", "Directional movement index", "DX", HLC, 14),
    _one("plus_di", "trend", "Plus directional indicator (+DI)", "PLUS_DI", HLC, 14, minimum=1),
    _one("minus_di", "trend", "Minus directional indicator (-DI)", "MINUS_DI", HLC, 14, minimum=1),
    _ta("aroon", "trend", "Aroon down and up: how recent the lowest low / highest high is, 0-100",
        "AROON", HL, (_period(),), ("down", "up")),
    _one("aroonosc", "trend", "Aroon oscillator (up minus down)", "AROONOSC", HL, 14),
    # Momentum.
    _one("rsi", "momentum", "Relative strength index of close (Wilder)", "RSI", C, 14),
    _ta("macd", "momentum", "MACD line, its signal line and the histogram (line minus signal)", "MACD", C,
        (_period("fastperiod", 12), _period("slowperiod", 26), _period("signalperiod", 9, 1)),
        ("macd", "signal", "hist")),
    _ta("stoch", "momentum", "Slow stochastic oscillator %K and %D (SMA smoothing)", "STOCH", HLC,
        (_period("fastk_period", 14, 1), _period("slowk_period", 3, 1), _period("slowd_period", 3, 1)),
        ("k", "d"), fixed=(("slowk_matype", 0), ("slowd_matype", 0))),
    _ta("stochf", "momentum", "Fast stochastic oscillator %K and %D (SMA smoothing)", "STOCHF", HLC,
        (_period("fastk_period", 14, 1), _period("fastd_period", 3, 1)), ("k", "d"),
        fixed=(("fastd_matype", 0),)),
    _ta("stochrsi", "momentum", "Stochastic of RSI: fast %K and %D of the RSI series", "STOCHRSI", C,
        (_period(), _period("fastk_period", 14, 1), _period("fastd_period", 3, 1)), ("k", "d"),
        fixed=(("fastd_matype", 0),)),
    _one("cci", "momentum", "Commodity channel index", "CCI", HLC, 20),
    _one("mfi", "momentum", "Money flow index (volume-weighted RSI)", "MFI", HLCV, 14),
    _one("roc", "momentum", "Rate of change: (close / close n bars ago - 1) * 100", "ROC", C, 10, 1),
    _one("rocp", "momentum", "Rate of change as a fraction: close / close n bars ago - 1", "ROCP", C, 10, 1),
    _one("mom", "momentum", "Momentum: close minus close n bars ago", "MOM", C, 10, 1),
    _one("willr", "momentum", "Williams' %R", "WILLR", HLC, 14),
    _one("cmo", "momentum", "Chande momentum oscillator", "CMO", C, 14),
    _ta("apo", "momentum", "Absolute price oscillator: fast MA minus slow MA of close", "APO", C,
        (_period("fastperiod", 12), _period("slowperiod", 26), _matype(1))),
    _ta("ppo", "momentum", "Percentage price oscillator: (fast MA - slow MA) / slow MA * 100", "PPO", C,
        (_period("fastperiod", 12), _period("slowperiod", 26), _matype(1))),
    _one("trix", "momentum", "1-bar rate of change of a triple-smoothed EMA of close", "TRIX", C, 30, 1),
    _ta("ultosc", "momentum", "Ultimate oscillator over three periods", "ULTOSC", HLC,
        (_period("timeperiod1", 7, 1), _period("timeperiod2", 14, 1), _period("timeperiod3", 28, 1))),
    _ta("bop", "momentum", "Balance of power: (close - open) / (high - low)", "BOP", OHLC),
    # Volatility.
    _one("atr", "volatility", "Average true range (Wilder)", "ATR", HLC, 14, 1),
    _one("natr", "volatility", "Normalised average true range: ATR / close * 100", "NATR", HLC, 14, 1),
    _ta("trange", "volatility", "True range of each bar", "TRANGE", HLC),
    _ta("stddev", "volatility", "Population standard deviation of close over the period, times nbdev",
        "STDDEV", C, (_period(default=20), _nbdev(1.0))),
    # Volume.
    _ta("obv", "volume", "On-balance volume, a running total from the first bar computed", "OBV",
        ("close", "volume")),
    _ta("ad", "volume", "Chaikin accumulation/distribution line, a running total from the first bar "
        "computed", "AD", HLCV),
    _ta("adosc", "volume", "Chaikin A/D oscillator: fast EMA minus slow EMA of the A/D line", "ADOSC", HLCV,
        (_period("fastperiod", 3), _period("slowperiod", 10))),
    # Statistics.
    _one("linearreg", "statistic", "Least-squares line of close over the period, at the last bar",
         "LINEARREG", C, 14),
    _one("linearreg_slope", "statistic", "Slope of the least-squares line of close, per bar",
         "LINEARREG_SLOPE", C, 14),
    _one("linearreg_angle", "statistic", "Angle in degrees of the least-squares line of close",
         "LINEARREG_ANGLE", C, 14),
    _one("linearreg_intercept", "statistic", "Intercept of the least-squares line of close",
         "LINEARREG_INTERCEPT", C, 14),
    _one("tsf", "statistic", "Time series forecast: the least-squares line extended one bar", "TSF", C, 14),
    _ta("var", "statistic", "Population variance of close over the period, times nbdev", "VAR", C,
        (_period(default=20, minimum=1), _nbdev(1.0))),
    _np("return", "Simple return of close over n bars: close / close n bars ago - 1", _return,
        lambda v: int(v[0]), (Param("n", int, 1, 1, MAX_PERIOD),)),
    _np("log_return", "Log return of close over n bars: ln(close / close n bars ago)", _log_return,
        lambda v: int(v[0]), (Param("n", int, 1, 1, MAX_PERIOD),)),
    _np("volatility", "Rolling sample standard deviation (ddof=1) of 1-bar log returns over n bars",
        _volatility, lambda v: int(v[0]), (Param("n", int, 20, 2, MAX_PERIOD),)),
    _np("zscore", "Close minus its rolling mean over n bars, in rolling sample standard deviations",
        _zscore, lambda v: int(v[0]) - 1, (Param("n", int, 20, 2, MAX_PERIOD),)),
    _np("skew", "Rolling sample skewness of close over n bars (adjusted Fisher-Pearson, as pandas)",
        _skew, lambda v: int(v[0]) - 1, (Param("n", int, 20, 3, MAX_PERIOD),)),
    # Price: the raw columns and TA-Lib's price transforms.
    *(_np(c, f"The bar's {c}", _raw(c), lambda _: 0, (), group="price", inputs=(c,)) for c in COLUMNS),
    _ta("avgprice", "price", "(open + high + low + close) / 4", "AVGPRICE", OHLC),
    _ta("medprice", "price", "(high + low) / 2", "MEDPRICE", HL),
    _ta("typprice", "price", "Typical price: (high + low + close) / 3", "TYPPRICE", HLC),
    _ta("wclprice", "price", "Weighted close: (high + low + 2 * close) / 4", "WCLPRICE", HLC),
)

CATALOG: Mapping[str, Indicator] = MappingProxyType({i.name: i for i in _ENTRIES})
