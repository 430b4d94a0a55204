"""Per-symbol data-quality checks on normalized ticks, and the findings they produce.

Checks, in order: crossed quote (bid > ask), out of order (time earlier than the last accepted tick),
duplicate (same time, price and size as the previous tick), spike (|log return| above k standard
deviations of an EWMA estimate of the return variance, after a warm-up, and above a floor so a
price that sat still does not make its first move a spike). Crossed, out-of-order, duplicate and
(unless kept) spike ticks are dropped. A spike that holds — `spike_confirm` consecutive ticks at the
new level — is a level shift (a gap, a jump) and is accepted from there on, so a feed cannot get
stuck refusing a market that really moved. Stale feeds are found by `StaleWatch`.

Findings are counted in a `QualityLedger` and published as one `md.quality` event per symbol and
check per flush interval, not one per bad tick.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from data_bridge.normalization import NormalTick

CROSSED = "crossed"
OUT_OF_ORDER = "out_of_order"
DUPLICATE = "duplicate"
SPIKE = "spike"
STALE = "stale"
LATE = "late"  # a tick for a bar already closed: published, but not in any bar
INVALID_BAR = "invalid_bar"

DETAILS = {
    CROSSED: "quotes with bid above ask dropped",
    OUT_OF_ORDER: "ticks older than the last accepted one dropped",
    DUPLICATE: "repeated ticks (same time, price and size) dropped",
    SPIKE: "price spikes beyond the volatility limit",
    STALE: "no data from an active feed",
    LATE: "ticks for bars already closed (published as ticks, left out of bars)",
    INVALID_BAR: "impossible or out-of-order bars dropped",
    "invalid_row": "rows that are not [time_ms, price, size, bid, ask] dropped",
    "invalid_time": "ticks without a valid epoch-ms time dropped",
    "invalid_price": "ticks with a missing, non-numeric or non-positive price dropped",
    "invalid_size": "ticks with a non-numeric or negative size dropped",
    "invalid_quote": "ticks with a non-numeric or non-positive bid or ask dropped",
}


@dataclass(frozen=True)
class SpikeRule:
    sigma: float = 10.0  # k
    warmup: int = 20  # returns seen before any tick can be a spike
    ewma_lambda: float = 0.94  # weight of the previous variance estimate
    min_return: float = 0.002  # |log return| at or below this is never a spike
    confirm: int = 3  # consecutive ticks at a new level that make it a level shift
    keep: bool = False  # report spikes but keep them


@dataclass(slots=True)
class SymbolQuality:
    """What the checks remember about one symbol of one feed."""

    last_time: int = -1
    last_price: float = 0.0
    last_size: float = -1.0
    variance: float = 0.0
    returns: int = 0
    pending_price: float = 0.0  # the level a run of spikes points at
    pending: int = 0  # how many consecutive ticks pointed there


def check_ticks(state: SymbolQuality, ticks: Iterable[NormalTick], rule: SpikeRule,
                issues: Counter[str]) -> list[NormalTick]:
    """The ticks that pass, in order; each dropped (or kept spike) tick counted in `issues`."""
    accepted: list[NormalTick] = []
    append = accepted.append
    log = math.log
    k2 = rule.sigma * rule.sigma
    floor2 = rule.min_return * rule.min_return
    lam = rule.ewma_lambda
    last_time, last_price, last_size = state.last_time, state.last_price, state.last_size
    variance, returns = state.variance, state.returns
    for tick in ticks:
        time_ms, price, size, bid, ask = tick[0], tick[1], tick[2], tick[3], tick[4]
        if bid > ask:
            issues[CROSSED] += 1
            continue
        if time_ms < last_time:
            issues[OUT_OF_ORDER] += 1
            continue
        if time_ms == last_time and price == last_price and size == last_size:
            issues[DUPLICATE] += 1
            continue
        if last_price > 0.0 and price != last_price:
            r = log(price / last_price)
            r2 = r * r
            if returns >= rule.warmup and r2 > floor2 and r2 > k2 * variance:
                if rule.keep:
                    issues[SPIKE] += 1
                else:
                    # A run of spikes that agree with each other is the market moving, not a bad print:
                    # the tick that confirms the new level is accepted (and not counted as a spike).
                    if state.pending and _same_level(price, state.pending_price, k2 * variance, floor2):
                        state.pending += 1
                    else:
                        state.pending, state.pending_price = 1, price
                    if state.pending < rule.confirm:
                        issues[SPIKE] += 1
                        continue
                state.pending = 0
            else:
                state.pending = 0
                variance = r2 if returns == 0 else lam * variance + (1.0 - lam) * r2
                returns += 1
        elif last_price > 0.0:
            state.pending = 0
            variance *= lam  # an unchanged price is a zero return
            returns += 1
        last_time, last_price, last_size = time_ms, price, size
        append(tick)
    state.last_time, state.last_price, state.last_size = last_time, last_price, last_size
    state.variance, state.returns = variance, returns
    return accepted


def _same_level(price: float, level: float, limit2: float, floor2: float) -> bool:
    r = math.log(price / level)
    return r * r <= max(limit2, floor2)


@dataclass
class QualityLedger:
    """Findings summed per (symbol, venue, check) until the next flush."""

    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def add(self, symbol: str, venue: str, issues: Counter[str]) -> None:
        for check, count in issues.items():
            self.counts[(symbol, venue, check)] += count

    def drain(self) -> list[tuple[str, str, str, int]]:
        found = [(symbol, venue, check, count) for (symbol, venue, check), count in self.counts.items()]
        self.counts.clear()
        return found


def detail(check: str, count: int, interval_s: float) -> str:
    return f"{count} in the last {interval_s:g} s: {DETAILS.get(check, check)}"


@dataclass
class StaleWatch:
    """Which active feeds went quiet: each is reported once per silence, again after data resumed."""

    after_s: float
    reported: set[object] = field(default_factory=set)

    def newly_stale(self, feeds: Iterable[tuple[object, datetime | None, datetime]],
                    now: datetime) -> list[object]:
        """`feeds` as (key, last data time or None, when the feed started); the ones now stale."""
        stale = []
        for key, last_data_at, started_at in feeds:
            since = last_data_at or started_at
            if (now - since).total_seconds() >= self.after_s:
                if key not in self.reported:
                    self.reported.add(key)
                    stale.append(key)
            else:
                self.reported.discard(key)
        return stale

    def forget(self, key: object) -> None:
        self.reported.discard(key)
