"""Numbers from exchanges and terminals as Decimal."""

from decimal import Decimal

import pytest

from aitrading.decimals import decimal_or_none


@pytest.mark.parametrize(("value", "expected"), [
    (0.1, Decimal("0.1")), (49500.0, Decimal("49500.0")), (3, Decimal(3)), ("0.00012", Decimal("0.00012")),
    (Decimal("7.5"), Decimal("7.5")),
])
def test_numbers_become_their_exact_decimal(value: object, expected: Decimal) -> None:
    assert decimal_or_none(value) == expected


@pytest.mark.parametrize("value", [None, True, "abc", float("inf"), float("nan"), "Infinity", [1]])
def test_what_is_not_a_finite_number_is_none(value: object) -> None:
    assert decimal_or_none(value) is None
