"""Reading stored bars from database-service, for the services that compute on them.

With a user's token the user's own imported series are visible too; without one the service's own
token is used (public series only). Answers of database-service keep their meaning: an unknown symbol
is a 404, a bad range a 422.
"""

from __future__ import annotations

from datetime import datetime

from aitrading.client import ServiceClient
from aitrading.errors import raise_for_upstream
from aitrading.market.bars import OhlcvFrame
from aitrading.market.timeframes import Timeframe
from aitrading.service_tokens import ServiceTokens

MAX_LIMIT = 100_000


class MarketData:
    name = "market-data"

    def __init__(self, client: ServiceClient, tokens: ServiceTokens | None = None) -> None:
        self.client = client
        self.tokens = tokens

    async def ohlcv(self, symbol: str, timeframe: Timeframe, *, start: datetime | None = None,
                    end: datetime | None = None, limit: int = 1000, token: str | None = None) -> OhlcvFrame:
        """Bars oldest first: the most recent `limit` when `start` is not given."""
        params: dict[str, str | int] = {"symbol": symbol, "timeframe": timeframe.value,
                                        "limit": min(max(limit, 1), MAX_LIMIT)}
        if start is not None:
            params["start"] = start.isoformat()
        if end is not None:
            params["end"] = end.isoformat()
        if token is None and self.tokens is not None:
            token = await self.tokens.token()
        response = await self.client.get("database-service", "/api/v1/market/ohlcv", params=params,
                                         token=token, timeout_s=30.0)
        body = response.json()
        raise_for_upstream("database-service", response.status_code, body)
        return OhlcvFrame.from_json_bars(body["bars"])
