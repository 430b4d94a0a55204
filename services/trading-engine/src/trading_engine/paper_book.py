"""The resting paper orders of every owner, in memory, by symbol: what a new quote may fill.

Only a cache of the database: filled from it at start and on every refresh (orders placed through
another replica), added to after a commit here, and never trusted for a fill — the fill re-reads and
locks the order first (paper_venue).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from trading_engine.account_orders import AccountOrder


class PaperBook:
    def __init__(self) -> None:
        self._by_symbol: dict[str, dict[UUID, AccountOrder]] = {}

    def __len__(self) -> int:
        return sum(len(orders) for orders in self._by_symbol.values())

    def add(self, order: AccountOrder) -> None:
        """Keep an open paper order (a copy); a closed one is removed instead."""
        if not (order.is_paper and order.is_open):
            self.remove(order.id, order.symbol)
            return
        self._by_symbol.setdefault(order.symbol, {})[order.id] = order.copy()

    def remove(self, order_id: UUID, symbol: str) -> None:
        orders = self._by_symbol.get(symbol)
        if orders is None:
            return
        orders.pop(order_id, None)
        if not orders:
            del self._by_symbol[symbol]

    def replace_all(self, orders: Iterable[AccountOrder]) -> None:
        fresh: dict[str, dict[UUID, AccountOrder]] = {}
        for order in orders:
            if order.is_paper and order.is_open:
                fresh.setdefault(order.symbol, {})[order.id] = order.copy()
        self._by_symbol = fresh

    def has_resting(self, symbol: str) -> bool:
        return bool(self._by_symbol.get(symbol))

    def resting(self, symbol: str) -> list[AccountOrder]:
        """Copies of the symbol's resting orders, oldest first."""
        orders = self._by_symbol.get(symbol)
        if not orders:
            return []
        return sorted((o.copy() for o in orders.values()), key=lambda o: (o.created_at, o.id))

    def contains(self, order_id: UUID) -> bool:
        return any(order_id in orders for orders in self._by_symbol.values())
