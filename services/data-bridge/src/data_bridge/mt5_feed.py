"""MT5 feeds: ticks of MetaTrader 5 terminals, streamed by connected MT5 agents, into the pipeline.

A feed names platform symbols and, optionally, the terminal's name for each (`EUR/USD` is `EURUSD` by
default: the symbol without its '/'; brokers' suffixed names such as `EURUSD.m` go in
`terminal_symbols`). It takes ticks only from agents it trusts: those of the users in `owners`, or,
when no owner is named, agents connected by admins, so a user's own terminal cannot write prices
into a platform feed unasked. `agent_ids` narrows that to named agents.

While several trusted agents stream the same symbol, one of them supplies it (the first to deliver
it); when that agent disconnects, the next one to deliver takes over. Two terminals' ticks are never
interleaved into one series.

The registry is per instance: an agent's ticks reach the feeds run by the instance it is connected
to. With several replicas, agents should connect to the one running the feed (the gateway's relay
picks one instance per connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar
from uuid import UUID

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aitrading.errors import Invalid
from aitrading.market.bars import Tick
from data_bridge.feeds import Feed
from data_bridge.mt5_agents import AGENT_ID, Mt5Agent, Subscription

_log = structlog.get_logger("data_bridge.mt5_feed")


class Mt5Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terminal_symbols: dict[str, str] = Field(
        {}, description="platform symbol → the terminal's name for it (default: the symbol without '/')")
    owners: list[UUID] = Field([], description="users whose agents supply it (default: admins' agents)")
    agent_ids: list[str] = Field([], description="only these agents (default: any trusted agent)")

    @field_validator("terminal_symbols")
    @classmethod
    def _canonical_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return {name.strip().upper(): terminal.strip() for name, terminal in value.items()}


class Mt5Feed(Feed):
    kind: ClassVar[str] = "mt5"
    Params: ClassVar[type[BaseModel]] = Mt5Params

    @classmethod
    def venue_for(cls, params: BaseModel) -> str:
        return "mt5"

    @classmethod
    def check(cls, symbols: Sequence[str], params: BaseModel) -> None:
        assert isinstance(params, Mt5Params)
        errors = [{"field": f"params.terminal_symbols.{name}", "reason": "not one of the feed's symbols"}
                  for name in params.terminal_symbols if name not in symbols]
        errors += [{"field": f"params.terminal_symbols.{name}", "reason": "a terminal symbol name is 1-64 "
                                                                          "characters without spaces"}
                   for name, terminal in params.terminal_symbols.items()
                   if not terminal or len(terminal) > 64 or any(c.isspace() for c in terminal)]
        errors += [{"field": f"params.agent_ids.{i}", "reason": "1-64 of A-Z a-z 0-9 . _ -"}
                   for i, agent_id in enumerate(params.agent_ids) if not AGENT_ID.fullmatch(agent_id)]
        terminal_names = [terminal_symbol(s, params) for s in symbols]
        if len(set(terminal_names)) != len(terminal_names):
            errors.append({"field": "params.terminal_symbols",
                           "reason": "two symbols map to one terminal symbol"})
        if errors:
            raise Invalid("; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors)

    async def run(self) -> None:
        agents = self.deps.mt5_agents
        if agents is None:
            raise RuntimeError("this data-bridge has no MT5 agent registry")
        params = self.params
        assert isinstance(params, Mt5Params)
        source: dict[str, tuple[UUID, str]] = {}  # platform symbol → the agent supplying it
        heard: set[tuple[UUID, str]] = set()

        def trusted(agent: Mt5Agent) -> bool:
            if params.owners:
                if agent.owner not in params.owners:
                    return False
            elif not agent.owner_is_admin:
                return False
            return not params.agent_ids or agent.id in params.agent_ids

        def on_connect(agent: Mt5Agent) -> None:
            if agent.key in heard:
                self.context.counters.reconnects += 1  # an agent of this feed came back

        async def handle(agent: Mt5Agent, ticks: list[Tick]) -> None:
            heard.add(agent.key)
            accepted: list[Tick] = []
            for tick in ticks:
                supplier = source.get(tick.symbol)
                if supplier != agent.key:
                    if supplier is not None and agents.connected(supplier):
                        continue  # another terminal supplies this symbol
                    source[tick.symbol] = agent.key
                    _log.info("MT5 symbol supplied by agent", feed=str(self.context.id), symbol=tick.symbol,
                              agent=agent.id)
                accepted.append(tick)
            if accepted:
                await self.sink.ticks(self.context, accepted)

        mapping = {terminal_symbol(s, params): s for s in self.context.symbols}
        subscription = Subscription(self.context.id, mapping, trusted, handle, on_connect)
        await agents.subscribe(subscription)
        try:
            await asyncio.Event().wait()  # ticks arrive through the subscription until the feed stops
        finally:
            await agents.unsubscribe(subscription)


def terminal_symbol(symbol: str, params: Mt5Params) -> str:
    return params.terminal_symbols.get(symbol) or symbol.replace("/", "")
