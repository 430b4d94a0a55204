"""Numbers from the outside world (exchanges, terminals) as Decimal, leniently."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


def decimal_or_none(value: Any) -> Decimal | None:
    """A float, int or decimal text as a Decimal (floats by their shortest repr, `0.1` → `0.1`);
    None for None, booleans, text that is not a number, and infinities or NaN."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
