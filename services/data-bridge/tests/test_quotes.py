"""Live quotes: the latest print per symbol, by real or token-safe name, and across replicas via Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import connect

from aitrading.testing import TokenIssuer

T = 1_700_000_000_000


async def push(running: Any, issuer: TokenIssuer, messages: list[dict[str, Any]]) -> None:
    admin = {"Authorization": f"Bearer {issuer.token(roles=('admin',))}"}
    async with connect(running.ws_url + "/ws/ingest", additional_headers=admin) as ws:
        for message in messages:
            await ws.send(orjson.dumps(message))
        total = sum(len(m["ticks"]) for m in messages)
        while True:
            stats = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if stats["type"] == "stats" and stats["accepted"] + stats["dropped"] >= total:
                return


async def test_latest_quote_per_symbol_by_real_or_token_safe_name(
        bridge: Any, token_issuer: TokenIssuer, symbol: Callable[..., str]) -> None:
    pair, index = f"{symbol()}/USD", symbol()
    async with bridge() as running:
        await push(running, token_issuer, [
            {"symbol": pair, "venue": "kraken",
             "ticks": [[T, "10.5", "1", "10.4", "10.6"], [T + 1, "10.55", "2"]]},
            {"symbol": index, "venue": "desk", "ticks": [[T + 5, "4100.25"]]},
        ])
        client = running.client
        one = await client.get(f"/api/v1/quotes/{pair}")
        assert one.status_code == 200
        assert one.json() == {"symbol": pair, "last": "10.55", "bid": "10.4", "ask": "10.6",
                              "time": "2023-11-14T22:13:20.001000Z", "venue": "kraken",
                              "feed": one.json()["feed"], "synthetic": False}
        assert (await client.get(f"/api/v1/quotes/{pair.replace('/', '-')}")).json() == one.json()
        assert (await client.get(f"/api/v1/quotes/{pair.lower()}")).json() == one.json()
        many = await client.get("/api/v1/quotes", params={"symbols": f"{index},{pair},NOPE-{index}"})
        assert [q["symbol"] for q in many.json()] == [index, pair]
        assert many.json()[0]["bid"] is None and many.json()[0]["last"] == "4100.25"
        missing = await client.get(f"/api/v1/quotes/NOPE-{index}")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem")
        assert (await client.get(f"/api/v1/quotes/{pair}", headers={"Authorization": ""})).status_code == 401


async def test_every_replica_answers_through_redis(
        bridge: Any, redis_url: str, token_issuer: TokenIssuer, symbol: Callable[..., str]) -> None:
    name = symbol()
    async with bridge(redis_url=redis_url) as feeding, bridge(redis_url=redis_url) as other:
        await push(feeding, token_issuer, [{"symbol": name, "venue": "desk", "ticks": [[T, "77.7", "1"]]}])

        async def mirrored() -> dict[str, Any]:
            while True:
                answer = await other.client.get(f"/api/v1/quotes/{name}")
                if answer.status_code == 200:
                    return dict(answer.json())
                await asyncio.sleep(0.05)

        quote = await asyncio.wait_for(mirrored(), 5)
        assert quote["last"] == "77.7" and quote["venue"] == "desk"
        assert [q["symbol"] for q in (await other.client.get("/api/v1/quotes",
                                                              params={"symbols": name})).json()] == [name]
