"""Where orders go after risk: the venue interface the order flow calls for external venues.

The paper venue fills inside the engine's own transaction (`paper_venue.py`); CCXT exchanges and MT5
terminals are external: the order is stored as `submitted` and committed first, then sent; the venue's
answer (`VenueReport`) is applied in a second transaction. Each execution carries the venue's own trade
id, so applying the same report twice (a retry, a reconcile after a restart) records each fill once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from aitrading.trading.orders import Order, OrderStatus


@dataclass(frozen=True)
class Execution:
    """One fill as the venue reports it."""

    trade_id: str            # unique at the venue for this order: the dedupe key of the fill
    quantity: Decimal
    price: Decimal
    fee: Decimal
    time: datetime
    liquidity: str = "taker"


@dataclass(frozen=True)
class VenueReport:
    """The venue's view of one order: its status there and every execution so far."""

    status: OrderStatus                  # submitted (not yet acknowledged), accepted, partially_filled,
                                         # filled, canceled, rejected or expired
    venue_order_id: str | None
    executions: list[Execution] = field(default_factory=list)
    reason: str | None = None            # why it was rejected or canceled, in the venue's words


@dataclass(frozen=True)
class VenueAccount:
    """A user's account at an external venue, with its credentials decrypted for the call."""

    id: UUID
    owner: UUID
    kind: str                            # "ccxt" or "mt5"
    name: str                            # the user's label; orders name it as `account`
    exchange: str | None                 # ccxt exchange id (binance, kraken, ...); None for mt5
    credentials: dict[str, Any]          # ccxt: apiKey, secret, password?; mt5: agent_id
    options: dict[str, Any]              # ccxt: sandbox, urls overrides (tests), defaultType ...


class VenueUnavailable(Exception):
    """The venue could not be reached or did not answer in time: the outcome of the call is unknown
    and the order is reconciled later (never assumed rejected)."""


class Venue(Protocol):
    kind: str

    async def submit(self, account: VenueAccount, order: Order) -> VenueReport:
        """Send a new order. Must use `order.id` (hex, or `order.client_order_id`) as the venue's client
        order id, so a resubmission after a crash finds the first one instead of placing a second."""
        ...

    async def cancel(self, account: VenueAccount, order: Order) -> VenueReport: ...

    async def fetch(self, account: VenueAccount, order: Order) -> VenueReport:
        """The venue's current view of an order it knows; by client order id when `venue_order_id` is
        None (submitted, then the engine died before recording the answer). Raises LookupError when the
        venue has never seen it."""
        ...

    async def balances(self, account: VenueAccount) -> dict[str, Decimal]:
        """Free balance per asset (ccxt) or account currency (mt5)."""
        ...

    async def close(self) -> None: ...
