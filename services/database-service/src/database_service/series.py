"""Which stored series a caller sees and which one answers a request.

A user sees the public series (nil owner) and their own imports; a service token sees public series
only. For a symbol and timeframe the caller's own series wins over the public one; a timeframe that is
not stored is derived from the coarsest stored one that divides it (1m → 5m, 1h, 1d ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aitrading.auth import Principal
from aitrading.errors import Invalid
from aitrading.market.timeframes import TIMEFRAMES, Timeframe
from database_service.sql import NIL_OWNER
from database_service.store import TICK_SERIES, Series

# Letters and digits first, then the punctuation real symbols use (BTC/USDT, SYN-BTC/USD, EURUSD.m, ^GSPC).
_SYMBOL = re.compile(r"[A-Za-z0-9^][A-Za-z0-9._/:\-+=^@]{0,63}")


def owners_for(principal: Principal) -> list[str]:
    """Whose series the caller sees, own first: the first owner that can answer wins."""
    if principal.is_service:
        return [NIL_OWNER]
    return [str(principal.id), NIL_OWNER]


def import_owner(principal: Principal) -> str:
    """An admin's import is public; anyone else's is their own."""
    return NIL_OWNER if principal.is_admin else str(principal.id)


def parse_symbol(value: str, *, field: str = "symbol") -> str:
    symbol = value.strip()
    if not _SYMBOL.fullmatch(symbol):
        reason = "1-64 characters: letters, digits and . _ / : - + = ^ @, starting with a letter or digit"
        raise Invalid(f"{value!r} is not a symbol", errors=[{"field": field, "reason": reason}])
    return symbol


@dataclass(frozen=True)
class Source:
    """Where bars of the requested timeframe come from: a stored series, resampled when coarser."""

    series: Series
    timeframe: Timeframe  # the requested one
    stored: Timeframe

    @property
    def resampled(self) -> bool:
        return self.stored != self.timeframe


def _stored_timeframes(series: Iterable[Series]) -> set[Timeframe]:
    return {Timeframe(s.timeframe) for s in series if s.timeframe in _NAMES}


_NAMES = {t.value for t in TIMEFRAMES}


def best_stored(stored: Iterable[Timeframe], wanted: Timeframe) -> Timeframe | None:
    """`wanted` itself when stored, else the coarsest stored timeframe that divides it."""
    stored = set(stored)
    if wanted in stored:
        return wanted
    finer = [t for t in stored if t.seconds < wanted.seconds and t.divides(wanted)]
    return max(finer, key=lambda t: t.seconds) if finer else None


def derivable(stored: Iterable[Timeframe]) -> list[Timeframe]:
    """Every timeframe a request can ask for, given the stored ones."""
    stored = set(stored)
    return [t for t in TIMEFRAMES if best_stored(stored, t) is not None]


def resolve(series: Sequence[Series], owners: Sequence[str], timeframe: Timeframe) -> Source | None:
    """The series answering `timeframe` for a caller seeing `owners` (own first), or None."""
    for owner in owners:
        mine = [s for s in series if s.owner == owner and s.timeframe != TICK_SERIES]
        stored = best_stored(_stored_timeframes(mine), timeframe)
        if stored is not None:
            chosen = next(s for s in mine if s.timeframe == stored.value)
            return Source(chosen, timeframe, stored)
    return None


@dataclass(frozen=True)
class SymbolView:
    symbol: str
    venue: str
    asset_class: str
    timeframes: list[str]  # requestable: stored and derivable
    stored_timeframes: list[str]
    own: bool  # the caller has imported series of it
    synthetic: bool
    ticks: bool


def symbol_views(series: Sequence[Series], owners: Sequence[str]) -> list[SymbolView]:
    """The symbols a caller sees, each described by its own series when it has one, else the public one."""
    by_symbol: dict[str, list[Series]] = {}
    for s in series:
        if s.owner in owners:
            by_symbol.setdefault(s.symbol, []).append(s)
    views = []
    for symbol in sorted(by_symbol):
        entries = by_symbol[symbol]
        rank = {owner: i for i, owner in enumerate(owners)}
        entries.sort(key=lambda s: (rank[s.owner], s.timeframe == TICK_SERIES))
        first = entries[0]
        stored = _stored_timeframes(entries)
        views.append(SymbolView(
            symbol=symbol, venue=first.venue, asset_class=first.asset_class,
            timeframes=[t.value for t in derivable(stored)],
            stored_timeframes=[t.value for t in TIMEFRAMES if t in stored],
            own=any(s.owner != NIL_OWNER for s in entries) and owners[0] != NIL_OWNER,
            synthetic=first.synthetic, ticks=any(s.timeframe == TICK_SERIES for s in entries),
        ))
    return views
