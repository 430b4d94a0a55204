"""The messages between an MT5 agent and the platform's `/ws/mt5`: JSON text frames, one object each.

Every message has a `type`. Prices and volumes travel as decimal strings (formatted with the symbol's
digits, so `1.08502` stays `1.08502`); times as epoch milliseconds in UTC.

Agent → platform
- `hello` (first message): `{agent_id, symbols: [terminal symbol], terminal: {...}, protocol, version}`
- `ticks`: `{ticks: [{symbol, time_msc, bid, ask, last, volume, flags}, ...]}`, each symbol's ticks in
  time order; `bid`/`ask`/`last` are null when the terminal has none (forex has no `last`)
- `symbols`: `{streaming: [symbol], failed: {symbol: reason}}` after a `subscribe`
- `order_result`: `{request_id, ok, retcode, deal, order, volume, price, bid, ask, comment,
  retcode_external, error}`; `ok` is true for TRADE_RETCODE_DONE / PLACED / DONE_PARTIAL
- `pong`: `{id}` answering a `ping`; `ping`: `{id}` (the platform answers `pong`)

Platform → agent
- `welcome`: `{agent_id, owner, subscribe: [symbol]}` once the hello is accepted
- `subscribe`: `{symbols: [symbol]}`: the symbols the platform's feeds want (streamed on top of the
  agent's own `--symbols`; a later `subscribe` replaces the earlier list)
- `order`: `{request_id, order: {symbol, side, type, volume, price?, stop_price?, sl?, tp?, deviation?,
  magic?, comment?, filling?, time_in_force?, position?}}`; answered by one `order_result`
- `ping`: `{id}`; `error`: `{detail}` for a message the platform could not use
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

PROTOCOL_VERSION = 1

HELLO, WELCOME, TICKS, SUBSCRIBE, SYMBOLS = "hello", "welcome", "ticks", "subscribe", "symbols"
ORDER, ORDER_RESULT, PING, PONG, ERROR = "order", "order_result", "ping", "pong", "error"

SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
FILLINGS = ("fok", "ioc", "return")
TIMES_IN_FORCE = ("gtc", "day")
MAX_COMMENT = 31  # MetaTrader truncates order comments beyond this


def decimal_text(value: float | None, digits: int) -> str | None:
    """A terminal double as the decimal the terminal shows: `digits` decimals; None for 0 or nothing."""
    if value is None or not math.isfinite(value) or value == 0:
        return None
    return f"{value:.{max(digits, 0)}f}"


def digits_of_step(step: float) -> int:
    """Decimals of a volume step (0.01 → 2, 1 → 0)."""
    if step <= 0 or not math.isfinite(step):
        return 2
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(-int(exponent), 0)


def hello(agent_id: str, symbols: list[str], terminal: dict[str, Any], version: str) -> dict[str, Any]:
    return {"type": HELLO, "agent_id": agent_id, "symbols": symbols, "terminal": terminal,
            "protocol": PROTOCOL_VERSION, "version": version}


def ticks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": TICKS, "ticks": rows}


@dataclass(frozen=True)
class OrderRequest:
    """An `order` message's order, checked: what the agent turns into an MT5 trade request."""

    symbol: str
    side: str
    type: str
    volume: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    sl: Decimal | None = None
    tp: Decimal | None = None
    deviation: int = 10
    magic: int = 0
    comment: str = ""
    filling: str | None = None
    time_in_force: str = "gtc"
    position: int | None = None

    @classmethod
    def parse(cls, raw: Any) -> OrderRequest:
        """Raises ValueError naming the field when the order cannot be sent as it is."""
        if not isinstance(raw, dict):
            raise ValueError("order: must be an object")
        symbol = raw.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise ValueError("order.symbol: a terminal symbol name is required")
        side = _choice(raw, "side", SIDES, None)
        kind = _choice(raw, "type", ORDER_TYPES, "market")
        volume = _decimal(raw, "volume")
        if volume is None or volume <= 0:
            raise ValueError("order.volume: a positive number of lots is required")
        price, stop_price = _decimal(raw, "price"), _decimal(raw, "stop_price")
        if kind in ("limit", "stop_limit") and price is None:
            raise ValueError(f"order.price: a {kind} order needs a price")
        if kind in ("stop", "stop_limit") and stop_price is None:
            raise ValueError(f"order.stop_price: a {kind} order needs a stop price")
        comment = raw.get("comment") or ""
        if not isinstance(comment, str):
            raise ValueError("order.comment: must be text")
        position = raw.get("position")
        if position is not None and (type(position) is not int or position <= 0):
            raise ValueError("order.position: a position ticket is a positive integer")
        return cls(symbol=symbol, side=str(side), type=str(kind), volume=volume, price=price,
                   stop_price=stop_price, sl=_decimal(raw, "sl"), tp=_decimal(raw, "tp"),
                   deviation=_integer(raw, "deviation", 10), magic=_integer(raw, "magic", 0),
                   comment=comment[:MAX_COMMENT],
                   filling=_choice(raw, "filling", FILLINGS, None, required=False),
                   time_in_force=str(_choice(raw, "time_in_force", TIMES_IN_FORCE, "gtc")), position=position)


def _choice(raw: dict[str, Any], name: str, allowed: tuple[str, ...], default: str | None, *,
            required: bool = True) -> str | None:
    value = raw.get(name, default)
    if value is None and (default is not None or not required):
        return default
    if value not in allowed:
        raise ValueError(f"order.{name}: must be one of {', '.join(allowed)}")
    return str(value)


def _decimal(raw: dict[str, Any], name: str) -> Decimal | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"order.{name}: must be a number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"order.{name}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"order.{name}: must be a finite, non-negative number")
    return number


def _integer(raw: dict[str, Any], name: str, default: int) -> int:
    value = raw.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"order.{name}: must be a non-negative integer")
    return value
