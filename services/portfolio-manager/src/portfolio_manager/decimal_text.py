"""Decimals as JSON text: positional notation always (`100`, not `1E+2`), exactly as computed."""

from __future__ import annotations

from decimal import Decimal


def plain(value: Decimal) -> str:
    return format(abs(value) if value == 0 else value, "f")  # never "-0"


def plain_or_none(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)
