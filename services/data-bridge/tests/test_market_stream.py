"""/ws/market: live ticks and bars to clients; a client that cannot keep up is cut off, not waited for."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.uri import parse_uri

from aitrading.testing import TokenIssuer

T0 = 1_700_000_040_000  # a minute boundary


def rows(first: int, count: int) -> list[list[Any]]:
    return [[T0 + i * 10, f"{100 + (i % 10) / 100:.2f}", "1", None, None]
            for i in range(first, first + count)]


def slow_clients(running: Any) -> float:
    value = running.app.state.metrics.registry.get_sample_value("data_bridge_market_slow_clients_total")
    return float(value or 0.0)


async def test_a_client_receives_ticks_and_bars_of_its_symbols_only(
        bridge: Any, token_issuer: TokenIssuer, symbol: Callable[..., str]) -> None:
    pair, other = f"{symbol()}/USD", symbol()
    async with bridge() as running:
        token = token_issuer.token()
        url = f"{running.ws_url}/ws/market?symbols={pair.replace('/', '-')},SOMETHING-ELSE&token={token}"
        admin = {"Authorization": f"Bearer {token_issuer.token(roles=('admin',))}"}
        async with connect(url) as client, \
                connect(running.ws_url + "/ws/ingest", additional_headers=admin) as ingest:
            await asyncio.sleep(0.2)  # the fan-out's NATS subscription sees the client from now on
            await ingest.send(orjson.dumps({"symbol": other, "ticks": rows(0, 5)}))
            next_minute = [T0 + 60_000, "100.05", "2", "100", "100.1"]
            message = {"symbol": pair, "venue": "kraken", "ticks": [*rows(0, 3), next_minute]}
            await ingest.send(orjson.dumps(message))
            received = [orjson.loads(await asyncio.wait_for(client.recv(), 5)) for _ in range(5)]
        ticks = [m for m in received if m["type"] == "tick"]
        bars = [m for m in received if m["type"] == "bar"]
        assert [t["price"] for t in ticks] == ["100.00", "100.01", "100.02", "100.05"]
        assert ticks[0] == {"type": "tick", "symbol": pair, "venue": "kraken", "synthetic": False,
                            "time": "2023-11-14T22:14:00Z", "time_ms": T0, "price": "100.00", "size": "1",
                            "bid": None, "ask": None}
        assert ticks[-1]["bid"] == "100" and ticks[-1]["ask"] == "100.1"
        assert len(bars) == 1  # the first tick of the next minute closed the 1m bar
        assert {k: bars[0][k] for k in ("symbol", "timeframe", "time_ms", "open", "high", "low", "close",
                                        "volume")} == {"symbol": pair, "timeframe": "1m", "time_ms": T0,
                                                       "open": "100.00", "high": "100.02", "low": "100.00",
                                                       "close": "100.02", "volume": "3"}


class NeverReading:
    """A WebSocket client that completes the handshake and then reads nothing, on a cramped socket."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url))

    async def __aenter__(self) -> NeverReading:
        host, port = self.url.split("//")[1].split("/")[0].split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=4096)
        self.protocol.send_request(self.protocol.connect())
        self.writer.write(b"".join(self.protocol.data_to_send()))
        while not self.protocol.events_received() and self.protocol.handshake_exc is None:
            self.protocol.receive_data(await self.reader.read(4096))
        assert self.protocol.handshake_exc is None
        return self

    async def close_frame(self) -> Close:
        """Read everything the server sent until its close frame."""
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the connection ended without a close frame"
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    return Close.parse(event.data)

    async def __aexit__(self, *_: object) -> None:
        self.writer.close()


async def test_a_slow_client_is_disconnected_while_a_fast_one_keeps_receiving(
        bridge: Any, token_issuer: TokenIssuer, symbol: Callable[..., str]) -> None:
    name = symbol()
    async with bridge(market_queue_size=2000, tick_batch_max=100) as running:
        url = f"{running.ws_url}/ws/market?symbols={name}&token={token_issuer.token()}"
        admin = {"Authorization": f"Bearer {token_issuer.token(roles=('admin',))}"}
        received: list[dict[str, Any]] = []

        async def read_fast(client: Any) -> None:
            async for message in client:
                received.append(orjson.loads(message))

        async with NeverReading(url) as slow, connect(url) as fast, \
                connect(running.ws_url + "/ws/ingest", additional_headers=admin) as ingest:
            reader = asyncio.create_task(read_fast(fast))
            await asyncio.sleep(0.2)
            sent = 0
            # About 10,000 ticks a second: the fast client keeps up, the slow one's buffers fill.
            while slow_clients(running) == 0:
                assert sent < 100_000, "the slow client was never disconnected"
                await ingest.send(orjson.dumps({"symbol": name, "ticks": rows(sent, 100)}))
                sent += 100
                await asyncio.sleep(0.01)
            for _ in range(10):  # the fast client goes on receiving after the slow one is gone
                await ingest.send(orjson.dumps({"symbol": name, "ticks": rows(sent, 100)}))
                sent += 100
                await asyncio.sleep(0.01)

            async def all_received() -> None:
                while len(received) < sent:
                    assert not reader.done(), "the fast client was disconnected"
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(all_received(), 20)
            assert slow_clients(running) == 1
            times = [t["time_ms"] for t in received if t["type"] == "tick"]
            assert times == [T0 + i * 10 for i in range(sent)]
            reader.cancel()
            close = await slow.close_frame()
            assert (close.code, close.reason) == (1013, "too slow")


async def test_market_needs_a_token_and_symbols(bridge: Any, token_issuer: TokenIssuer) -> None:
    async with bridge() as running:
        with pytest.raises(InvalidStatus) as anonymous:
            async with connect(running.ws_url + "/ws/market?symbols=SPX"):
                pass
        assert anonymous.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as no_symbols:
            async with connect(f"{running.ws_url}/ws/market?token={token_issuer.token()}"):
                pass
        assert no_symbols.value.response.status_code == 422
        assert b'"field":"symbols"' in no_symbols.value.response.body
