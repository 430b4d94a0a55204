"""WebSocket ingest: ticks pushed by a real client arrive on NATS as md.ticks, bad ones are counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from aitrading.market.wire import parse_ticks
from aitrading.streams import subject_token
from aitrading.testing import TokenIssuer

T0 = 1_700_000_040_000  # a minute boundary


async def next_json(ws: Any, kind: str, timeout_s: float = 5.0) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            message = orjson.loads(await ws.recv())
            if message["type"] == kind:
                return message

    return await asyncio.wait_for(read(), timeout_s)


def metric(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{check="{label}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_pushed_ticks_arrive_on_nats_as_md_ticks(bridge: Any, listen: Any, token_issuer: TokenIssuer,
                                                        symbol: Callable[..., str]) -> None:
    pair = f"{symbol()}/USDT"
    rows = [[T0 + i, f"{100 + i / 100:.2f}", "0.25", f"{99.9 + i / 100:.2f}", f"{100.1 + i / 100:.2f}"]
            for i in range(50)]
    rows.append([T0 + 60, 100.5, 2, None, None])  # numbers, no quote
    rows.append([T0 + 61, None, None, "100.40", "100.60"])  # quote only: prints at the mid
    async with bridge() as running, listen(f"md.tick.{subject_token(pair)}") as ticks:
        headers = {"Authorization": f"Bearer {token_issuer.service_token('mt5-agent')}"}
        async with connect(running.ws_url + "/ws/ingest", additional_headers=headers) as ws:
            await ws.send(orjson.dumps({"symbol": pair.lower(), "venue": "binance", "ticks": rows}))
            stats = await next_json(ws, "stats")
            assert stats == {"type": "stats", "accepted": 52, "dropped": 0}
            listed = (await running.client.get("/api/v1/feeds")).json()
            mine = [f for f in listed if f["kind"] == "ingest"]
            assert len(mine) == 1 and mine[0]["symbols"] == [pair] and mine[0]["venue"] == "binance"
            assert mine[0]["counters"]["ticks"] == 52
        events = await ticks.wait_for(lambda evs: sum(len(e.data["ticks"]) for e in evs) >= 52)
        batches = [parse_ticks(e) for e in events]
        assert {b.symbol for b in batches} == {pair} and {b.venue for b in batches} == {"binance"}
        got = [t for b in batches for t in b.ticks]
        assert [str(t.price) for t in got[:2]] == ["100.00", "100.01"]
        assert str(got[0].bid) == "99.90" and str(got[0].ask) == "100.10" and str(got[0].size) == "0.25"
        assert (str(got[50].price), str(got[50].size), got[50].bid) == ("100.5", "2", None)
        assert str(got[51].price) == "100.50" and got[51].size == 0
        assert [t.time_ms for t in got] == [r[0] for r in rows]
        await asyncio.sleep(0.1)
        assert [f for f in (await running.client.get("/api/v1/feeds")).json() if f["kind"] == "ingest"] == []


async def test_quality_drops_are_counted_and_reported_per_symbol(
        bridge: Any, listen: Any, token_issuer: TokenIssuer, symbol: Callable[..., str]) -> None:
    name = symbol()
    good = [[T0 + i * 1000, f"{100 + (i % 3) * 0.01:.2f}", "1"] for i in range(30)]
    last = good[-1][0]
    bad = [
        [last - 5000, "100.00", "1"],  # out of order
        [last, good[-1][1], "1"],  # duplicate of the previous tick
        [last + 1000, "100.00", "1", "100.10", "100.05"],  # crossed quote
        [last + 2000, "250.00", "1"],  # spike
        [last + 3000, "-5", "1"],  # non-positive price
        [None, "100", "1"],  # no time
        [last + 4000, "abc", "1"],  # non-numeric price
        "not a row",
        [last + 5000, "100.01", "1"],  # fine
    ]
    async with bridge(quality_flush_s=0.2) as running, listen(f"md.quality.{subject_token(name)}") as found:
        before = (await running.client.get("/metrics")).text
        headers = {"Authorization": f"Bearer {token_issuer.token(roles=('user', 'admin'))}"}
        async with connect(running.ws_url + "/ws/ingest", additional_headers=headers) as ws:
            await ws.send(orjson.dumps({"symbol": name, "ticks": good}))
            await ws.send(orjson.dumps({"symbol": name, "ticks": bad}))
            stats = await next_json(ws, "stats")
            while stats["accepted"] + stats["dropped"] < len(good) + len(bad):
                stats = await next_json(ws, "stats")
            assert stats == {"type": "stats", "accepted": 31, "dropped": 8}
        checks = {"out_of_order": 1, "duplicate": 1, "crossed": 1, "spike": 1, "invalid_price": 2,
                  "invalid_time": 1, "invalid_row": 1}
        events = await found.wait_for(lambda evs: {e.data["check"] for e in evs} >= set(checks))
        reported: dict[str, int] = {}
        for event in events:
            assert event.type == "md.quality" and event.data["symbol"] == name
            reported[event.data["check"]] = reported.get(event.data["check"], 0) + event.data["count"]
        assert reported == checks
        after = (await running.client.get("/metrics")).text
        for check, count in checks.items():
            assert metric(after, "data_bridge_quality_issues_total", check) - \
                metric(before, "data_bridge_quality_issues_total", check) == count


async def test_bad_messages_are_answered_with_an_error_and_the_connection_stays(
        bridge: Any, token_issuer: TokenIssuer, symbol: Callable[..., str]) -> None:
    async with bridge() as running:
        token = token_issuer.token(roles=("admin",))
        async with connect(f"{running.ws_url}/ws/ingest?token={token}") as ws:
            await ws.send("{not json")
            assert (await next_json(ws, "error"))["reason"] == "the message is not JSON"
            await ws.send(orjson.dumps({"symbol": "no spaces allowed", "ticks": []}))
            assert "not a symbol" in (await next_json(ws, "error"))["reason"]
            await ws.send(orjson.dumps({"symbol": symbol(), "ticks": "many"}))
            assert "ticks must be a list" in (await next_json(ws, "error"))["reason"]
            await ws.send(orjson.dumps({"symbol": symbol(), "ticks": [[T0, "1", "1"]]}))
            assert (await next_json(ws, "stats"))["accepted"] == 1


async def test_ingest_needs_an_admin_or_service_token(bridge: Any, token_issuer: TokenIssuer) -> None:
    async with bridge() as running:
        with pytest.raises(InvalidStatus) as anonymous:
            async with connect(running.ws_url + "/ws/ingest"):
                pass
        assert anonymous.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as user:
            async with connect(f"{running.ws_url}/ws/ingest?token={token_issuer.token()}"):
                pass
        assert user.value.response.status_code == 403
        assert b"admin or service" in user.value.response.body
