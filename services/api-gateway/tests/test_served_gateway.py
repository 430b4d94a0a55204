"""The gateway served by uvicorn on a real socket: responses stream through, WebSockets are relayed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from api_gateway.main import create_app
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from aitrading.testing import serve_app

from .conftest import Identity, Upstreams, bearer, gateway_settings


@pytest.fixture(scope="module")
async def gateway_url(upstreams: Upstreams, nats_url: str) -> AsyncIterator[str]:
    async with serve_app(create_app(gateway_settings(upstreams, nats_url))) as url:
        yield url


async def test_response_chunks_reach_the_client_as_the_upstream_sends_them(gateway_url: str,
                                                                          identity: Identity) -> None:
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=gateway_url) as client, client.stream(
            "GET", "/api/v1/orders/stream?chunks=3&gap_s=0.4", headers=bearer(identity.token())) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    assert b"".join(chunk for _, chunk in arrivals) == b"chunk-0\nchunk-1\nchunk-2\n"
    # The first chunk arrived long before the upstream finished (0.8 s): nothing was buffered.
    assert arrivals[0][0] < 0.4
    assert arrivals[-1][0] >= 0.75


async def test_a_client_leaving_mid_stream_stops_the_upstream(gateway_url: str, identity: Identity,
                                                               upstreams: Upstreams) -> None:
    tag = uuid.uuid4().hex
    outcomes = upstreams.echo_app.state.stream_outcomes
    async with httpx.AsyncClient(base_url=gateway_url) as client, client.stream(
            "GET", f"/api/v1/orders/stream?chunks=100&gap_s=0.05&tag={tag}",
            headers=bearer(identity.token())) as response:
        async for _ in response.aiter_raw():
            break  # one chunk, then hang up
    for _ in range(100):
        if outcomes.get(tag) == "stopped":
            break
        await asyncio.sleep(0.05)
    assert outcomes.get(tag) == "stopped"  # the upstream noticed well before its 5 s of chunks


async def test_websocket_is_relayed_both_ways_and_closed_cleanly(gateway_url: str, identity: Identity,
                                                                 upstreams: Upstreams) -> None:
    ws_url = gateway_url.replace("http://", "ws://")
    token = identity.token()
    async with connect(f"{ws_url}/ws/market?symbols=SPX,BTC-USDT&token={token}") as ws:
        hello = json.loads(await ws.recv())
        # The upstream sees the caller's token as a header, not in its query.
        assert hello == {"hello": "SPX,BTC-USDT", "authorized": True, "token_in_query": False}
        await ws.send("ping")
        assert await ws.recv() == "echo:ping"
        await ws.send("bye")  # the upstream closes with 4000: the client sees the same code
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4000 and ws.close_reason == "bye"
    # A client closing first closes the upstream side too.
    market = upstreams.market_app.state.market
    before = market.disconnects
    async with connect(f"{ws_url}/ws/market", additional_headers=bearer(token)) as ws:
        await ws.recv()
        await ws.send("once")
        assert await ws.recv() == "echo:once"
    for _ in range(50):
        if market.disconnects > before:
            break
        await asyncio.sleep(0.05)
    assert market.disconnects == before + 1


async def test_websocket_without_credentials_is_refused(gateway_url: str, identity: Identity) -> None:
    ws_url = gateway_url.replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{ws_url}/ws/market"):
            pass
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as forged:
        async with connect(f"{ws_url}/ws/market?token={identity.token()}x"):
            pass
    assert forged.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as unknown:
        async with connect(f"{ws_url}/ws/unknown?token={identity.token()}"):
            pass
    assert unknown.value.response.status_code == 404
