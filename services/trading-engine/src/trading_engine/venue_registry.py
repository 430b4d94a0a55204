"""The external venues of the engine, built once per app: `{"ccxt": CcxtVenue, "mt5": Mt5Venue}`, and
what both add to the Venue protocol of venues.py: holdings (free and total per asset) and the refusals
the API renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from aitrading.client import ServiceClient
from aitrading.errors import DomainError
from aitrading.service_tokens import ServiceTokens
from trading_engine.venues import Venue, VenueAccount

if TYPE_CHECKING:
    from trading_engine.settings import Settings


class VenueRefused(DomainError):
    """The venue refused a request of the account (credentials, permissions, a bad request)."""

    status, title, type_slug = 422, "Refused by the venue", "venue-refused"


class VenueNotSupported(DomainError):
    """What this kind of venue cannot do (an order type, or an MT5 agent reporting balances)."""

    status, title, type_slug = 422, "Not supported by this venue", "not-supported-by-venue"


@dataclass(frozen=True)
class Holding:
    asset: str
    free: Decimal
    total: Decimal


@runtime_checkable
class HoldingsVenue(Protocol):
    async def holdings(self, account: VenueAccount) -> list[Holding]:
        """Every asset the account holds: free and total."""
        ...


def build_venues(settings: Settings, client: ServiceClient, tokens: ServiceTokens) -> dict[str, Venue]:
    """One venue per kind; the caller closes each (`await venue.close()`) at shutdown."""
    from trading_engine.ccxt_venue import CcxtVenue
    from trading_engine.mt5_venue import Mt5Venue

    return {
        "ccxt": CcxtVenue(timeout_s=settings.venue_timeout_s, urls=dict(settings.ccxt_urls)),
        "mt5": Mt5Venue(client, tokens, timeout_s=settings.venue_timeout_s),
    }
