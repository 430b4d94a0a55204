"""JSON encoding shared by responses and events: Decimal as string, datetimes as ISO 8601 UTC."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
