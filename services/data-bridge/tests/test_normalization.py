"""Raw rows → normalized ticks: exact decimal strings kept, invalid input counted by reason."""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal

import pytest
from data_bridge.normalization import (
    canonical_symbol,
    normalize_rows,
    normalize_ticks,
    tick_from_values,
    tick_of,
)

from aitrading.errors import Invalid
from aitrading.market.bars import Tick

T = 1_700_000_000_000


def test_strings_and_numbers_become_exact_decimal_strings() -> None:
    rejected: Counter[str] = Counter()
    row = [T, "100.10", "0.5", "100.05", "100.15"]
    ticks = normalize_rows([row, [T + 1, 100.1, 2], [T + 2, 7, None, None, None], [str(T + 3), "1e2"],
                            ["2023-11-14T22:13:20.004Z", "0.000000012345678901234567"]], rejected)
    assert not rejected
    assert ticks[0][5] is row  # already the wire form: reused, not copied
    assert ticks[0][:5] == (T, 100.1, 0.5, 100.05, 100.15)
    assert [t[5] for t in ticks[1:]] == [
        [T + 1, "100.1", "2", None, None],
        [T + 2, "7", "0", None, None],
        [T + 3, "1e2", "0", None, None],
        [T + 4, "0.000000012345678901234567", "0", None, None],
    ]
    assert ticks[1][3] == 0.0 and ticks[1][4] == math.inf  # no quote: never "crossed"
    assert tick_of("X", ticks[4]).price == Decimal("0.000000012345678901234567")


def test_a_quote_only_update_prints_at_the_mid() -> None:
    ticks = normalize_rows([[T, None, None, "99.99", "100.02"]], Counter())
    assert ticks[0][5] == [T, "100.005", "0", "99.99", "100.02"]


@pytest.mark.parametrize(("row", "reason"), [
    ([T, "-1"], "invalid_price"),
    ([T, "0"], "invalid_price"),
    ([T, "abc"], "invalid_price"),
    ([T, "nan"], "invalid_price"),
    ([T, "inf"], "invalid_price"),
    ([T, True], "invalid_price"),
    ([T, None, "1", "99", None], "invalid_price"),  # a one-sided quote is no price
    ([None, "1"], "invalid_time"),
    (["yesterday", "1"], "invalid_time"),
    ([1_700_000_000, "1"], "invalid_time"),  # seconds, not milliseconds
    ([T, "1", "-2"], "invalid_size"),
    ([T, "1", "lots"], "invalid_size"),
    ([T, "1", "1", "0", "2"], "invalid_quote"),
    ([T, "1", "1", "1", "x"], "invalid_quote"),
    ([T], "invalid_row"),
    ([T, "1", "1", "1", "1", "extra"], "invalid_row"),
    ({"time": T}, "invalid_row"),
    ("a row", "invalid_row"),
])
def test_invalid_input_is_counted_under_its_reason_and_dropped(row: object, reason: str) -> None:
    rejected: Counter[str] = Counter()
    assert normalize_rows([row, [T, "5"]], rejected) != []
    assert rejected == Counter({reason: 1})


def test_crossed_quotes_pass_normalization_for_the_quality_checks_to_report() -> None:
    ticks = normalize_rows([[T, "100", "1", "100.2", "100.1"]], Counter())
    assert ticks[0][3] > ticks[0][4]


def test_canonical_symbols() -> None:
    assert canonical_symbol(" btc/usdt ") == "BTC/USDT"
    assert canonical_symbol("SYN-ETH/USD") == "SYN-ETH/USD"
    assert canonical_symbol("brk.b") == "BRK.B"
    for bad in ("", "   ", "BTC USDT", "md.>", "*", "X" * 65, None, 5):
        with pytest.raises(Invalid) as refused:
            canonical_symbol(bad, field="symbols.0")
        assert refused.value.errors == [{"field": "symbols.0", "reason": refused.value.errors[0]["reason"]}]


def test_ticks_from_feeds_and_loose_values() -> None:
    tick = Tick("ETH/USD", T, Decimal("3000.50"), Decimal("0.1"), Decimal("3000.40"), None)
    rejected: Counter[str] = Counter()
    assert normalize_ticks([tick], rejected)[0][5] == [T, "3000.50", "0.1", "3000.40", None]
    broken = [Tick("ETH/USD", T, Decimal(0)), Tick("ETH/USD", T, Decimal("NaN")),
              Tick("ETH/USD", T, Decimal(1), Decimal(-1)), Tick("ETH/USD", T, Decimal(1), bid=Decimal(0)),
              Tick("ETH/USD", 5, Decimal(1))]
    assert normalize_ticks(broken, rejected) == []
    assert rejected == Counter({"invalid_price": 2, "invalid_size": 1, "invalid_quote": 1, "invalid_time": 1})
    assert tick_from_values("ETH/USD", T, "3000.50", "0.1", "3000.40") == tick
    assert tick_from_values("ETH/USD", None, "1") is None
