"""The MT5 agents connected to this instance: who owns them, which feeds take their ticks, their orders.

An agent (agents/mt5-agent, on the Windows box next to a MetaTrader 5 terminal) connects to `/ws/mt5`
with its owner's token; it is known here by (owner, agent id) while connected. MT5 feeds subscribe
for terminal symbols and a rule saying which agents they trust; each tick batch of an agent goes to
the feeds that trust it. Orders go out as `order` messages and the agent's `order_result` resolves the
waiting request by its id (a future per request), or the wait ends with a timeout.

The registry is in memory: an agent is connected to one instance, and the feeds it supplies run in
that instance's feed manager (see mt5_feed for the caveat with several replicas).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol
from uuid import UUID, uuid4

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aitrading.errors import Invalid, NotFound, Unavailable, UpstreamTimeout
from aitrading.market.bars import Tick

_log = structlog.get_logger("data_bridge.mt5_agents")

AGENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_SYMBOLS = 500
ORDER_TIMEOUT_S = 10.0
MAX_ORDER_TIMEOUT_S = 120.0
TICK_FLAG_LAST = 8  # MetaTrader's TICK_FLAG_LAST: the tick carries a trade (last price and volume)


class AgentLink(Protocol):
    """The connection to one agent (a WebSocket in mt5_channel)."""

    async def send(self, message: dict[str, Any]) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class TerminalTick:
    """A tick as the terminal reported it (decimal strings parsed), before it becomes a platform tick."""

    symbol: str
    time_ms: int
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    volume: Decimal
    flags: int

    def as_tick(self, symbol: str) -> Tick | None:
        """The platform tick: the last trade's price where the terminal has one, else the mid."""
        if self.last is not None and self.last > 0:
            price = self.last
        elif self.bid is not None and self.ask is not None:
            price = (self.bid + self.ask) / 2
        else:
            price = self.bid or self.ask  # type: ignore[assignment]
        if price is None or price <= 0:
            return None
        size = self.volume if self.flags & TICK_FLAG_LAST else Decimal(0)
        return Tick(symbol, self.time_ms, price, size, self.bid, self.ask)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number if number != 0 else None


def parse_ticks(rows: Any) -> tuple[list[TerminalTick], int]:
    """The usable ticks of an agent's `ticks` message, and how many rows were not usable."""
    if not isinstance(rows, list):
        raise ValueError("ticks must be a list of {symbol, time_msc, bid, ask, last, volume, flags}")
    out: list[TerminalTick] = []
    for row in rows:
        try:
            symbol, time_msc = row["symbol"], row["time_msc"]
            if not isinstance(symbol, str) or not isinstance(time_msc, int) or isinstance(time_msc, bool):
                raise ValueError("symbol and time_msc are required")
            flags = row.get("flags") or 0
            out.append(TerminalTick(symbol, time_msc, _decimal(row.get("bid")), _decimal(row.get("ask")),
                                    _decimal(row.get("last")), _decimal(row.get("volume")) or Decimal(0),
                                    flags if isinstance(flags, int) else 0))
        except (KeyError, TypeError, ValueError):
            continue
    return out, len(rows) - len(out)


@dataclass(eq=False)
class Mt5Agent:
    id: str
    owner: UUID
    owner_is_admin: bool
    link: AgentLink
    symbols: list[str]
    terminal: dict[str, Any]
    version: str | None = None
    connected_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_seen: datetime = field(default_factory=lambda: datetime.now(UTC))
    failed_symbols: dict[str, str] = field(default_factory=dict)
    ticks: int = 0
    orders: int = 0
    pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[UUID, str]:
        return self.owner, self.id

    def seen(self) -> None:
        self.last_seen = datetime.now(UTC)

    def seen_age_s(self) -> float:
        return (datetime.now(UTC) - self.last_seen).total_seconds()

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "symbols": sorted(self.symbols), "failed_symbols": self.failed_symbols,
                "terminal": self.terminal, "version": self.version, "connected_at": self.connected_at,
                "last_seen": self.last_seen, "ticks": self.ticks, "orders": self.orders,
                "pending_orders": len(self.pending)}


class Mt5Order(BaseModel):
    """An order for a terminal, as the agent's protocol takes it (decimals travel as strings)."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=64, description="the terminal's symbol name")
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop", "stop_limit"] = "market"
    volume: Decimal = Field(gt=0, allow_inf_nan=False, description="lots")
    price: Decimal | None = Field(None, gt=0, allow_inf_nan=False, description="limit price")
    stop_price: Decimal | None = Field(None, gt=0, allow_inf_nan=False, description="stop trigger")
    sl: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    tp: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    deviation: int = Field(10, ge=0, le=1_000_000, description="accepted slippage of a market order, points")
    magic: int = Field(0, ge=0, le=2**63 - 1, description="the expert id MetaTrader records")
    comment: str = Field("", max_length=31)
    filling: Literal["fok", "ioc", "return"] | None = None
    time_in_force: Literal["gtc", "day"] = "gtc"
    position: int | None = Field(None, gt=0, description="the position ticket this order closes")

    @classmethod
    def parse(cls, raw: dict[str, Any], field_prefix: str = "order") -> Mt5Order:
        """The order, or a 422 naming each bad field."""
        try:
            order = cls.model_validate(raw)
        except ValidationError as exc:
            errors = [{"field": ".".join([field_prefix, *(str(p) for p in e["loc"])]), "reason": e["msg"]}
                      for e in exc.errors()]
            raise Invalid("; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors) from None
        missing = []
        if order.type in ("limit", "stop_limit") and order.price is None:
            missing.append({"field": f"{field_prefix}.price",
                            "reason": f"a {order.type} order needs a price"})
        if order.type in ("stop", "stop_limit") and order.stop_price is None:
            missing.append({"field": f"{field_prefix}.stop_price",
                            "reason": f"a {order.type} order needs a stop price"})
        if missing:
            raise Invalid("; ".join(f"{e['field']}: {e['reason']}" for e in missing), errors=missing)
        return order

    def wire(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v)
                for k, v in self.model_dump(exclude_none=True).items()}


TickHandler = Callable[[Mt5Agent, list[Tick]], Awaitable[None]]


@dataclass(eq=False)
class Subscription:
    """An MT5 feed listening: terminal symbol → platform symbol, and which agents it takes ticks from."""

    feed_id: UUID
    symbols: dict[str, str]
    accepts: Callable[[Mt5Agent], bool]
    handler: TickHandler
    on_connect: Callable[[Mt5Agent], None] = lambda _: None


class Mt5Agents:
    name = "mt5-agents"

    def __init__(self, *, order_timeout_s: float = ORDER_TIMEOUT_S) -> None:
        self.order_timeout_s = order_timeout_s
        self._agents: dict[tuple[UUID, str], Mt5Agent] = {}
        self._subscriptions: list[Subscription] = []

    # --- lifecycle (a part of the app: started before the feeds, stopped after them) ---

    async def start(self) -> None:
        """Nothing to open: agents come to us."""

    async def stop(self) -> None:
        for agent in list(self._agents.values()):
            self._fail_pending(agent, "data-bridge is shutting down")
            try:
                await agent.link.close(1001, "data-bridge is shutting down")
            except Exception as exc:  # the connection may already be gone; nothing else to do
                _log.info("agent connection already closed", agent=agent.id, error=repr(exc))
        self._agents.clear()

    async def check(self) -> None:
        """Always ready: no agent connected is a normal state."""

    # --- connections ---

    async def connect(self, agent: Mt5Agent) -> Mt5Agent:
        """Register a connected agent; the same (owner, id) connecting again replaces the old link."""
        if not AGENT_ID.fullmatch(agent.id):
            raise Invalid("an agent id is 1-64 letters, digits and ._-",
                          errors=[{"field": "agent_id", "reason": "1-64 of A-Z a-z 0-9 . _ -"}])
        previous = self._agents.get(agent.key)
        self._agents[agent.key] = agent
        if previous is not None:
            self._fail_pending(previous, "the agent connected again")
            try:
                await previous.link.close(4000, "replaced by a newer connection of the same agent")
            except Exception as exc:  # the old socket is usually dead already: that is why it reconnected
                _log.info("replaced agent connection already closed", agent=agent.id, error=repr(exc))
        for subscription in self._subscriptions:
            if subscription.accepts(agent):
                subscription.on_connect(agent)
        return agent

    def disconnect(self, agent: Mt5Agent) -> None:
        if self._agents.get(agent.key) is agent:
            del self._agents[agent.key]
        self._fail_pending(agent, "the agent disconnected")

    def connected(self, key: tuple[UUID, str]) -> bool:
        return key in self._agents

    def agents_of(self, owner: UUID) -> list[Mt5Agent]:
        return sorted((a for a in self._agents.values() if a.owner == owner), key=lambda a: a.connected_at)

    def wanted_by(self, agent: Mt5Agent) -> list[str]:
        """Terminal symbols the feeds trusting this agent want streamed."""
        wanted: dict[str, None] = {}
        for subscription in self._subscriptions:
            if subscription.accepts(agent):
                wanted.update(dict.fromkeys(subscription.symbols))
        return sorted(wanted)

    # --- feeds ---

    async def subscribe(self, subscription: Subscription) -> None:
        self._subscriptions.append(subscription)
        await self._announce(subscription)

    async def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
        await self._announce(subscription)

    async def _announce(self, subscription: Subscription) -> None:
        """Tell the agents this feed trusts which symbols the platform now wants from them."""
        for agent in list(self._agents.values()):
            if subscription.accepts(agent):
                try:
                    await agent.link.send({"type": "subscribe", "symbols": self.wanted_by(agent)})
                except Exception as exc:  # a dying connection; its receive loop will unregister it
                    _log.info("could not tell an agent its symbols", agent=agent.id, error=repr(exc))

    async def deliver(self, agent: Mt5Agent, ticks: Sequence[TerminalTick]) -> None:
        """Hand an agent's ticks to every feed that trusts it, under the feed's symbol names."""
        agent.ticks += len(ticks)
        for subscription in list(self._subscriptions):
            if not subscription.accepts(agent):
                continue
            converted = [t for t in (tick.as_tick(subscription.symbols[tick.symbol]) for tick in ticks
                                     if tick.symbol in subscription.symbols) if t is not None]
            if converted:
                await subscription.handler(agent, converted)

    # --- orders ---

    async def send_order(self, owner: UUID, agent_id: str | None, order: dict[str, Any],
                         timeout_s: float | None = None) -> dict[str, Any]:
        """Send an order to one of the owner's agents (the given one, else the one connected longest)
        and wait for its `order_result`.

        Raises NotFound when the named agent is not connected, Unavailable when the owner has none,
        and UpstreamTimeout when no answer came in time: the order may still have reached the terminal.
        """
        checked = Mt5Order.parse(order)
        agent = self._agent_for(owner, agent_id)
        request_id = uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        agent.pending[request_id] = future
        agent.orders += 1
        wait_s = self.order_timeout_s if timeout_s is None else timeout_s
        try:
            await agent.link.send({"type": "order", "request_id": request_id, "order": checked.wire()})
            return await asyncio.wait_for(asyncio.shield(future), wait_s)
        except TimeoutError:
            raise UpstreamTimeout(f"MT5 agent {agent.id} did not answer within {wait_s:g} s; the order may "
                                  "still have reached the terminal: check it there before sending again",
                                  agent_id=agent.id, request_id=request_id) from None
        finally:
            agent.pending.pop(request_id, None)

    def resolve(self, agent: Mt5Agent, request_id: Any, result: dict[str, Any]) -> bool:
        future = agent.pending.get(str(request_id)) if request_id is not None else None
        if future is None or future.done():
            return False  # answered after its wait ended: nobody is listening any more
        future.set_result(result)
        return True

    def _agent_for(self, owner: UUID, agent_id: str | None) -> Mt5Agent:
        if agent_id is not None:
            agent = self._agents.get((owner, agent_id))
            if agent is None:
                raise NotFound(f"MT5 agent {agent_id!r} is not connected")
            return agent
        agents = self.agents_of(owner)
        if not agents:
            raise Unavailable("no MT5 agent is connected for this user")
        return agents[0]

    @staticmethod
    def _fail_pending(agent: Mt5Agent, reason: str) -> None:
        for request_id, future in list(agent.pending.items()):
            if not future.done():
                future.set_exception(Unavailable(
                    f"MT5 agent {agent.id}: {reason} before answering; the order may have reached the "
                    "terminal",
                    request_id=request_id))
        agent.pending.clear()
